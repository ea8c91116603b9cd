"""Load probe: N simulated users upload a page and transcribe it, over and over, for a fixed time,
against the app served as deployed (gunicorn with deploy/gunicorn.conf.py) on loopback.

    .venv/bin/python bench/load_probe.py --users 6 --seconds 120 [--systems 2] [--page static/sample-page.png]
    .venv/bin/python bench/load_probe.py --url http://127.0.0.1:8000 ...   # a server you started yourself

Each user is its own client address (X-Forwarded-For, with the server started behind one proxy
hop, as the nginx example deploys it), so the per-client limits apply per user. One round: upload
the page, start a job on its first --systems boxes, poll the job every 0.5 s until it ends, fetch
its MusicXML, delete it. A user refused with 429 waits as Retry-After says and tries again.

Reports: rounds finished, requests served, latency per route (median and p95; polling and
transcription time are counted apart), job seconds end to end, responses by status (5xx and
connection errors are errors), and the server's resident memory (all its processes: start, peak,
end) sampled every 0.5 s from /proc.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))] if ordered else float("nan")


class Probe:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: collections.Counter = collections.Counter()
        self.job_seconds: list[float] = []
        self.rounds = 0
        self.errors: list[str] = []

    def call(self, route: str, method: str, path: str, client: str, body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, bytes, dict]:
        headers = {"X-Forwarded-For": client}
        if content_type:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data, status, response_headers = response.read(), response.status, dict(response.getheaders())
            connection.close()
        except OSError as error:
            with self.lock:
                self.statuses["connection error"] += 1
                self.errors.append(f"{route}: {error}")
            return 0, b"", {}
        with self.lock:
            self.latency[route].append(time.perf_counter() - started)
            self.statuses[status] += 1
            if status >= 500:
                self.errors.append(f"{route}: {status} {data[:200]!r}")
        return status, data, response_headers

    def user(self, number: int, page: Path, systems: int, stop_at: float) -> None:
        client = f"198.51.100.{number + 1}"
        boundary = "acai-load-probe"
        upload_body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{page.name}\"\r\n"
                       f"Content-Type: image/png\r\n\r\n").encode() + page.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        while time.monotonic() < stop_at:
            status, data, headers = self.call("POST /api/uploads", "POST", "/api/uploads", client, upload_body,
                                              f"multipart/form-data; boundary={boundary}")
            if status != 201:
                time.sleep(float(headers.get("Retry-After", 2)) if status == 429 else 2)
                continue
            uploaded = json.loads(data)
            boxes = [dict(box, page=0) for box in uploaded["pages"][0]["boxes"]][:systems]
            job_body = json.dumps({"upload_id": uploaded["upload_id"], "systems": boxes}).encode()
            started = time.monotonic()
            status, data, headers = self.call("POST /api/jobs", "POST", "/api/jobs", client, job_body,
                                              "application/json")
            if status != 202:
                time.sleep(float(headers.get("Retry-After", 2)) if status in (429, 503) else 2)
                continue
            job_id = json.loads(data)["job_id"]
            snapshot = {}
            while time.monotonic() < stop_at + 300:
                status, data, _ = self.call("GET /api/jobs/<id> (poll)", "GET", f"/api/jobs/{job_id}", client)
                snapshot = json.loads(data) if status == 200 else {}
                if snapshot.get("status") in ("done", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            if snapshot.get("status") != "done":
                with self.lock:
                    self.errors.append(f"job {job_id}: {snapshot.get('status')} {snapshot.get('message', '')}")
                continue
            with self.lock:
                self.job_seconds.append(time.monotonic() - started)
            self.call("GET result.musicxml", "GET", f"/api/jobs/{job_id}/result.musicxml", client)
            self.call("DELETE /api/jobs/<id>", "DELETE", f"/api/jobs/{job_id}", client)
            with self.lock:
                self.rounds += 1


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, from /proc."""
    total, pending = 0, [pid]
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    while pending:
        current = pending.pop()
        try:
            for line in (Path("/proc") / str(current) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        pending.extend(children.get(current, []))
    return total / 1024


def start_gunicorn(work_dir: Path, threads: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, ACAI_BIND=f"127.0.0.1:{port}", ACAI_WEB_WORK_DIR=str(work_dir), ACAI_PROXY_HOPS="1",
               ACAI_THREADS=str(threads), ACAI_LOG_LEVEL="warning", QT_QPA_PLATFORM="offscreen")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy" / "gunicorn.conf.py"),
                                "acai_omr.wsgi:app"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("gunicorn did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--systems", type=int, default=2, help="boxes transcribed per job")
    parser.add_argument("--page", type=Path, default=REPO / "static" / "sample-page.png")
    parser.add_argument("--url", default="", help="probe this server instead of starting gunicorn")
    parser.add_argument("--threads", type=int, default=12, help="gunicorn threads (when the probe starts it)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    process = None
    if args.url:
        parsed = urlparse(args.url)
        host, port = parsed.hostname, parsed.port or 80
    else:
        process, port = start_gunicorn(Path(tempfile.mkdtemp(prefix="acai-load-")), args.threads)
        host = "127.0.0.1"
    probe = Probe(host, port)
    memory: list[float] = []
    sampling = threading.Event()

    def sample():
        while not sampling.wait(0.5):
            memory.append(tree_rss_mib(process.pid))

    if process is not None:
        memory.append(tree_rss_mib(process.pid))
        threading.Thread(target=sample, daemon=True).start()
    stop_at = time.monotonic() + args.seconds
    users = [threading.Thread(target=probe.user, args=(n, args.page, args.systems, stop_at)) for n in range(args.users)]
    started = time.monotonic()
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    elapsed = time.monotonic() - started
    sampling.set()
    if process is not None:
        memory.append(tree_rss_mib(process.pid))
        process.terminate()
        process.wait(30)

    figures = {
        "users": args.users, "seconds": round(elapsed, 1), "systems_per_job": args.systems,
        "rounds": probe.rounds, "requests": sum(len(v) for v in probe.latency.values()),
        "statuses": {str(k): v for k, v in sorted(probe.statuses.items(), key=str)},
        "errors": len(probe.errors),
        "job_seconds": {"median": round(statistics.median(probe.job_seconds), 2) if probe.job_seconds else None,
                        "p95": round(percentile(probe.job_seconds, 0.95), 2) if probe.job_seconds else None},
        "routes": {route: {"n": len(v), "median_s": round(statistics.median(v), 3), "p95_s": round(percentile(v, 0.95), 3)}
                   for route, v in sorted(probe.latency.items())},
    }
    if memory:
        figures["server_rss_mib"] = {"start": round(memory[0]), "peak": round(max(memory)), "end": round(memory[-1])}
    print(json.dumps(figures, indent=2))
    for line in probe.errors[:10]:
        print("error:", line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if probe.errors else 0


if __name__ == "__main__":
    sys.exit(main())
