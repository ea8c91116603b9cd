"""Per-client limits, so one client cannot take all the workers: how often an address may upload
or start a job (Flask-Limiter; counted in Redis when the app has a Redis URL, so every web process
shares the counts) and how many of its jobs may be queued or running at once.

Behind a reverse proxy set WebConfig.proxy_hops (ACAI_PROXY_HOPS, 1 for the nginx example) so the
client address comes from X-Forwarded-For; otherwise every client would share the proxy's address.
"""

from __future__ import annotations

from flask import Flask, jsonify
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from acai_omr.config import WebConfig
from acai_omr.inference.jobs import TERMINAL

RATE_LIMITED_ROUTES = {  # endpoint -> (WebConfig field with its limit, what the user was doing)
    "api.create_upload": ("upload_rate", "uploads"),
    "api.create_job": ("job_rate", "transcriptions started"),
}


client_address = get_remote_address  # the request's client (X-Forwarded-For's behind proxy_hops proxies)


def init_app(app: Flask, cfg: WebConfig) -> Limiter:
    """Attach a limiter of this app's own (counts never leak between apps) to the rate-limited routes."""
    if cfg.proxy_hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg.proxy_hops, x_proto=cfg.proxy_hops)
    limiter = Limiter(client_address, app=app, storage_uri=cfg.redis_url or "memory://", headers_enabled=True,
                      enabled=any(getattr(cfg, field) for field, _ in RATE_LIMITED_ROUTES.values()),
                      swallow_errors=True)  # Redis away: the job routes answer 503 themselves, uploads still work
    for endpoint, (field, what) in RATE_LIMITED_ROUTES.items():
        rate = getattr(cfg, field)
        if rate:
            message = f"Too many {what} from your address: at most {rate}. Please wait a moment and try again."
            view = app.view_functions[endpoint]
            app.view_functions[endpoint] = limiter.limit(rate, error_message=message)(view)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded):
        response = jsonify(error=error.description)
        response.status_code = 429
        return response

    return limiter


def active_jobs_message(runner, client: str, limit: int) -> str | None:
    """Why this client may not start another job now (None: it may), from its jobs' fresh states."""
    if limit <= 0:
        return None
    active = 0
    for job in list(runner.jobs.values()):
        if job.client == client and job.status not in TERMINAL:
            runner.refresh(job)  # in Redis mode a job may have ended since anyone looked
            active += job.status not in TERMINAL
    if active >= limit:
        return (f"You already have {active} transcription{'s' if active > 1 else ''} queued or running; "
                f"wait for one to finish (or cancel it) before starting another.")
    return None
