"""The web app's routes through Flask's test client: uploads (good and bad), jobs, progress, results.

A random-init tiny model (saved with save_weights) stands in for trained weights:
its transcriptions are nonsense, but every stage of the pipeline runs for real.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from acai_omr.detect.synthetic import make_page
from acai_omr.lmx.musicxml import parse_score_string
from web_client import TINY_MAX_TOKENS, boxes_of, make_app, upload, wait_for


# ---------------------------------------------------------------- fixtures (weights_dir, page_png: conftest.py)


@pytest.fixture()
def client(tmp_path, weights_dir):
    app = make_app(tmp_path, weights_dir)
    yield app.test_client()
    app.extensions["acai_omr"].runner.shutdown()


def image_bytes(fmt: str, size=(300, 200), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, fmt, **save)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- page and status


def test_index_page_offers_upload_with_camera_capture(client):
    html = client.get("/").get_data(as_text=True)
    assert 'accept="image/*,.heic,.heif,application/pdf"' in html
    assert "capture=" in html
    assert "app.js" in html
    assert client.get("/static/app.js").status_code == 200


def test_status_reports_loadable_weights(client):
    status = client.get("/api/status").get_json()
    assert status["weights"]["ok"] is True
    assert status["limits"]["max_pdf_pages"] > 0


def test_status_says_how_accurate_the_weights_measured(tmp_path, weights_dir):
    import json
    import shutil

    assert make_app(tmp_path / "a", weights_dir).test_client().get("/api/status").get_json()["weights"][
        "accuracy"] is None  # weights without a measurement say nothing
    measured = tmp_path / "measured"
    shutil.copytree(weights_dir, measured)
    (measured / "accuracy.json").write_text(json.dumps({"systems": 198, "tedn": 55.0, "pitch_exact": 20.0}))
    status = make_app(tmp_path / "b", measured).test_client().get("/api/status").get_json()
    assert status["weights"]["accuracy"]["tedn"] == 55.0


def test_missing_weights_give_a_clear_message_and_jobs_are_refused(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, tmp_path / "no-weights-here")
    client = app.test_client()
    status = client.get("/api/status").get_json()
    assert status["weights"]["ok"] is False
    assert "weights" in status["weights"]["message"].lower()
    uploaded = upload(client, page_png).get_json()  # uploading and box editing still work
    response = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": boxes_of(uploaded)})
    assert response.status_code == 503
    assert "weights" in response.get_json()["error"].lower()


# ---------------------------------------------------------------- uploads


def test_png_upload_returns_pages_with_detected_boxes_and_a_page_image(client, page_png):
    response = upload(client, page_png)
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["upload_id"]) == 32
    page = body["pages"][0]
    assert (page["width"], page["height"]) == Image.open(io.BytesIO(page_png)).size
    assert body["systems_found"] == len(page["boxes"]) >= 1
    for box in page["boxes"]:
        assert 0 <= box["x0"] < box["x1"] <= page["width"] and 0 <= box["y0"] < box["y1"] <= page["height"]
    image = client.get(page["url"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert client.get(f"/api/uploads/{body['upload_id']}").get_json()["pages"][0]["boxes"] == page["boxes"]


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_other_image_formats_are_accepted(client, fmt):
    response = upload(client, image_bytes(fmt), name=f"blank.{fmt.lower()}")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["pages"][0]["width"] == 300


def test_phone_photos_mpo_and_heic_are_accepted_as_one_page(client, tmp_path):
    from test_detect import phone_mpo

    mpo = phone_mpo(tmp_path / "IMG_0001.jpg").read_bytes()
    body = upload(client, mpo, name="IMG_0001.jpg").get_json()
    assert len(body["pages"]) == 1 and (body["pages"][0]["width"], body["pages"][0]["height"]) == (200, 300)
    heic = io.BytesIO()
    Image.new("RGB", (300, 200), (255, 255, 255)).save(heic, "HEIF", quality=80)
    response = upload(client, heic.getvalue(), name="IMG_0002.HEIC")
    assert response.status_code == 201, response.get_json()
    assert len(response.get_json()["pages"]) == 1 and response.get_json()["pages"][0]["width"] == 300


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("F", "TIFF"), ("I", "TIFF"),
                                      ("I;16", "PNG"), ("1", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG")])
def test_uploads_in_any_pillow_mode_are_read_not_a_server_error(client, mode, fmt):
    gray = np.full((200, 300), 255, np.uint8)
    if mode == "F":
        image = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    elif mode == "I":
        image = Image.fromarray(gray.astype(np.int32) * 200, "I")
    else:
        image = Image.fromarray(gray, "L").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    response = upload(client, buffer.getvalue(), name=f"scan-{mode}.{fmt.lower()}")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["pages"][0]["width"] == 300


def test_a_page_selection_is_bounded_and_answered_at_once(client):
    pages = [Image.new("L", (100, 100), 255) for _ in range(3)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    started = time.time()
    for spec, words in (("1-30000000", "beyond any document"), ("1-500", "at most 20")):
        response = upload(client, buffer.getvalue(), name="book.pdf", pages=spec)
        assert response.status_code in (400, 413) and words in response.get_json()["error"], spec
    repeated = upload(client, buffer.getvalue(), name="book.pdf", pages=",".join(["1"] * 200)).get_json()
    assert len(repeated["pages"]) == 1  # a page asked for 200 times is read once
    assert time.time() - started < 10


def test_a_clients_quad_cannot_make_a_huge_crop(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, weights_dir)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    box = dict(boxes_of(uploaded)[0], quad=[[0, 0], [20000, 0], [20000, 20000], [0, 20000]])
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": [box]}).get_json()["job_id"]
    assert wait_for(client, job_id)["status"] == "done"
    crop = Image.open(io.BytesIO(client.get(f"/api/jobs/{job_id}/systems/0/crop.png").data))
    page = uploaded["pages"][0]
    assert crop.width <= page["width"] * 1.5 and crop.height <= page["height"] * 1.5
    app.extensions["acai_omr"].runner.shutdown()


def test_responses_carry_security_headers_and_a_job_needs_its_upload(client):
    for path in ("/", "/api/status", "/static/app.js"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in \
            headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
    response = client.post("/api/jobs", json={"systems": [{"x0": 0, "y0": 0, "x1": 50, "y1": 50}]})
    assert response.status_code == 400 and "upload_id" in response.get_json()["error"]


def test_blank_page_reports_no_systems_and_offers_manual_boxes(client):
    body = upload(client, image_bytes("PNG", (800, 600))).get_json()
    assert body["systems_found"] == 0
    assert any("by hand" in m for m in body["messages"])


def test_a_music_page_whose_staff_lines_were_lost_says_what_to_try(client):
    """A page of music whose staff lines did not survive (here: erased) is no blank page: the notice
    says the lines could not be followed and what scan or photo would do better, besides boxing by hand."""
    gray = np.asarray(make_page(["piano"] * 3, seed=0).image).copy()
    gray[(gray < 128).mean(axis=1) > 0.5] = 255  # every staff line's rows
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "PNG")
    body = upload(client, buffer.getvalue()).get_json()
    assert body["systems_found"] == 0
    assert any("by hand" in m for m in body["messages"])
    assert any("greyscale scan" in m for m in body["messages"])
    blank = upload(client, image_bytes("PNG", (800, 600))).get_json()
    assert not any("greyscale scan" in m for m in blank["messages"])  # a blank page gets no such hint


def test_exif_orientation_is_honoured(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    body = upload(client, image_bytes("JPEG", (300, 200), exif=exif), name="photo.jpg").get_json()
    assert (body["pages"][0]["width"], body["pages"][0]["height"]) == (200, 300)


def test_pdf_pages_become_images_and_can_be_chosen(client):
    pages = [Image.new("L", (400, 500), 255) for _ in range(3)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    pdf = buffer.getvalue()
    assert len(upload(client, pdf, name="score.pdf").get_json()["pages"]) == 3
    chosen = upload(client, pdf, name="score.pdf", pages="2-3").get_json()
    assert len(chosen["pages"]) == 2
    assert [p["number"] for p in chosen["pages"]] == [2, 3]  # the pages keep their own numbers
    bad = upload(client, pdf, name="score.pdf", pages="7")
    assert bad.status_code == 400 and "3 page" in bad.get_json()["error"]


def test_systems_from_two_pages_are_joined_in_the_order_given_with_a_page_break(client, page_png):
    page = Image.open(io.BytesIO(page_png)).convert("L")
    buffer = io.BytesIO()
    page.save(buffer, "TIFF", save_all=True, append_images=[page])  # a two-page TIFF: both pages kept
    uploaded = upload(client, buffer.getvalue(), name="two.tif").get_json()
    assert len(uploaded["pages"]) == 2
    first, second = boxes_of(uploaded, page=1, keep=[0]), boxes_of(uploaded, page=0, keep=[0, 1])
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                             "systems": first + second}).get_json()["job_id"]
    job = wait_for(client, job_id)
    assert [s["page"] for s in job["systems"]] == [1, 0, 0]
    root = parse_score_string(client.get(f"/api/jobs/{job_id}/result.musicxml").data)
    breaks = [("page" if m.find("print[@new-page='yes']") is not None else "system")
              for m in root.findall("part/measure") if m.find("print") is not None]
    assert breaks == ["page", "system"]  # page 2 -> page 1 is a page change, then a new system
    only_first_page = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "pages": [1],
                                                     "systems": first + second}).get_json()
    assert [s["page"] for s in only_first_page["systems"]] == [1]


def test_too_many_pdf_pages_are_refused(tmp_path, weights_dir):
    client = make_app(tmp_path, weights_dir, max_pdf_pages=2).test_client()
    pages = [Image.new("L", (100, 100), 255) for _ in range(3)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:])
    response = upload(client, buffer.getvalue(), name="long.pdf")
    assert response.status_code == 413
    assert "3 pages" in response.get_json()["error"]


def test_a_20000_pixel_image_header_is_refused_before_decoding(client):
    response = upload(client, png_header_only(20_000, 20_000), name="bomb.png")
    assert response.status_code == 413
    message = response.get_json()["error"]
    # the file's name, its size and the one limit that applies, in the user's words (no library internals)
    assert message.startswith("‘bomb.png’ is 20000×20000 pixels (400 megapixels)")
    assert "12,000 pixels a side and 60 megapixels" in message and "bomb" not in message.replace("bomb.png", "")
    response = upload(client, png_header_only(13_000, 100), name="wide.png")
    assert response.status_code == 413
    assert "13000×100" in response.get_json()["error"] and "wide.png" in response.get_json()["error"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_corrupt_images_are_refused_with_a_message(client, page_png, fmt):
    data = page_png if fmt == "PNG" else image_bytes("JPEG", (600, 400))
    response = upload(client, data[: len(data) // 2], name=f"broken.{fmt.lower()}")
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert message.startswith(f"‘broken.{fmt.lower()}’") and "damaged or incomplete" in message
    assert "bytes not processed" not in message and "Error" not in message


def test_type_is_judged_by_content_not_by_name(client):
    fake = upload(client, b"<html>not an image</html>" * 10, name="page.png")
    assert fake.status_code == 415
    assert "PNG, JPEG" in fake.get_json()["error"]
    real = upload(client, image_bytes("PNG"), name="misnamed.pdf")
    assert real.status_code == 201


def test_empty_missing_and_oversized_files_are_refused(tmp_path, weights_dir, client):
    assert upload(client, b"", name="empty.png").status_code == 400
    no_file = client.post("/api/uploads", data={}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "file" in no_file.get_json()["error"]
    small = make_app(tmp_path / "small", weights_dir, max_upload_bytes=10_000).test_client()
    big = upload(small, os.urandom(200_000), name="big.png")
    assert big.status_code == 413
    assert "limit" in big.get_json()["error"] or "too large" in big.get_json()["error"]


# ---------------------------------------------------------------- ids and bad requests


def test_unknown_and_malformed_ids_are_404_json(client):
    unknown = "0" * 32
    for method, url in [("get", f"/api/jobs/{unknown}"), ("get", f"/api/jobs/{unknown}/events"),
                        ("get", f"/api/jobs/{unknown}/result.musicxml"), ("delete", f"/api/jobs/{unknown}"),
                        ("get", f"/api/uploads/{unknown}"), ("get", f"/api/uploads/{unknown}/pages/0.jpg"),
                        ("get", "/api/jobs/..%2F..%2Fetc/result.lmx"), ("get", "/api/jobs/not-an-id"),
                        ("get", "/api/no-such-route")]:
        response = getattr(client, method)(url)
        assert response.status_code == 404, url
        assert "error" in response.get_json(), url
    response = client.post("/api/jobs", json={"upload_id": unknown, "systems": [{"x0": 0}]})
    assert response.status_code == 404
    assert client.put("/api/jobs").status_code == 405


def test_bad_job_requests_get_400_with_a_reason(client, page_png):
    uploaded = upload(client, page_png).get_json()
    uid = uploaded["upload_id"]
    cases = [
        ("not json", None),
        ({"upload_id": uid}, "No systems"),
        ({"upload_id": uid, "systems": [{"page": 5, "x0": 0, "y0": 0, "x1": 100, "y1": 100}]}, "page"),
        ({"upload_id": uid, "systems": [{"page": 0, "x0": "a", "y0": 0, "x1": 100, "y1": 100}]}, "numeric"),
        ({"upload_id": uid, "systems": [{"page": 0, "x0": 10, "y0": 10, "x1": 12, "y1": 12}]}, "too small"),
    ]
    for body, words in cases:
        if body == "not json":
            response = client.post("/api/jobs", data="x", content_type="text/plain")
        else:
            response = client.post("/api/jobs", json=body)
        assert response.status_code == 400, body
        if words:
            assert words in response.get_json()["error"], response.get_json()


# ---------------------------------------------------------------- jobs


def test_job_runs_to_a_musicxml_score_with_every_download(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, weights_dir, render=True)
    client = app.test_client()
    uploaded = upload(client, page_png, name="Liebesleid_scan.png").get_json()
    assert uploaded["title"] == "Liebesleid scan"
    systems = boxes_of(uploaded, keep=[0, 1])
    response = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": systems})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    job = wait_for(client, job_id)
    assert job["status"] == "done", job
    assert [s["state"] for s in job["systems"]] == ["done", "done"]
    assert all(0 < s["confidence"] <= 1 and s["tokens"] > 0 for s in job["systems"])

    score = client.get(f"/api/jobs/{job_id}/result.musicxml")
    root = parse_score_string(score.data)
    assert root.findtext("work/work-title") == "Liebesleid scan"  # titled after the uploaded file
    measures = root.findall("part/measure")
    assert measures and sum(m.find("print[@new-system='yes']") is not None for m in measures) == 1
    mxl = client.get(f"/api/jobs/{job_id}/result.mxl?download=1")
    assert "attachment" in mxl.headers["Content-Disposition"]
    assert 'filename="Liebesleid scan.mxl"' in mxl.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(mxl.data)) as archive:
        assert parse_score_string(archive.read("score.musicxml")).tag == "score-partwise"
    assert client.get(f"/api/jobs/{job_id}/result.lmx").headers["Content-Type"] == "text/plain; charset=utf-8"
    lmx = client.get(f"/api/jobs/{job_id}/result.lmx").get_data(as_text=True)
    assert len(lmx.strip().splitlines()) == 2 and lmx.startswith("measure")
    assert client.get(f"/api/jobs/{job_id}/result.pdf").data.startswith(b"%PDF")
    assert client.get(f"/api/jobs/{job_id}/result.mid").data.startswith(b"MThd")
    assert client.get(f"/api/jobs/{job_id}/result.png").mimetype == "image/png"
    assert client.get(f"/api/jobs/{job_id}/pages/1.png").status_code == 200
    assert client.get(f"/api/jobs/{job_id}/result.exe").status_code == 404
    for index, system in enumerate(systems):
        crop = Image.open(io.BytesIO(client.get(f"/api/jobs/{job_id}/systems/{index}/crop.png").data))
        assert abs(crop.width - (system["x1"] - system["x0"])) <= 2
        assert client.get(f"/api/jobs/{job_id}/systems/{index}/render.png").status_code == 200

    deleted = client.delete(f"/api/jobs/{job_id}")
    assert deleted.get_json()["status"] == "deleted"
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    app.extensions["acai_omr"].runner.shutdown()


def test_progress_streams_as_server_sent_events(client, page_png):
    uploaded = upload(client, page_png).get_json()
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                             "systems": boxes_of(uploaded, keep=[0])}).get_json()["job_id"]
    response = client.get(f"/api/jobs/{job_id}/events")
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    text = response.get_data(as_text=True)  # the stream ends when the job does
    assert "event: progress" in text
    assert text.rstrip().endswith('data: {"status": "done"}')
    assert '"state": "done"' in text


def test_a_progress_stream_ends_after_its_time_and_gives_its_place_back(tmp_path, weights_dir, page_png):
    """Bound: a stream lasts at most stream_seconds (here 1 s) even while the job waits, and the one
    place (max_streams=1) is free again once it has ended."""
    app = make_app(tmp_path, weights_dir, max_streams=1, stream_seconds=1.0)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    runner = app.extensions["acai_omr"].runner
    blocker = threading.Event()
    runner.pool.submit(blocker.wait)  # the one inference thread is busy: the job below stays queued
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                             "systems": boxes_of(uploaded, keep=[0])}).get_json()["job_id"]
    started = time.monotonic()
    first = client.get(f"/api/jobs/{job_id}/events", buffered=False)
    assert client.get(f"/api/jobs/{job_id}/events").status_code == 503  # the only place is taken
    text = first.get_data(as_text=True)
    first.close()
    assert 0.9 < time.monotonic() - started < 5 and '"state": "queued"' in text and "event: end" not in text
    second = client.get(f"/api/jobs/{job_id}/events", buffered=False)
    assert second.status_code == 200
    second.close()
    blocker.set()
    runner.shutdown()


def test_two_concurrent_jobs_do_not_mix_results(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, weights_dir, pool_size=2)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    n = len(uploaded["pages"][0]["boxes"])
    assert n >= 3
    first, second = boxes_of(uploaded, keep=[0]), boxes_of(uploaded, keep=[n - 1, 1])

    def submit(systems):
        return client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": systems}).get_json()["job_id"]

    alone = submit(first)
    assert wait_for(client, alone)["status"] == "done"
    expected_first = client.get(f"/api/jobs/{alone}/result.lmx").get_data(as_text=True)

    a, b = submit(first), submit(second)
    job_a, job_b = wait_for(client, a), wait_for(client, b)
    assert job_a["status"] == job_b["status"] == "done"
    assert [s["box"] for s in job_b["systems"]] == [[s[k] for k in ("x0", "y0", "x1", "y1")] for s in second]
    lmx_a = client.get(f"/api/jobs/{a}/result.lmx").get_data(as_text=True)
    lmx_b = client.get(f"/api/jobs/{b}/result.lmx").get_data(as_text=True)
    assert lmx_a == expected_first  # same input, same output, whatever ran beside it
    assert len(lmx_b.strip().splitlines()) == 2
    crop_heights = [Image.open(io.BytesIO(client.get(f"/api/jobs/{b}/systems/{i}/crop.png").data)).height
                    for i in range(2)]
    assert [abs(h - (s["y1"] - s["y0"])) <= 2 for h, s in zip(crop_heights, second)] == [True, True]
    app.extensions["acai_omr"].runner.shutdown()


def test_cancelling_a_job_stops_it(client, page_png):
    uploaded = upload(client, page_png).get_json()
    systems = boxes_of(uploaded) * 4  # long enough to still be running when cancelled
    running = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": systems}).get_json()["job_id"]
    queued = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": systems[:1]}).get_json()["job_id"]
    assert client.get(f"/api/jobs/{running}/result.musicxml").status_code == 409  # not finished yet
    cancelled_at_once = client.delete(f"/api/jobs/{queued}")  # still waiting behind the first job
    assert cancelled_at_once.status_code == 202 and cancelled_at_once.get_json()["status"] == "cancelled"
    assert client.delete(f"/api/jobs/{running}").status_code in (200, 202)
    job = wait_for(client, running)
    assert job["status"] == "cancelled"
    assert "cancelled" in [s["state"] for s in job["systems"]]
    assert wait_for(client, queued)["status"] == "cancelled"
    finished = sum(s["state"] == "done" for s in job["systems"])
    score = client.get(f"/api/jobs/{running}/result.musicxml")
    assert score.status_code == (200 if finished else 404)  # what was finished is kept (see below)


def test_progress_counts_tokens_while_a_batch_is_still_decoding(tmp_path, weights_dir, page_png):
    """One page's systems decode as one batch; its progress must not sit at 0 tokens until the end."""
    # the untrained test model's notes overrun any real measure at once: without the runaway stop
    # its pieces run to the token cap, long enough to be watched
    app = make_app(tmp_path, weights_dir, max_tokens=120, stop_runaways=False)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                            "systems": boxes_of(uploaded)}).get_json()["job_id"]
    seen = set()
    deadline = time.time() + 60
    while time.time() < deadline:
        snapshot = client.get(f"/api/jobs/{job_id}").get_json()
        seen |= {s["tokens"] for s in snapshot["systems"] if s["state"] == "decoding"}
        if snapshot["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.005)
    assert snapshot["status"] == "done"
    assert any(count > 0 for count in seen), seen
    app.extensions["acai_omr"].runner.shutdown()


def test_a_cancel_stops_a_batch_within_a_few_decoding_steps(tmp_path, weights_dir, page_png):
    """The cancel is checked every 16 decoding steps, not only between batches: one page's systems are
    one batch, which used to run to its end (41.6 s for 60 systems) after DELETE answered."""
    # the runaway stop would end the untrained test model's pieces at once; this needs a long batch
    app = make_app(tmp_path, weights_dir, batch_size=64, max_tokens=127, stop_runaways=False)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                            "systems": (boxes_of(uploaded) * 60)[:60]}).get_json()["job_id"]
    deadline = time.time() + 60
    while not any(s["tokens"] for s in client.get(f"/api/jobs/{job_id}").get_json()["systems"]):
        assert time.time() < deadline
        time.sleep(0.005)
    asked = time.time()
    client.delete(f"/api/jobs/{job_id}")
    job = wait_for(client, job_id)
    assert job["status"] == "cancelled" and time.time() - asked < 2.0
    assert not any(s["state"] == "done" for s in job["systems"])  # stopped inside the one batch
    app.extensions["acai_omr"].runner.shutdown()


def test_cancelling_keeps_the_finished_systems_for_download(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, weights_dir, batch_size=1)  # one system a batch: they finish one by one
    client = app.test_client()
    uploaded = upload(client, page_png, name="Bethena.png").get_json()
    systems = boxes_of(uploaded) * 6
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"], "systems": systems}).get_json()["job_id"]
    deadline = time.time() + 60
    while not any(s["state"] == "done" for s in client.get(f"/api/jobs/{job_id}").get_json()["systems"]):
        assert time.time() < deadline
        time.sleep(0.02)
    client.delete(f"/api/jobs/{job_id}")
    job = wait_for(client, job_id)
    assert job["status"] == "cancelled" and "musicxml" in job["outputs"] and "can be downloaded" in job["message"]
    done = sum(s["state"] == "done" for s in job["systems"])
    assert 1 <= done < len(systems)
    root = parse_score_string(client.get(f"/api/jobs/{job_id}/result.musicxml?download=1").data)
    starts = sum(m.find("print[@new-system='yes']") is not None for m in root.findall("part/measure"))
    assert starts + 1 == done  # exactly the finished systems, joined
    assert root.findtext("work/work-title") == "Bethena"
    app.extensions["acai_omr"].runner.shutdown()


def test_a_cancel_while_rendering_ends_the_job_with_the_score_kept(tmp_path, weights_dir, page_png):
    """Decoding can be over before a cancel arrives (a short page on a fast machine); the cancel still
    ends the job, between MuseScore's calls, and the transcribed score stays downloadable."""
    app = make_app(tmp_path, weights_dir, render=True)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                            "systems": boxes_of(uploaded) * 3}).get_json()["job_id"]
    deadline = time.time() + 120
    while (status := client.get(f"/api/jobs/{job_id}").get_json()["status"]) != "rendering":
        assert status not in ("done", "failed", "cancelled") and time.time() < deadline, status
        time.sleep(0.01)
    client.delete(f"/api/jobs/{job_id}")
    job = wait_for(client, job_id)
    assert job["status"] == "cancelled" and "can be downloaded" in job["message"]
    assert all(s["state"] == "done" for s in job["systems"])
    assert client.get(f"/api/jobs/{job_id}/result.musicxml").status_code == 200
    assert not any(s.get("rendered") for s in job["systems"])  # the systems' pictures were not drawn
    app.extensions["acai_omr"].runner.shutdown()


def test_rendering_failure_still_offers_the_musicxml(tmp_path, weights_dir, page_png, monkeypatch):
    monkeypatch.setenv("ACAI_MSCORE", "/bin/false")
    app = make_app(tmp_path, weights_dir, render=True)
    client = app.test_client()
    uploaded = upload(client, page_png).get_json()
    job_id = client.post("/api/jobs", json={"upload_id": uploaded["upload_id"],
                                             "systems": boxes_of(uploaded, keep=[0])}).get_json()["job_id"]
    job = wait_for(client, job_id)
    assert job["status"] == "done"
    assert "Rendering failed" in job["render_error"] and "MusicXML is still available" in job["render_error"]
    assert client.get(f"/api/jobs/{job_id}/result.musicxml").status_code == 200
    pdf = client.get(f"/api/jobs/{job_id}/result.pdf")
    assert pdf.status_code == 404 and "Rendering failed" in pdf.get_json()["error"]


# ---------------------------------------------------------------- temp files


def test_expired_folders_are_removed_and_another_servers_work_is_kept(tmp_path, weights_dir):
    from acai_omr.web.uploads import remove_expired

    work = tmp_path / "work"
    old, fresh = work / "uploads" / ("a" * 32), work / "jobs" / ("b" * 32)
    other = work / "uploads" / "keep-me"
    for folder in (old, fresh, other):
        folder.mkdir(parents=True)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_expired(work, ttl_seconds=3600) == ["a" * 32]
    assert fresh.exists() and other.exists()

    # a second server on the same work folder (or a restart) keeps what is still fresh: its uploads stay usable
    app = make_app(tmp_path, weights_dir)
    assert fresh.exists() and other.exists()
    os.utime(fresh, (time.time() - 7200, time.time() - 7200))
    app.extensions["acai_omr"]._last_clean = 0  # a minute has passed since the last clean-up
    app.test_client().get("/api/status")  # any request, not only an upload, lets expired folders go
    assert not fresh.exists() and other.exists()


# ---------------------------------------------------------------- per-client limits


def test_one_client_gets_429_with_a_message_past_its_upload_rate_and_others_are_not_held_back(
        tmp_path, weights_dir, page_png):
    """Bound: upload_rate per client address; behind one proxy hop the address is X-Forwarded-For's."""
    client = make_app(tmp_path, weights_dir, upload_rate="2 per minute", proxy_hops=1).test_client()
    me, other = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.9"}

    def send(headers):
        return client.post("/api/uploads", data={"file": (io.BytesIO(page_png), "page.png")}, headers=headers,
                           content_type="multipart/form-data")

    assert [send(me).status_code for _ in range(2)] == [201, 201]
    refused = send(me)
    assert refused.status_code == 429 and refused.headers.get("Retry-After")
    assert "Too many uploads" in refused.get_json()["error"] and "at most 2 per minute" in refused.get_json()["error"]
    assert send(other).status_code == 201


def test_one_client_may_not_have_more_than_max_active_jobs_queued_or_running(tmp_path, weights_dir, page_png):
    app = make_app(tmp_path, weights_dir, max_active_jobs=1)
    client = app.test_client()
    runner = app.extensions["acai_omr"].runner
    blocker = threading.Event()
    runner.pool.submit(blocker.wait)  # the inference thread is busy: the first job stays queued
    uploaded = upload(client, page_png).get_json()
    body = {"upload_id": uploaded["upload_id"], "systems": boxes_of(uploaded, keep=[0])}
    first = client.post("/api/jobs", json=body)
    assert first.status_code == 202
    second = client.post("/api/jobs", json=body)
    assert second.status_code == 429 and "wait for one to finish" in second.get_json()["error"]
    blocker.set()
    assert wait_for(client, first.get_json()["job_id"])["status"] == "done"
    assert client.post("/api/jobs", json=body).status_code == 202  # a finished job no longer counts
    runner.shutdown()


def test_a_restarted_server_still_serves_finished_jobs_and_says_which_were_cut_short(tmp_path, weights_dir,
                                                                                      page_png):
    """Two app instances on one work folder, one after the other: the second is the restart."""
    before = make_app(tmp_path, weights_dir)
    client = before.test_client()
    uploaded = upload(client, page_png).get_json()
    body = {"upload_id": uploaded["upload_id"], "systems": boxes_of(uploaded, keep=[0])}
    finished = client.post("/api/jobs", json=body).get_json()["job_id"]
    assert wait_for(client, finished)["status"] == "done"
    lmx = client.get(f"/api/jobs/{finished}/result.lmx").data
    runner = before.extensions["acai_omr"].runner
    blocker = threading.Event()
    runner.pool.submit(blocker.wait)
    cut_short = client.post("/api/jobs", json=body).get_json()["job_id"]  # queued when the server stops
    runner.shutdown()
    blocker.set()

    after = make_app(tmp_path, weights_dir).test_client()
    job = after.get(f"/api/jobs/{finished}").get_json()
    assert job["status"] == "done" and [s["state"] for s in job["systems"]] == ["done"]
    assert after.get(f"/api/jobs/{finished}/result.lmx").data == lmx
    stopped = after.get(f"/api/jobs/{cut_short}").get_json()
    assert stopped["status"] == "failed" and "restarted" in stopped["message"]
    assert after.get(f"/api/uploads/{uploaded['upload_id']}").status_code == 200  # and the upload to try again
    assert after.delete(f"/api/jobs/{finished}").get_json()["status"] == "deleted"
    assert after.get(f"/api/jobs/{finished}").status_code == 404
