"""The JSON API the page uses: uploads, jobs, progress (SSE or polling), results.

Clients only ever see server-made ids (32 hex digits); every file path is
built here from an id that matched that pattern. Errors are JSON
{"error": message} with a 4xx/5xx status.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request, send_file, stream_with_context, url_for

from acai_omr.detect.systems import LINES_LOST_HINT
from acai_omr.inference.jobs import TERMINAL, Job, SystemProgress, vocabulary
from acai_omr.inference.queue import QueueUnavailable, live_workers
from acai_omr.render.formats import FORMATS, WEB_FORMATS
from acai_omr.web.limits import active_jobs_message, client_address
from acai_omr.web.uploads import ID_PATTERN, UploadError, load_upload, new_id, save_upload

bp = Blueprint("api", __name__, url_prefix="/api")

SSE_HEARTBEAT_SECONDS = 15.0


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def state():
    return current_app.extensions["acai_omr"]


def _valid_id(value: str, what: str) -> str:
    if not re.fullmatch(ID_PATTERN, value or ""):
        raise ApiError(f"No such {what}.", 404)
    return value


def _job(job_id: str) -> Job:
    s = state()
    job_id = _valid_id(job_id, "job")
    job = s.runner.get(job_id) or s.runner.restore(s.work_dir / "jobs" / job_id)
    if job is None:
        raise ApiError("No such job (it may have expired).", 404)
    return job


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    return jsonify(error=error.message), error.status


@bp.errorhandler(UploadError)
def _upload_error(error: UploadError):
    return jsonify(error=error.message), error.status


@bp.errorhandler(QueueUnavailable)
def _queue_unavailable(error: QueueUnavailable):
    return jsonify(error=error.message), 503, {"Retry-After": "30"}


# ---------------------------------------------------------------- status


def _queue_status(s) -> dict:
    """Where jobs run: in this process, or through Redis to workers (with how many are listening)."""
    if not s.cfg.redis_url:
        return {"mode": "in-process", "ok": True}
    runner = s.runner
    if not runner.ping():
        return {"mode": "redis", "ok": False, "message": "Redis does not answer; jobs cannot be queued."}
    return {"mode": "redis", "ok": True, "workers": live_workers(runner.queue)}


@bp.get("/status")
def status():
    """Whether the model can be loaded, and the limits the page should tell the user about."""
    s = state()
    cfg = s.cfg
    return jsonify(
        weights=s.model.status(load=not cfg.redis_url),
        queue=_queue_status(s),
        states=vocabulary(),
        limits={"max_upload_bytes": cfg.max_upload_bytes, "max_pixels": cfg.max_pixels, "max_side": cfg.max_side,
                "max_pdf_pages": cfg.max_pdf_pages, "max_systems": cfg.max_systems},
    )


# ---------------------------------------------------------------- uploads


@bp.post("/uploads")
def create_upload():
    """multipart `file` (and optional `pages`, e.g. "1-3") -> upload id, page images, detected boxes."""
    s = state()
    file = request.files.get("file")
    if file is None:
        raise ApiError("No file was sent (multipart field 'file').", 400)
    upload = save_upload(file, s.work_dir, s.cfg, request.form.get("pages"))
    return jsonify(_upload_json(upload.id, upload.meta)), 201


def _upload_json(upload_id: str, meta: dict) -> dict:
    pages = []
    for page in meta["pages"]:
        pages.append(dict(page, number=page.get("number", page["index"] + 1),
                          url=url_for("api.upload_page", upload_id=upload_id, index=page["index"])))
    found = sum(len(page["boxes"]) for page in pages)
    messages = []
    if found == 0:
        messages.append("No systems were found. Draw boxes around the systems by hand (press n or use “New box”).")
        if any(LINES_LOST_HINT in m for page in pages for m in page.get("messages", [])):
            messages.append(LINES_LOST_HINT[0].upper() + LINES_LOST_HINT[1:] + ".")
    return {"upload_id": upload_id, "title": meta.get("title", ""), "pages": pages, "systems_found": found,
            "messages": messages}


@bp.get("/uploads/<upload_id>")
def get_upload(upload_id: str):
    upload = load_upload(state().work_dir, _valid_id(upload_id, "upload"))
    if upload is None:
        raise ApiError("No such upload (it may have expired).", 404)
    return jsonify(_upload_json(upload.id, upload.meta))


@bp.get("/uploads/<upload_id>/pages/<int:index>.jpg")
def upload_page(upload_id: str, index: int):
    path = state().work_dir / "uploads" / _valid_id(upload_id, "upload") / f"page-{index}.jpg"
    if not path.is_file():
        raise ApiError("No such page.", 404)
    return send_file(path, mimetype="image/jpeg", max_age=3600)


# ---------------------------------------------------------------- jobs


def _parse_systems(body: dict, meta: dict, max_systems: int) -> list[SystemProgress]:
    """The boxes to transcribe, in the order given (the reading order the user chose)."""
    raw = body.get("systems")
    if not isinstance(raw, list) or not raw:
        raise ApiError("No systems to transcribe: send at least one box.", 400)
    if len(raw) > max_systems:
        raise ApiError(f"{len(raw)} boxes sent; at most {max_systems} per job.", 400)
    pages = meta["pages"]
    chosen = body.get("pages")
    if chosen is not None and (not isinstance(chosen, list) or not all(isinstance(p, int) for p in chosen)):
        raise ApiError("'pages' must be a list of page indices.", 400)
    systems = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(f"Box {index + 1} is not an object.", 400)
        page = item.get("page", 0)
        if not isinstance(page, int) or not 0 <= page < len(pages):
            raise ApiError(f"Box {index + 1} refers to page {page!r}, which this upload does not have.", 400)
        if chosen is not None and page not in chosen:
            continue
        try:
            x0, y0, x1, y1 = (float(item[k]) for k in ("x0", "y0", "x1", "y1"))
        except (KeyError, TypeError, ValueError):
            raise ApiError(f"Box {index + 1} needs numeric x0, y0, x1, y1.", 400) from None
        width, height = pages[page]["width"], pages[page]["height"]
        x0, x1 = sorted((max(0.0, min(width, x0)), max(0.0, min(width, x1))))
        y0, y1 = sorted((max(0.0, min(height, y0)), max(0.0, min(height, y1))))
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise ApiError(f"Box {index + 1} is too small or outside the page.", 400)
        quad = item.get("quad")
        if not (isinstance(quad, list) and len(quad) == 4
                and all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                        for p in quad)):
            quad = None
        systems.append(SystemProgress(index=len(systems), page=page, box=(x0, y0, x1, y1), quad=quad))
    if not systems:
        raise ApiError("None of the boxes is on a chosen page.", 400)
    return systems


@bp.post("/jobs")
def create_job():
    """JSON {upload_id, systems: [{page, x0, y0, x1, y1, quad?}], pages?} -> 202 {job_id, status...}."""
    s = state()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError("Send a JSON object with upload_id and systems.", 400)
    if not body.get("upload_id"):
        raise ApiError("Say which upload to transcribe: the JSON needs its upload_id.", 400)
    upload = load_upload(s.work_dir, _valid_id(str(body.get("upload_id", "")), "upload"))
    if upload is None:
        raise ApiError("No such upload (it may have expired); upload the file again.", 404)
    systems = _parse_systems(body, upload.meta, s.cfg.max_systems)
    weights = s.model.status(load=not s.cfg.redis_url)  # with a queue, the workers load the model
    if not weights["ok"]:
        raise ApiError(weights["message"], 503)
    client = client_address()
    refusal = active_jobs_message(s.runner, client, s.cfg.max_active_jobs)
    if refusal:
        raise ApiError(refusal, 429)
    job_id = new_id()
    directory = s.work_dir / "jobs" / job_id
    directory.mkdir(parents=True)
    job = Job(id=job_id, directory=directory, systems=systems, title=upload.meta.get("title", ""), client=client)
    pages = {p: upload.directory / f"page-{p}.png" for p in {system.page for system in systems}}
    try:
        s.runner.submit(job, pages)
    except QueueUnavailable:
        shutil.rmtree(directory, ignore_errors=True)  # the upload stays: the same boxes can be sent again
        raise
    return jsonify(dict(s.runner.snapshot(job), job_id=job_id, links=_links(job))), 202


def _links(job: Job) -> dict:
    return {
        "self": url_for("api.get_job", job_id=job.id),
        "events": url_for("api.job_events", job_id=job.id),
        "results": {f.key: url_for("api.job_result", job_id=job.id, ext=f.key) for f in WEB_FORMATS},
    }


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    job = _job(job_id)
    return jsonify(dict(state().runner.snapshot(job), links=_links(job)))


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    """Server-sent events: one `progress` event per change, then `end` when the job is finished.

    A stream holds a server thread, so at most `max_streams` are open at once (more get 503 and
    the page polls `GET /api/jobs/<id>` instead) and each ends after `stream_seconds`.
    """
    job = _job(job_id)
    s = state()
    runner = s.runner
    if s.streams is None or not s.streams.acquire(blocking=False):
        response = jsonify(error="Too many progress streams are open; follow the job by polling "
                                 f"/api/jobs/{job.id} instead.")
        return response, 503, {"Retry-After": "5"}
    deadline = time.monotonic() + s.cfg.stream_seconds

    def stream():
        seen = -1
        yield "retry: 2000\n\n"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return  # the browser reconnects (or polls); no stream holds a thread for long
            snapshot = runner.wait_change(job, seen, min(SSE_HEARTBEAT_SECONDS, left))
            if snapshot["version"] == seen:
                yield ": keep-alive\n\n"
                continue
            seen = snapshot["version"]
            yield f"event: progress\ndata: {json.dumps(snapshot)}\n\n"
            if snapshot["status"] in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'status': snapshot['status']})}\n\n"
                return

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(stream_with_context(stream()), mimetype="text/event-stream", headers=headers)
    # the server closes the response when the stream ends or its client goes away, started or not
    response.call_on_close(s.streams.release)
    return response


def _job_file(job: Job, name: str) -> Path:
    path = job.directory / name
    if not path.is_file():
        raise ApiError("That file is not available for this job.", 404)
    return path


@bp.get("/jobs/<job_id>/result.<ext>")
def job_result(job_id: str, ext: str):
    job = _job(job_id)
    offered = FORMATS.get(ext)
    if offered is None or not offered.job_file:
        raise ApiError(f"Unknown result type .{ext}; choose one of {', '.join(f.key for f in WEB_FORMATS)}.", 404)
    if ext not in job.outputs:
        if job.status not in TERMINAL:
            raise ApiError("The job is not finished yet.", 409)
        if ext in ("pdf", "mid") and job.render_error:
            raise ApiError(job.render_error, 404)
        raise ApiError(f"This job has no .{ext} result ({job.message or job.status}).", 404)
    download = request.args.get("download") == "1"
    return send_file(_job_file(job, offered.job_file), mimetype=offered.mime, as_attachment=download,
                     download_name=f"{job.title or 'acai-omr-' + job.id[:8]}.{ext}", max_age=0)


@bp.get("/jobs/<job_id>/pages/<int:number>.png")
def job_score_page(job_id: str, number: int):
    """Page `number` (from 1) of the rendered score."""
    job = _job(job_id)
    return send_file(_job_file(job, f"score-{number}.png"), mimetype="image/png", max_age=0)


@bp.get("/jobs/<job_id>/systems/<int:index>/<any(crop, render):what>.png")
def job_system_image(job_id: str, index: int, what: str):
    """A system's input crop (what the model saw, before resizing) or its own rendering."""
    job = _job(job_id)
    return send_file(_job_file(job, f"{what}-{index}.png"), mimetype="image/png", max_age=0)


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str):
    """Cancel a running job, or delete a finished one and its files."""
    s = state()
    job = _job(job_id)
    if job.status in TERMINAL:
        s.runner.forget(job.id)
        return jsonify(id=job.id, status="deleted")
    s.runner.cancel(job)
    deadline = time.time() + 2.0  # a queued job stops at once; a running one after its current system
    while job.status not in TERMINAL and time.time() < deadline:
        time.sleep(0.05)
        s.runner.refresh(job)
    return jsonify(id=job.id, status=job.status if job.status in TERMINAL else "cancelling"), 202
