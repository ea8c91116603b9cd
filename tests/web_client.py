"""Helpers for tests that drive the web app through Flask's test client (the fixtures they use,
`weights_dir` and `page_png`, are in conftest.py)."""

from __future__ import annotations

import dataclasses
import io
import time

from acai_omr import create_app
from acai_omr.config import DecodeConfig

DECODE_FIELDS = {f.name for f in dataclasses.fields(DecodeConfig)}

TINY_MAX_TOKENS = 40


def make_app(tmp_path, weights_dir, **web):
    """The app on the tiny model; `web` overrides WebConfig fields, or DecodeConfig's (max_tokens=...)."""
    decode = {"max_tokens": TINY_MAX_TOKENS}
    decode.update({name: web.pop(name) for name in list(web) if name in DECODE_FIELDS})
    settings = dict(work_dir=str(tmp_path / "work"), weights_dir=str(weights_dir), decode=decode, render=False,
                    torch_threads=1)
    settings.update(web)
    return create_app({"TESTING": True, "WEB": settings})


def upload(client, data: bytes, name: str = "page.png", **form):
    return client.post("/api/uploads", data={"file": (io.BytesIO(data), name), **form},
                       content_type="multipart/form-data")


def boxes_of(upload_json, page=0, keep=None):
    boxes = upload_json["pages"][page]["boxes"]
    if keep is not None:
        boxes = [boxes[i] for i in keep]
    return [dict(page=page, **{k: b[k] for k in ("x0", "y0", "x1", "y1", "quad")}) for b in boxes]


def wait_for(client, job_id, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        snapshot = client.get(f"/api/jobs/{job_id}").get_json()
        if snapshot["status"] in ("done", "failed", "cancelled"):
            return snapshot
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {snapshot}")
