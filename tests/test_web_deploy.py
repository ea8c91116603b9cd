"""The app as deployed: gunicorn with deploy/gunicorn.conf.py in its own process, on loopback.

These pin bounds that only show with real server processes: how many threads progress streams
may hold, and that the rest of the site keeps answering while they are open.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acai_omr.paths import REPO_ROOT

SAMPLE_PAGE = REPO_ROOT / "static" / "sample-page.png"
SHIPPED_WEIGHTS = REPO_ROOT / "weights"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30.0):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read(), connection


def upload(port: int, path: Path) -> dict:
    boundary = "acai-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, data, _ = request(port, "POST", "/api/uploads", body,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=120)
    assert status == 201, data
    return json.loads(data)


def create_job(port: int, upload_json: dict, count: int) -> str:
    boxes = [dict(box, page=0) for box in upload_json["pages"][0]["boxes"]]
    systems = [dict(boxes[i % len(boxes)]) for i in range(count)]
    body = json.dumps({"upload_id": upload_json["upload_id"], "systems": systems}).encode()
    status, data, _ = request(port, "POST", "/api/jobs", body, {"Content-Type": "application/json"})
    assert status == 202, data
    return json.loads(data)["job_id"]


@pytest.fixture()
def gunicorn_server(tmp_path):
    """gunicorn -c deploy/gunicorn.conf.py acai_omr.wsgi:app with the shipped weights (slow enough to keep
    a job running while we watch)."""
    if not (SHIPPED_WEIGHTS / "model.safetensors").exists():
        pytest.skip("no shipped weights in weights/")
    port = free_port()
    env = dict(os.environ, ACAI_BIND=f"127.0.0.1:{port}", ACAI_WEB_WORK_DIR=str(tmp_path / "work"),
               ACAI_WEIGHTS_DIR=str(SHIPPED_WEIGHTS), ACAI_LOG_LEVEL="warning")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "deploy" / "gunicorn.conf.py"),
                                "acai_omr.wsgi:app"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gunicorn.log", "wb"))
    deadline = time.monotonic() + 60
    while True:
        try:
            if request(port, "GET", "/healthz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
        time.sleep(0.3)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_open_progress_streams_never_take_the_threads_the_rest_of_the_site_needs(gunicorn_server):
    """Bound: with 12 browsers watching a job, at most 4 streams are held (the rest get 503 with a message
    at once and poll), and /healthz and the job's snapshot still answer within 2 s (before: 27.9 s)."""
    port = gunicorn_server
    page = upload(port, SAMPLE_PAGE)
    running = create_job(port, page, 60)  # keeps the one inference thread busy ...
    behind = create_job(port, page, 60)  # ... and so does this one after it (a job of the shipped
    # weights finishes in seconds now that no piece loops to the token cap) ...
    waiting = create_job(port, page, 1)  # ... so this one stays queued and its streams stay open
    streams, refused = [], []
    for _ in range(12):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/api/jobs/{waiting}/events")
        response = connection.getresponse()
        if response.status == 200:
            assert response.readline() == b"retry: 2000\n"
            streams.append(connection)
        else:
            assert response.status == 503
            assert "poll" in json.loads(response.read())["error"]
            refused.append(connection)
    assert len(streams) == 4 and len(refused) == 8
    for path in ("/healthz", f"/api/jobs/{waiting}", "/api/status"):
        started = time.monotonic()
        status, _, _ = request(port, "GET", path, timeout=10)
        assert status == 200 and time.monotonic() - started < 2.0, path
    # a stream whose client goes away gives its place back
    for connection in streams:
        connection.close()
    deadline = time.monotonic() + 30  # the server notices at its next keep-alive or progress write
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/api/jobs/{behind}/events")
        if connection.getresponse().status == 200:
            connection.close()
            break
        connection.close()
        assert time.monotonic() < deadline, "closed streams were never released"
        time.sleep(1)
    assert request(port, "DELETE", f"/api/jobs/{waiting}")[0] == 202  # still unfinished
    for job in (behind, running):  # cleanup: one may have finished meanwhile
        assert request(port, "DELETE", f"/api/jobs/{job}")[0] in (200, 202)
