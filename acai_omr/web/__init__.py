"""The Flask web app (app factory + blueprints): photo/scan/PDF of a page -> MusicXML in the browser.

Settings come from `acai_omr.config.WebConfig`, overridden by environment
variables (ACAI_WEIGHTS_DIR, ACAI_WEB_WORK_DIR) and then by the app config
passed to `create_app` (key "WEB": a WebConfig or a dict of its fields).
Jobs live in this process (an in-process queue and thread pool), so run one
gunicorn worker process with several threads (deploy/gunicorn.conf.py).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path

from flask import Flask, jsonify, request

from acai_omr.config import DecodeConfig, WebConfig
from acai_omr.paths import REPO_ROOT
from acai_omr.web import limits


def resolve_web_config(overrides: WebConfig | dict | None = None) -> WebConfig:
    """Defaults <- environment <- explicit overrides."""
    cfg = WebConfig()
    if os.environ.get("ACAI_WEIGHTS_DIR"):
        cfg.weights_dir = os.environ["ACAI_WEIGHTS_DIR"]
    if os.environ.get("ACAI_WEB_WORK_DIR"):
        cfg.work_dir = os.environ["ACAI_WEB_WORK_DIR"]
    if os.environ.get("ACAI_REDIS_URL"):
        cfg.redis_url = os.environ["ACAI_REDIS_URL"]
    if os.environ.get("ACAI_MAX_STREAMS"):
        cfg.max_streams = int(os.environ["ACAI_MAX_STREAMS"])
    if os.environ.get("ACAI_PROXY_HOPS"):
        cfg.proxy_hops = int(os.environ["ACAI_PROXY_HOPS"])
    if isinstance(overrides, WebConfig):
        cfg = dataclasses.replace(overrides)
    elif overrides:
        overrides = dict(overrides)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(WebConfig)})
        if unknown:
            raise ValueError(f"unknown WebConfig field(s): {', '.join(unknown)}")
        if isinstance(overrides.get("decode"), dict):
            overrides["decode"] = DecodeConfig(**overrides["decode"])
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg


class AppState:
    """What the handlers share: settings, work folder, the model holder and the job runner.

    A Flask extension: `AppState(cfg).init_app(app)` attaches it (`app.extensions["acai_omr"]`) and
    its housekeeping (expired work cleaned before requests, at most once a minute).
    """

    def __init__(self, cfg: WebConfig):
        from acai_omr.inference.pipeline import LocalJobRunner, ModelHolder, PipelineSettings
        from acai_omr.web.uploads import remove_expired

        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir or Path(tempfile.gettempdir()) / "acai-omr-web")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # only what has expired: another server may share this folder, and a restart keeps fresh uploads
        remove_expired(self.work_dir, ttl_seconds=cfg.ttl_seconds)
        self.model = ModelHolder(cfg.weights_dir or None, cfg.device, cfg.torch_threads, cfg.int8, cfg.compile)
        settings = PipelineSettings(render=cfg.render, render_timeout=cfg.render_timeout, decode=cfg.decode)
        if cfg.redis_url:
            from acai_omr.inference.queue import QueueJobRunner

            self.runner = QueueJobRunner(cfg.redis_url, settings, cfg.queue_name, cfg.job_timeout, cfg.job_retries,
                                         result_ttl=cfg.ttl_seconds)
        else:
            self.runner = LocalJobRunner(self.model, settings, cfg.pool_size)
        self._last_clean = time.time()
        self._clean_lock = threading.Lock()
        # progress streams hold a server thread each: a bounded share, so uploads and /healthz always get one
        self.streams = threading.BoundedSemaphore(cfg.max_streams) if cfg.max_streams > 0 else None

    def init_app(self, app: Flask) -> AppState:
        app.extensions["acai_omr"] = self
        app.before_request(self.maybe_clean)
        return self

    def maybe_clean(self) -> None:
        """Remove expired uploads and jobs, at most once a minute (called before every request)."""
        from acai_omr.web.uploads import remove_expired

        now = time.time()
        with self._clean_lock:
            if now - self._last_clean < 60:
                return
            self._last_clean = now
        for job_id in remove_expired(self.work_dir, self.cfg.ttl_seconds, now):
            self.runner.jobs.pop(job_id, None)


MIB = 1024 * 1024
SECURITY_HEADERS = {
    # scripts and everything they fetch come from this site; styles may be set inline by the box editor
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
                                "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(config: dict | None = None) -> Flask:
    """Build the app; `config` overrides Flask settings (tests pass TESTING=True and WEB={...})."""
    app = Flask(
        __name__,
        template_folder=str(REPO_ROOT / "templates"),
        static_folder=str(REPO_ROOT / "static"),
    )
    config = dict(config or {})
    web_cfg = resolve_web_config(config.pop("WEB", None))
    app.config.update(config)
    # the request body limit is a little over the file limit so the multipart envelope fits
    app.config["MAX_CONTENT_LENGTH"] = web_cfg.max_upload_bytes + 64 * 1024
    AppState(web_cfg).init_app(app)

    from acai_omr.web.api import bp as api_bp
    from acai_omr.web.pages import bp as pages_bp

    app.register_blueprint(pages_bp)
    app.register_blueprint(api_bp)
    limits.init_app(app, web_cfg)

    @app.after_request
    def _security_headers(response):
        """Safe by default when served publicly: only our own scripts, no framing, no type sniffing."""
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    @app.errorhandler(413)
    def _too_large(error):
        message = f"The file is too large; the limit is {web_cfg.max_upload_bytes / MIB:.0f} MiB."
        return jsonify(error=message), 413

    @app.errorhandler(404)
    def _not_found(error):
        if request.path.startswith("/api/"):
            return jsonify(error="No such API route."), 404
        return error

    @app.errorhandler(405)
    def _wrong_method(error):
        if request.path.startswith("/api/"):
            return jsonify(error=f"{request.method} is not allowed here."), 405
        return error

    @app.errorhandler(500)
    def _server_error(error):
        if request.path.startswith("/api/"):
            return jsonify(error="Internal server error; the details are in the server log."), 500
        return error

    return app
