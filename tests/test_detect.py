"""System detection on synthetic pages, and the page loader's refusals."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from acai_omr.cli import main as cli_main
from acai_omr.config import DetectConfig
from acai_omr.detect import PageInputError, SystemBox, crop_system, detect_systems, load_page_images, parse_pages
from acai_omr.detect.synthetic import make_page, make_text_page


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def boxes_of(result):
    return [(b.x0, b.y0, b.x1, b.y1) for b in result.boxes]


@pytest.mark.parametrize("n_systems,angle,noise", [
    (1, 0.0, False), (2, 3.0, True), (3, -3.0, False), (4, 1.5, True), (6, -2.0, True), (8, 0.0, True),
    (10, 3.0, False),
])
def test_finds_every_piano_system_in_reading_order(n_systems, angle, noise):
    page = make_page(["piano"] * n_systems, seed=n_systems, angle=angle, noise=noise)
    result = detect_systems(page.image)
    assert len(result.boxes) == n_systems, result.messages
    for truth, box in zip(page.boxes, result.boxes):  # same order: reading order = top to bottom
        assert iou(truth, (box.x0, box.y0, box.x1, box.y1)) >= 0.5
        assert box.kind == "piano"
        assert [s.role for s in box.staves] == ["piano-upper", "piano-lower"]
        assert 0.5 <= box.confidence <= 1.0
    assert result.skew_angle == pytest.approx(-angle, abs=0.3)


def test_boxes_contain_notes_above_and_below_the_staves():
    page = make_page(["piano"] * 5, seed=11)
    result = detect_systems(page.image)
    tol = 2
    for truth, box in zip(page.boxes, result.boxes):
        assert box.x0 <= truth[0] + tol and box.y0 <= truth[1] + tol
        assert box.x1 >= truth[2] - tol and box.y1 >= truth[3] - tol
        # neighbouring boxes meet but do not overlap
    for upper, lower in zip(result.boxes, result.boxes[1:]):
        assert upper.y1 <= lower.y0 + 1


def test_single_staves_and_voice_plus_piano_are_told_apart():
    page = make_page(["single", "piano", "voice+piano", "single"], seed=5, noise=True)
    result = detect_systems(page.image)
    assert [b.kind for b in result.boxes] == ["single", "piano", "voice+piano", "single"]
    voice_piano = result.boxes[2]
    assert [s.role for s in voice_piano.staves] == ["voice", "piano-upper", "piano-lower"]
    for truth, box in zip(page.boxes, result.boxes):
        assert iou(truth, (box.x0, box.y0, box.x1, box.y1)) >= 0.5


@pytest.mark.parametrize("seed,angle,noise", [(3, 0.0, False), (4, 1.5, True), (6, -2.0, True)])
def test_voice_plus_piano_is_boxed_as_its_piano_staves(seed, angle, noise):
    # songs: a voice staff with lyrics over the piano; the model reads the piano pair, so the box (and
    # the crop) holds the piano's two staves and their notes, not the voice staff or its lyrics
    page = make_page(["voice+piano"] * 3, seed=seed, angle=angle, noise=noise)
    result = detect_systems(page.image)
    assert [b.kind for b in result.boxes] == ["voice+piano"] * 3, result.messages
    assert any("left out" in m for m in result.messages)
    tol = 2
    for truth, box in zip(page.boxes, result.boxes):  # truth: the piano pair's own ink
        assert [s.role for s in box.staves] == ["voice", "piano-upper", "piano-lower"]
        voice, upper, lower = box.staves
        assert box.x0 <= truth[0] + tol and box.y0 <= truth[1] + tol
        assert box.x1 >= truth[2] - tol and box.y1 >= truth[3] - tol
        assert box.y0 <= upper.y0 and box.y1 >= lower.y1
        if not angle:  # nothing of the voice: its staff ends far above the box, its lyrics (~2 spaces under it) too
            assert box.y0 >= voice.y1 + 3 * page.space
        # the crop: one piano system (4 + 6.5 + 4 spaces of staves, notes a few spaces out), no voice staff
        crop = crop_system(page.image, box)
        assert crop.height < (14.5 + 8) * page.space
        again = detect_systems(crop)
        assert [b.kind for b in again.boxes] == ["piano"], again.messages


def test_numpy_rgb_input_is_accepted():
    page = make_page(["piano"] * 3, seed=2)
    rgb = np.stack([np.asarray(page.image)] * 3, axis=2)
    assert len(detect_systems(rgb).boxes) == 3


def test_crop_is_upright_and_holds_the_system():
    page = make_page(["piano"] * 3, seed=7, angle=2.5, noise=True)
    result = detect_systems(page.image)
    crop = crop_system(page.image, result.boxes[1])
    assert crop.mode == "L"
    assert crop.width > crop.height > 0
    again = detect_systems(crop)  # the crop, detected on its own: one level piano system
    assert len(again.boxes) == 1 and again.boxes[0].kind == "piano"
    assert abs(again.skew_angle) <= 0.2


def test_blank_page_has_no_systems_and_says_so():
    blank = Image.new("L", (1240, 1754), 250)
    result = detect_systems(blank)
    assert result.boxes == []
    assert any("blank" in m or "no" in m for m in result.messages)
    noisy = np.clip(np.random.default_rng(0).normal(235, 10, (1754, 1240)), 0, 255).astype(np.uint8)
    assert detect_systems(noisy).boxes == []


def test_page_of_text_has_no_systems():
    result = detect_systems(make_text_page(seed=1))
    assert result.boxes == []
    assert result.messages and "no" in result.messages[0]


def test_tiny_image_is_reported_not_crashed():
    result = detect_systems(Image.new("L", (10, 10), 255))
    assert result.boxes == [] and "too small" in result.messages[0]


# ---------------------------------------------------------------- loading pages


def _write_huge_png(path: Path, side: int = 20_000) -> None:
    """A valid, all-white 1-bit PNG of side x side pixels that is only a few kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    _write_huge_png(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(PageInputError, match="20000x20000"):
        load_page_images(path)


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    bad_pdf = tmp_path / "broken.pdf"
    bad_pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage garbage\n")
    with pytest.raises(PageInputError, match="not a readable PDF"):
        load_page_images(bad_pdf)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    with pytest.raises(PageInputError, match="not a readable image"):
        load_page_images(not_image)
    with pytest.raises(PageInputError, match="no such file"):
        load_page_images(tmp_path / "missing.png")
    truncated = tmp_path / "cut.png"
    make_page(["piano"], seed=1).image.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(PageInputError, match="corrupt or truncated"):
        load_page_images(truncated)


def _two_page_pdf(path: Path) -> None:
    first = make_page(["piano"] * 3, seed=1).image
    second = make_page(["voice+piano"] * 2, seed=2).image
    first.save(path, save_all=True, append_images=[second], resolution=150)


def test_pdf_pages_are_rasterized_and_selectable(tmp_path):
    pdf = tmp_path / "two.pdf"
    _two_page_pdf(pdf)
    pages = load_page_images(pdf, dpi=150)
    assert len(pages) == 2 and abs(pages[0].width - 1240) <= 1 and abs(pages[0].height - 1754) <= 1
    only_second = load_page_images(pdf, pages="2", dpi=150)
    assert len(only_second) == 1
    assert [b.kind for b in detect_systems(only_second[0]).boxes] == ["voice+piano"] * 2
    with pytest.raises(PageInputError, match="has 2 page"):
        load_page_images(pdf, pages=[3])
    small_limit = DetectConfig(max_pdf_pages=1)
    with pytest.raises(PageInputError, match="over the limit of 1"):
        load_page_images(pdf, cfg=small_limit)
    assert len(load_page_images(pdf, pages=[1], cfg=small_limit, dpi=100)) == 1
    with pytest.raises(PageInputError, match="lower dpi"):
        load_page_images(pdf, pages=[1], dpi=150, cfg=DetectConfig(max_pixels=1_000_000))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("L", (300, 200), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    (page,) = load_page_images(path)
    assert page.size == (200, 300)


def phone_mpo(path, size=(300, 200), orientation=6):
    """An iPhone-style MPO: the photo (with its EXIF orientation), then a smaller second picture."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, (255, 255, 255)).save(path, "MPO", save_all=True, exif=exif,
                                                  append_images=[Image.new("RGB", (160, 120), (0, 0, 0))])
    return path


def test_a_phones_mpo_is_one_page_its_first_picture_upright(tmp_path):
    path = phone_mpo(tmp_path / "IMG_0001.jpg")
    assert Image.open(path).format == "MPO" and Image.open(path).n_frames == 2
    (page,) = load_page_images(path)
    assert page.size == (200, 300)  # the photo, turned as the phone says; not the preview after it
    assert page.convert("L").getextrema() == (255, 255)


def test_heic_photos_are_read(tmp_path):
    path = tmp_path / "IMG_0002.heic"
    Image.new("RGB", (300, 200), (255, 255, 255)).save(path, "HEIF", quality=80)
    (page,) = load_page_images(path)
    assert page.size == (300, 200)


def test_parse_pages():
    assert parse_pages("1-3,5") == [1, 2, 3, 5]
    assert parse_pages(None) is None and parse_pages(" ") is None
    for bad in ("0", "3-1", "a", "1-"):
        with pytest.raises(PageInputError):
            parse_pages(bad)


def test_page_selections_are_bounded_before_anything_is_allocated():
    import time

    assert parse_pages("2,1,1,2,3", limit=3) == [2, 1, 3]  # each page once, in the order given
    started = time.perf_counter()
    with pytest.raises(PageInputError, match="beyond any document"):
        parse_pages("1-30000000")  # would have built a 30-million-entry list
    with pytest.raises(PageInputError, match="at most 20"):
        parse_pages("1-500", limit=20)
    with pytest.raises(PageInputError, match="at most 20"):
        parse_pages(",".join(str(p) for p in range(1, 30)), limit=20)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("mode", ["CMYK", "I", "F", "I;16", "LA", "P", "1", "YCbCr"])
def test_every_pillow_mode_becomes_an_8_bit_page(tmp_path, mode):
    """CMYK JPEGs and TIFFs, 16- and 32-bit and float greys: read, converted once on load, never a 500."""
    import numpy as np

    gray = np.full((60, 80), 255, np.uint8)
    gray[20:40, 10:70] = 0  # a black band on white paper
    base = Image.fromarray(gray, "L")
    image = {"I": lambda: Image.fromarray(gray.astype(np.int32) * 100, "I"),  # 32-bit ints up to 25500
             "F": lambda: Image.fromarray(gray.astype(np.float32) / 255.0, "F"),  # floats in 0..1
             "I;16": lambda: base.convert("I").point(lambda v: v * 257).convert("I;16")}.get(
        mode, lambda: base.convert(mode))()
    path = tmp_path / ("page.jpg" if mode in ("CMYK", "YCbCr") else "page.png" if mode in ("LA", "P", "1", "I;16")
                       else "page.tif")
    image.save(path)
    (page,) = load_page_images(path)
    assert page.mode in ("L", "LA", "P", "1", "RGB", "RGBA")
    values = np.asarray(page.convert("L"))
    assert values[30, 40] < 60 and values[5, 5] > 200  # ink stays ink, paper stays paper


def test_a_quad_off_the_page_is_clipped_to_it():
    """A client's quad 20000 px wide on a 300-px page made a 20000 x 20000 warp; now it stays page-sized."""
    page = Image.new("L", (300, 200), 255)
    box = SystemBox(0, 0, 300, 200, 1.0, quad=[[0, 0], [20000, 0], [20000, 20000], [0, 20000]])
    crop = crop_system(page, box)
    assert crop.size[0] <= 300 and crop.size[1] <= 300


# ---------------------------------------------------------------- command line


def test_cli_writes_boxes_and_overlay(tmp_path, capsys):
    pdf = tmp_path / "two.pdf"
    _two_page_pdf(pdf)
    out, overlay = tmp_path / "boxes.json", tmp_path / "overlay.png"
    assert cli_main(["detect", str(pdf), "--pages", "1-2", "--dpi", "150", "-o", str(out),
                     "--draw", str(overlay)]) == 0
    report = json.loads(out.read_text())
    assert [p["page"] for p in report["pages"]] == [1, 2]
    assert [len(p["systems"]) for p in report["pages"]] == [3, 2]
    first = report["pages"][0]["systems"][0]
    assert {"x0", "y0", "x1", "y1", "confidence", "staves", "kind", "quad"} <= set(first)
    assert (tmp_path / "overlay_p1.png").exists() and (tmp_path / "overlay_p2.png").exists()


def test_cli_reports_bad_input_with_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7 broken")
    assert cli_main(["detect", str(bad)]) == 2
    assert "not a readable PDF" in capsys.readouterr().err


def test_boxes_take_text_past_the_staff_end_and_a_dynamic_below_the_last_system():
    import cv2

    page = make_page(["piano", "piano"], seed=5, title=False)
    gray = np.asarray(page.image).copy()
    sp = page.space
    first, last = page.boxes
    # an expression mark above the first system whose words run on past the staves' right end
    text_x, text_y = int(first[2] - 6 * sp), int(first[1] - 0.6 * sp)
    cv2.putText(gray, "molto espressivo", (text_x, text_y), cv2.FONT_HERSHEY_SIMPLEX, sp / 22, 0, 2)
    # a dynamic well below the last system's lowest ink
    dyn_y = int(last[3] + 2.6 * sp)
    cv2.putText(gray, "pp", (int(last[0] + 10 * sp), dyn_y), cv2.FONT_HERSHEY_SIMPLEX, sp / 18, 0, 2)
    drawn = np.asarray(page.image) != gray
    result = detect_systems(Image.fromarray(gray))
    assert len(result.boxes) == 2
    for box, part in zip(result.boxes, (slice(0, (first[3] + last[1]) // 2), slice((first[3] + last[1]) // 2, None))):
        ys, xs = np.nonzero(drawn[part])
        ys = ys + (part.start or 0)
        assert box.x1 >= xs.max() and box.y0 <= ys.min() and box.y1 >= ys.max(), (box, xs.max(), ys.min(), ys.max())


@pytest.mark.parametrize("slur", [False, True])
def test_the_arrangers_line_above_the_first_system_stays_out_of_its_box_but_the_tempo_mark_is_in(slur):
    page = make_page(["piano", "piano"], seed=5, title=False)
    sp = page.space
    room = int(8 * sp)  # white paper added above the first system for a heading
    gray = np.pad(np.asarray(page.image), ((room, 0), (0, 0)), constant_values=255)
    first = (page.boxes[0][0], page.boxes[0][1] + room)
    staves_x1 = int(0.92 * gray.shape[1])  # where make_page ends its staves
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, sp / 24
    tempo_y = int(first[1] - 0.8 * sp)  # baseline of the tempo mark, just over the highest note
    cv2.putText(gray, "Andante", (int(first[0] + 2 * sp), tempo_y), font, scale, 0, 2)
    # the arranger's credit, flush with the staves' right end, a little over a space above the tempo mark
    credit = "Arranged by A. Editor"
    (w, th), _ = cv2.getTextSize(credit, font, scale, 2)
    credit_y = int(tempo_y - th - 1.5 * sp)
    cv2.putText(gray, credit, (staves_x1 - w, credit_y), font, scale, 0, 2)
    crest = int(credit_y - 0.3 * sp)
    if slur:  # over the first notes, left of the credit, its crest a little above the credit's baseline
        cv2.ellipse(gray, (int(first[0] + 20 * sp), int(crest + 1.5 * sp)), (int(8 * sp), int(1.5 * sp)), 0, 200,
                    340, 0, 2)
    result = detect_systems(Image.fromarray(gray))
    assert len(result.boxes) == 2
    box = result.boxes[0]
    if slur:  # the box reaches the slur's crest (and its half-space margin), not the credit's letters above it
        assert crest - 0.6 * sp <= box.y0 <= crest, (box.y0, crest, credit_y - th)
    else:  # the credit's letters out (their descenders aside), the tempo mark in
        assert credit_y - th / 3 < box.y0 <= tempo_y - th, (box.y0, credit_y, tempo_y - th)


def test_dust_in_the_gap_between_systems_does_not_stretch_their_boxes():
    """A few dot-sized specks (dust, a photo's grain that despeckling left: too few to make the page
    grainy) lie between two systems, each nearer one of them; neither box reaches out to them."""
    page = make_page(["piano", "piano", "piano"], seed=4, title=False)
    sp = page.space
    gray = np.asarray(page.image).copy()
    upper, lower = page.boxes[0], page.boxes[1]
    gap = lower[1] - upper[3]
    assert gap > 4 * sp
    side = max(2, int(0.4 * sp))
    specks = [(upper[3] + 0.4 * gap, 0.3), (upper[3] + 0.45 * gap, 0.6), (lower[1] - 0.4 * gap - side, 0.45),
              (lower[1] - 0.45 * gap - side, 0.8)]
    for y, share in specks:
        x = int(upper[0] + share * (upper[2] - upper[0]))
        gray[int(y):int(y) + side, x:x + side] = 30
    result = detect_systems(Image.fromarray(gray))
    assert len(result.boxes) == 3, result.messages
    first, second = sorted(result.boxes, key=lambda b: b.y0)[:2]
    assert upper[3] - 2 <= first.y1 <= upper[3] + sp, (first.y1, upper[3])
    assert lower[1] - sp <= second.y0 <= lower[1] + 2, (second.y0, lower[1])


def test_noisy_low_light_page_still_found():
    rng = np.random.default_rng(3)
    page = make_page(["piano", "piano", "piano"], seed=3)
    gray = np.asarray(page.image).astype(np.float32)
    # faint ink, dim light falling off to one side, heavy sensor noise
    h, w = gray.shape
    light = (0.35 + 0.25 * np.linspace(0, 1, w))[None, :]
    gray = (255 - (255 - gray) * 0.35) * light
    gray += rng.normal(0, 14, gray.shape)
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    result = detect_systems(image)
    assert len(result.boxes) == 3, result.messages


def test_a_misread_spacing_is_retried_at_the_pages_repeat_and_the_first_full_page_ends_the_retry(monkeypatch):
    # pixel noise on a grainy photo breaks lines into short runs whose spacing reads as half the
    # true one: the retry takes the page's vertical repeat of thin lines, widest candidate first,
    # and stops at the first candidate that finds a page's worth of staff (each try costs a pass)
    import acai_omr.detect.systems as systems

    page = make_page(["piano"] * 4, seed=5)
    true_read = systems.normalize.estimate_spacing
    monkeypatch.setattr(systems.normalize, "estimate_spacing",
                        lambda ink, *a, **k: (lambda r: r and (r[0] / 2, r[1]))(true_read(ink, *a, **k)))
    calls = []
    find = systems._deskew_and_find

    def counted(flat, masks, space, thickness, cfg, faint=False, smooth=0.0):
        calls.append(space)
        return find(flat, masks, space, thickness, cfg, faint, smooth)

    monkeypatch.setattr(systems, "_deskew_and_find", counted)
    result = detect_systems(page.image)
    assert len(result.boxes) == 4, result.messages
    for box, truth in zip(boxes_of(result), page.boxes):
        assert iou(box, truth) > 0.7
    assert len(calls) == 2, calls  # the first pass at the misread spacing, one retry at the true one
    assert abs(calls[1] / page.space - 1) < 0.1, (calls, page.space)


def test_a_spacing_the_pages_line_repeat_contradicts_does_not_enlarge_the_working_page():
    # a large page is shrunk for detection unless its staff space would get too small there; a
    # spacing read off noise (not the page's repeat of lines, nor half of it) must not undo that
    from acai_omr.detect import normalize
    from acai_omr.detect.systems import _spacing_repeats

    page = make_page(["piano"] * 3, seed=2)
    flat = normalize.flatten_background(np.asarray(page.image))
    assert _spacing_repeats(flat, page.space)
    assert _spacing_repeats(flat, page.space / 2)
    assert not _spacing_repeats(flat, page.space * 0.37)
    assert not _spacing_repeats(flat, page.space * 0.62)


def test_the_grain_of_a_noisy_photo_is_despeckled_but_notes_and_dots_stay():
    # sensor grain leaves specks up to a dot's size all over a photo's paper; strung between two
    # systems they would carry both boxes across the blank. On a grainy page small blobs without
    # a solid core go; on a clean page an isolated dot is kept as before.
    import cv2

    from acai_omr.detect.systems import _despeckle

    space = 10.0
    rng = np.random.default_rng(0)
    ink = np.zeros((600, 800), np.uint8)
    cv2.ellipse(ink, (200, 300), (6, 4), -20, 0, 360, 1, -1)  # a note head
    ink[240:300, 205:207] = 1  # its stem, a pixel or two wide
    cv2.ellipse(ink, (230, 300), (2, 2), 0, 0, 360, 1, -1)  # its dot, apart from it
    clean = ink.copy()
    assert _despeckle(clean, space).sum() == clean.sum()
    grain = rng.random(ink.shape) < 0.004  # single pixels and small clusters of them
    grain |= np.roll(grain, 1, axis=0) & (rng.random(ink.shape) < 0.5)
    grain |= np.roll(grain, 1, axis=1) & (rng.random(ink.shape) < 0.5)
    grain[280:320, 180:240] = False
    noisy = np.maximum(ink, grain.astype(np.uint8))
    out = _despeckle(noisy, space)
    assert (out[ink > 0] == 1).all()  # the note, its stem and its dot all stay
    assert out[grain & (ink == 0)].sum() < 0.05 * grain.sum()  # the grain is gone


def test_grain_swollen_to_a_note_heads_size_in_a_shadow_goes_but_the_notes_stay():
    # flattening a photo's shadow scales its grain up with the ink: there the specks come out
    # as ragged blobs half a space to a space across, as big as a note head but never as solid.
    # Between two systems they would carry the boxes over the blank (a Bravura photo with a
    # shadow edge lost three of its five systems so). A note head and its stem keep their place.
    import cv2

    from acai_omr.detect.systems import _despeckle

    space = 10.0
    rng = np.random.default_rng(1)
    ink = np.zeros((600, 800), np.uint8)
    for x in (150, 300, 450):
        cv2.ellipse(ink, (x, 300), (6, 4), -20, 0, 360, 1, -1)  # note heads
        ink[240:300, x + 5:x + 7] = 1  # their stems
    seeds = (rng.random(ink.shape) < 0.0015).astype(np.uint8)
    swollen = cv2.dilate(seeds, np.ones((6, 8), np.uint8)) & (rng.random(ink.shape) < 0.6)
    swollen |= (rng.random(ink.shape) < 0.01)  # and the fine grain around it
    swollen = swollen.astype(bool)
    swollen[220:320, 120:480] = False
    noisy = np.maximum(ink, swollen.astype(np.uint8))
    out = _despeckle(noisy, space)
    assert (out[ink > 0] == 1).all()
    assert out[swollen & (ink == 0)].sum() < 0.1 * swollen.sum()


def _grainy_copies_of_a_clean_page(strength: float):
    """A clean three-system page (flattened page, ink mask, staves, its rows over three spaces from
    every staff) and a copy darkened by smooth grain of `strength` grey levels per sigma."""
    from acai_omr.detect import normalize
    from acai_omr.detect.staves import find_staves

    page = make_page(["piano"] * 3, seed=2)
    flat = np.asarray(page.image, np.uint8)
    ink = normalize.binarize(flat)
    space, thickness = normalize.estimate_spacing(ink)
    staves = find_staves(ink, space, thickness, gray=flat)
    far = np.ones(flat.shape[0], bool)
    for staff in staves:
        far[int(staff.top - 3 * staff.space):int(staff.bottom + 3 * staff.space)] = False
    rng = np.random.default_rng(0)
    grain = cv2.GaussianBlur(rng.standard_normal(flat.shape).astype(np.float32), (0, 0), 1.0)
    noisy = np.clip(flat.astype(np.float32) - strength * np.abs(grain / grain.std()), 0, 255).astype(np.uint8)
    return flat, ink, staves, far, noisy


def test_a_mask_cut_inside_the_papers_grain_is_cut_again_from_the_smoothed_page():
    # a dark, grainy photo can leave the threshold inside the paper's noise: the mask floods the
    # blank between systems with joined specks (a Bravura photo's five boxes each ran on into the
    # next). Such a mask is cut again from the smoothed page: the blank comes out clean and the
    # note heads, stems and beams stay. A mask of a clean page is left as it is.
    from acai_omr.detect.systems import _above_the_grain

    flat, ink, staves, far, noisy = _grainy_copies_of_a_clean_page(60)
    assert len(staves) == 6
    assert _above_the_grain(ink, flat, staves, 0.15) is ink
    flooded = (noisy < 225).astype(np.uint8)  # the cut a clipped, grainy paper's statistics gave
    assert flooded[far].mean() > 0.2
    out = _above_the_grain(flooded, noisy, staves, 0.15)
    assert out[far].mean() < 0.03
    heads = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # solid ink: heads, beams, braces
    assert out[heads > 0].mean() > 0.9
    assert _above_the_grain(flooded, noisy, staves, 0.0) is flooded


def test_grain_clumped_into_specks_too_many_to_be_music_is_cut_again_though_it_covers_little():
    # a lighter grainy photo: the cut keeps the grain as small clumps with a solid core (which the
    # despeckling keeps too), covering a few percent of the blank, far under a flood, yet close
    # enough to chain a lone system's box out over the page (a one-system waltz, seed-4 tune photo).
    # Counted per square staff space, the clumps outnumber a page's own small marks; the page is
    # cut again from a smoothed copy, which leaves as few specks as the clean page has and keeps
    # the solid ink. The clean page itself is left as it is.
    from acai_omr.detect import normalize
    from acai_omr.detect.systems import _above_the_grain, _speck_density

    flat, ink, staves, far, noisy = _grainy_copies_of_a_clean_page(40)
    space = float(np.median([s.space for s in staves]))
    x0, x1 = int(min(s.x0 for s in staves)), int(max(s.x1 for s in staves))
    assert _above_the_grain(ink, flat, staves, 0.15) is ink
    clean_density = _speck_density(ink[far, x0:x1], space)
    specked = normalize.binarize(noisy)
    assert specked[far, x0:x1].mean() < 0.05  # no flood
    assert _speck_density(specked[far, x0:x1], space) > 2 * clean_density
    out = _above_the_grain(specked, noisy, staves, 0.15)
    assert _speck_density(out[far, x0:x1], space) <= clean_density
    heads = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    assert out[heads > 0].mean() > 0.9


def test_a_scans_black_margin_does_not_join_systems_into_one():
    # a dark scanner margin down the left edge, ending a couple of spaces before the staves
    # start: cut by the connector check's window, its edge looked like a system start line
    page = make_page(["single"] * 4, seed=7, title=False)
    gray = np.asarray(page.image).copy()
    edge = int(min(b[0] for b in page.boxes) - 2 * page.space)
    for y in range(gray.shape[0]):  # a wedge, as a sheet fed in at a slant leaves it
        gray[y, :int(edge * (0.6 + 0.4 * y / gray.shape[0]))] = 20
    result = detect_systems(Image.fromarray(gray))
    assert len(result.boxes) == 4, result.messages
    assert all(b.kind == "single" for b in result.boxes)


def test_connectors_count_thin_strokes_darker_than_the_paper_beside_them():
    from acai_omr.detect.systems import _connectors

    h, w, sp = 400, 800, 10.0
    upper, lower = _staff(100.0, sp=sp, contrast=80), _staff(240.0, sp=sp, contrast=80)
    ink = np.zeros((h, w), np.uint8)
    dark = np.zeros((h, w), np.uint8)
    dark[:, 250:] = 30  # a shadow over the right of the page: its paper reads darker than the page's
    # columns of noise in the shadow, barely darker than the shadowed paper beside them
    for x in (300, 400, 500):
        ink[:, x] = 1
        dark[:, x] = 36
    # a band too wide for a barline, dark as ink (the rim of the sheet, a shadow's edge)
    ink[:, 600:614] = 1
    dark[:, 600:614] = 90
    assert _connectors(upper, lower, ink, dark) == (False, 0)
    # a real barline counts, also in the shadow
    ink[:, 450:452] = 1
    dark[:, 450:452] = 110
    assert _connectors(upper, lower, ink, dark) == (False, 1)


def test_a_brace_run_into_the_start_line_joins_the_staves_but_as_wide_a_band_elsewhere_does_not():
    """In a screenshot (a staff space of 5 px) the brace and the system start line beside it run
    together into one stroke some two spaces wide; that stroke at the staves' left end joins them.
    The same width away from the left end is no barline."""
    from acai_omr.detect.systems import _connectors

    h, w, sp = 200, 600, 5.0
    upper, lower = _staff(50.0, x1=500.0, sp=sp, contrast=60), _staff(100.0, x1=500.0, sp=sp, contrast=60)
    ink = np.zeros((h, w), np.uint8)
    dark = np.zeros((h, w), np.uint8)
    ink[:, 300:310] = 1  # ten columns mid-staff: a blot, not a barline
    dark[:, 300:310] = 120
    assert _connectors(upper, lower, ink, dark) == (False, 0)
    ink[:, 91:101] = 1  # brace (91-94), a column between, start line (96-100): one run of ten columns
    dark[:, 91:101] = 120
    assert _connectors(upper, lower, ink, dark) == (True, 1)


def _shadowed_photo(seed: int = 5):
    """A sheet on a table (running out of the picture at the bottom), its left half in a shadow deep
    enough that the shadowed paper is darker than the lit table: (picture, paper mask, true boxes)."""
    page = make_page(["piano", "piano", "piano"], seed=seed)
    gray = np.asarray(page.image).astype(np.float32)
    h, w = gray.shape
    pad = 120
    picture = np.full((h + pad, w + 2 * pad), 95.0, np.float32)  # the table, below the sheet's bottom too
    picture[pad:, pad:pad + w] = gray[: h]
    paper = np.zeros(picture.shape, bool)
    paper[pad:, pad:pad + w] = True
    picture, paper = picture[: h - 100 + pad], paper[: h - 100 + pad]  # the sheet's foot is out of the picture
    x = np.arange(picture.shape[1], dtype=np.float32)
    ramp = np.clip((x - 0.45 * picture.shape[1]) / 60.0 + 0.5, 0, 1)  # a soft shadow edge
    picture *= (0.3 + 0.7 * ramp)[None, :]
    picture += np.random.default_rng(seed).normal(0, 4, picture.shape)
    boxes = [(x0 + pad, y0 + pad, x1 + pad, y1 + pad) for x0, y0, x1, y1 in page.boxes]
    return np.clip(picture, 0, 255).astype(np.uint8), paper, boxes


def test_a_shadow_darker_than_the_table_does_not_cut_the_sheet_short():
    """The sheet is bounded by its sharp edges, not by brightness: the shadowed half of the paper (darker
    than the lit table) stays paper, the table goes, and every system is found whole."""
    from acai_omr.detect.normalize import sheet_mask

    picture, paper, boxes = _shadowed_photo()
    shadowed_paper = picture[:, : picture.shape[1] // 3][paper[:, : picture.shape[1] // 3]]
    lit_table = picture[:, -60:][~paper[:, -60:]]
    assert np.median(shadowed_paper) < np.median(lit_table)  # the case brightness alone gets wrong
    mask = sheet_mask(picture)
    assert mask is not None
    assert mask[paper].mean() > 0.95
    assert mask[~paper].mean() < 0.05
    result = detect_systems(Image.fromarray(picture))
    assert len(result.boxes) == 3, result.messages
    for truth, found in zip(boxes, boxes_of(result)):
        assert iou(truth, found) > 0.7


def test_a_curled_page_is_flattened_column_by_column_and_every_system_found():
    """A page waved like a photographed book page (its lines' slope swings from +5 to -5 degrees across
    the width) has no rotation that levels it; each column is shifted back instead, and every system
    is found where it lies on the page."""
    import cv2

    page = make_page(["piano", "piano", "piano", "piano"], seed=7)
    gray = np.asarray(page.image)
    h, w = gray.shape
    amplitude = 0.09 * w / (2 * np.pi)  # slope amplitude 0.09 (5 degrees) for one wave across the page
    down = amplitude * np.sin(2 * np.pi * np.arange(w) / w)  # how far each column moves down
    ys = (np.arange(h, dtype=np.float32)[:, None] - down[None, :].astype(np.float32))
    xs = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], ys.shape)
    curled = cv2.remap(gray, np.ascontiguousarray(xs), ys, cv2.INTER_LINEAR, borderValue=255)
    truth = [(x0, y0 + down[int(x0):int(x1)].min(), x1, y1 + down[int(x0):int(x1)].max())
             for x0, y0, x1, y1 in page.boxes]
    result = detect_systems(Image.fromarray(curled))
    assert "page curl flattened" in result.messages[0]
    assert len(result.boxes) == 4, result.messages
    for t, found in zip(truth, boxes_of(result)):
        assert iou(t, found) > 0.75
        assert found[1] <= t[1] + 2 and found[3] >= t[3] - 2  # the whole bow inside


def test_column_shift_maps_flattened_points_back_to_where_they_were():
    from acai_omr.detect.normalize import ColumnShift

    image = np.full((200, 300), 255, np.uint8)
    shift = ColumnShift([50.0, 150.0, 250.0], [4.0, 0.0, -4.0], 300)
    image[120, 40] = image[60, 260] = 0
    flat = shift.apply(image)
    for y, x in zip(*np.nonzero(flat < 128)):
        back = shift.to_source([[x, y]])[0]
        assert abs(back[0] - x) < 1e-9
        assert min(abs(back[1] - 120) + abs(x - 40), abs(back[1] - 60) + abs(x - 260)) <= 1.0


def test_a_plain_page_with_dark_bands_gets_no_sheet_outline():
    """A rise from dark to light is a sheet's edge only when the dark runs out to the picture's frame:
    the lower edge of a black banner or a dense cluster on a plain page is not, and taking it for one
    whitened everything above it (two systems of a clean page lost)."""
    from acai_omr.detect.normalize import sheet_mask

    page = np.full((1754, 1240), 250, np.uint8)
    page[400:470, 150:1100] = 20  # a black banner across most of the width, paper above and below it
    page[900:960, 100:1150] = 30
    assert sheet_mask(page) is None


def _staff(top: float, x0: float = 100.0, x1: float = 700.0, sp: float = 10.0, contrast: float = 0.0):
    from acai_omr.detect.staves import Staff

    return Staff(xs=np.array([x0, x1]), tops=np.array([top, top]), space=sp, x0=x0, x1=x1, score=0.9,
                 contrast=contrast)


def test_the_brace_crossing_between_two_staves_names_the_piano_pair_of_a_voice_and_piano_system():
    # on a curled photo the bass staff bends out of the rows its lines were found in, so the brace
    # covers few of them, while the voice's clef, set further left, covers all of the voice's: the
    # share of rows covered named the voice and the treble staff the piano. The brace crossing the
    # gap between the treble and the bass staff (and no other) says which pair it joins.
    from acai_omr.detect.systems import _group_staves

    ink = np.zeros((340, 640), np.uint8)
    staves = [_staff(50, x0=100, x1=600), _staff(150, x0=100, x1=600), _staff(250, x0=100, x1=600)]
    for st in staves:
        for k in range(5):
            ink[int(st.top) + 10 * k, 100:600] = 1
    ink[50:291, 100:102] = 1  # the system start line, down every staff
    ink[150:291, 300:302] = ink[150:291, 450:452] = 1  # the piano's shared barlines
    ink[50:91, 300:302] = ink[50:91, 450:452] = 1  # the voice's own
    ink[150:262, 80:85] = 1  # the brace: across the piano's gap, down to the top of the bass staff's rows
    ink[50:91, 86:94] = 1  # the voice's clef, starting left of the others
    (group,) = _group_staves(staves, ink)
    assert group.kind == "voice+piano"
    assert group.roles == ["voice", "piano-upper", "piano-lower"]
    assert group.unit == (1, 2)


def _piano(top: float):
    """A piano system whose staves (space 10) start at `top` and `top + 80`."""
    from acai_omr.detect.systems import _Group

    return _Group([_staff(top), _staff(top + 80)], "piano", ["piano-upper", "piano-lower"], 0.9)


def _staff_lines(shape: tuple[int, int], tops) -> np.ndarray:
    """An ink mask holding only the five lines (space 10, x 100-700) of a staff at each of `tops`."""
    ink = np.zeros(shape, np.uint8)
    for top in tops:
        for line in range(5):
            ink[int(top) + 10 * line, 100:700] = 1
    return ink


def test_a_blob_of_grain_crossing_one_staff_does_not_carry_its_box_over_the_next_system():
    """A box stops at its neighbours' staff lines: a speckle chain that crosses one system's staff and
    runs on down over the next system would otherwise make the two boxes one."""
    from acai_omr.detect.systems import _Group, _system_rects

    first = _piano(100)
    # the second system's staves found only from x=300 on (their left end in a shadow)
    second = _Group([_staff(330, x0=300), _staff(410, x0=300)], "piano", ["piano-upper", "piano-lower"], 0.9)
    ink = np.zeros((600, 800), np.uint8)
    ink[150:400, 150:154] = 1  # from between the first system's staves down into the second's, left of where it was found
    ink[95:101, 400:402] = 1  # a stem on the first system's top line: its own ink still counts
    (_, y0a, _, y1a), (_, y0b, _, y1b) = _system_rects([first, second], ink, DetectConfig())
    assert y1a <= 330 - 1 and y0b >= 220 + 1  # neither box reaches over the other's staff lines
    assert y0a <= 95 and y1b >= 450  # each still holds its own staves and what crosses them


def test_a_mark_between_interlocking_systems_goes_to_the_system_whose_ink_is_nearer_in_its_own_columns():
    """Where one system's low notes and the next one's high notes interlock, a hairpin under the upper
    system's beam is that system's even though the lower system reaches higher elsewhere: staff lines
    join each system's notes into one component, and its box (spanning every column at the height of
    its highest note) is not the system's ink in the hairpin's columns."""
    from acai_omr.detect.systems import _system_rects

    upper, lower = _piano(100), _piano(330)
    ink = _staff_lines((600, 800), (100, 180, 330, 410))
    ink[220:262, 510:513] = 1  # a stem hanging from the upper system's bass staff, its beam at 258-262
    ink[258:262, 480:513] = 1
    ink[280:330, 160:163] = 1  # the lower system's highest note, far to the left, its stem on the staff
    ink[276:284, 152:163] = 1
    ink[268:276, 500:530] = 1  # the hairpin, just under the beam
    (_, _, _, bottom_upper), (_, top_lower, _, _) = _system_rects([upper, lower], ink, DetectConfig())
    assert bottom_upper >= 276
    assert top_lower <= 276 and top_lower > 268  # the lower box still holds its own high note, not the hairpin


def test_a_dynamic_under_a_low_whole_note_goes_with_the_note_not_the_next_systems_nearer_stem():
    """A whole note on ledger lines under a system is not joined to its staff, so it is placed like a
    mark; a dynamic under it is nearer to the note than to anything else, but measured to the staff
    ink alone the next system's high stem beside it was nearer and took it (MuseScore pages: the "mf"
    under a low bass note landed in the box below). Placed nearest first, the note counts as its
    system's ink for the marks beyond it."""
    from acai_omr.detect.systems import _system_rects

    upper, lower = _piano(100), _piano(330)
    ink = _staff_lines((600, 800), (100, 180, 330, 410))
    ink[230, 395:426] = 1  # two ledger lines under the upper system's bass staff, the whole note on them
    ink[240, 395:426] = 1
    ink[243:253, 400:421] = 1
    ink[262:272, 400:421] = 1  # the dynamic under it
    ink[290:330, 432:435] = 1  # the lower system's high note beside it, stem down onto its staff
    ink[286:294, 432:444] = 1
    (_, _, _, bottom_upper), (_, top_lower, _, _) = _system_rects([upper, lower], ink, DetectConfig())
    assert bottom_upper >= 272
    assert 272 < top_lower <= 286


def test_the_pianos_high_notes_reaching_up_among_the_voices_lyrics_stay_in_the_piano_box():
    """In a song the voice staff is left out of the box and its lyrics are its own; a high piano note
    whose stem reaches up among the lyrics (touching the staff or standing on ledger lines) is the
    piano's, or the box cuts the top off the note the model must read."""
    from acai_omr.detect.systems import _Reach, _system_rects

    voice = _Reach(x0=100, top=100, x1=700, bottom=186, space=10, lines_bottom=140)
    piano = _piano(220)
    ink = _staff_lines((400, 800), (100, 220, 300))
    for x in [*range(120, 280, 14), *range(330, 480, 14), *range(530, 680, 14)]:  # the lyrics: letters on one baseline
        ink[172:184, x:x + 9] = 1
    ink[178:212, 300:312] = 1  # a note on ledger lines, its stem up among the lyrics, not touching the staff
    ink[181:221, 500:503] = 1  # a stem from the staff up among the lyrics
    ((_, top, _, _),) = _system_rects([piano], ink, DetectConfig(), [voice])
    assert 168 < top <= 178


def _choir_and_piano():
    """Four voices (a bracket) over a piano (no brace yet), space 10: (staves, ink). The soprano and alto
    share seven barlines, the piano's pair six, so counting barlines alone picks the wrong pair."""
    tops = [100, 200, 300, 400, 520, 600]
    ink = _staff_lines((700, 800), tops)
    ink[100:641, 100:102] = 1  # the system start line, down every staff
    ink[100:441, 86:90] = 1  # the choir's bracket
    for x in range(180, 700, 70):
        ink[100:241, x] = 1
    for x in range(180, 640, 80):
        ink[520:641, x] = 1
    return [_staff(t) for t in tops], ink


def test_in_a_choir_and_piano_system_the_braced_pair_is_the_piano_though_the_voices_share_more_barlines():
    """A choir's soprano and alto may share barlines, as many as the piano's pair or more; the brace,
    a mark at the left end spanning two staves alone (the choir's bracket spans four), tells the piano.
    Counting barlines boxed the soprano and alto as the piano."""
    from acai_omr.detect.systems import _group_staves

    staves, ink = _choir_and_piano()
    ink[520:641, 92:95] = 1  # the piano's brace
    (group,) = _group_staves(staves, ink)
    assert group.kind == "ensemble"
    assert group.unit == (4, 5) and group.roles[4:] == ["piano-upper", "piano-lower"]


def test_a_piano_brace_broken_at_its_cusp_on_grainy_paper_still_marks_the_piano_in_a_choir_system():
    """On a grainy photo the left end holds grain in nearly every row, and the brace's thin cusp can break
    it in two. A gap counts as crossed only by strokes a space tall or more, chained over short breaks in
    the same columns: the broken brace still spans the piano's gap alone, while the grain crosses none.
    Taking any ink in every row of a gap as a crossing made every gap crossed, and the soprano and alto
    (seven shared barlines against the piano's six) were boxed as the piano."""
    from acai_omr.detect.systems import _group_staves

    staves, ink = _choir_and_piano()
    ink[520:575, 92:95] = 1  # the piano's brace, its upper half ...
    ink[585:641, 92:95] = 1  # ... and its lower half, a space below
    rng = np.random.default_rng(0)
    rows = np.arange(60, 680)
    ink[rows, rng.integers(76, 99, rows.size)] = 1  # one grain speck in every row of the left end
    (group,) = _group_staves(staves, ink)
    assert group.kind == "ensemble"
    assert group.unit == (4, 5) and group.roles[4:] == ["piano-upper", "piano-lower"]

    # a slanted start line, half in one column and half in the next: neither column is dark down
    # 90% of the staves, so neither is blanked as the start line, and its thin halves cross the gaps
    ink[100:641, 100:102] = 0
    ink[100:370, 100] = 1
    ink[370:641, 101] = 1
    (group,) = _group_staves(staves, ink)
    assert group.unit == (4, 5)


def test_a_voice_whose_staff_is_traced_further_right_than_its_piano_on_a_dark_photo_is_still_its_voice():
    """Staves of one system end together in print, but on a dark photo one can be traced a few spaces
    short: a voice 2.5 spaces longer than its piano pair is still joined to it (2 spaces was the limit,
    and the voice came out as a system of its own); one 4 spaces off is not."""
    from acai_omr.detect.systems import _Group, _join_by_layout

    def voice(x1):
        return _Group([_staff(20, x1=x1)], "single", ["staff"], 0.9)

    joined = _join_by_layout([voice(725.0), _piano(100), _piano(300)])
    assert [g.kind for g in joined] == ["voice+piano", "piano"]
    apart = _join_by_layout([voice(740.0), _piano(100), _piano(300)])
    assert [g.kind for g in apart] == ["single", "piano", "piano"]


def test_stems_bridging_the_gap_between_two_close_systems_do_not_join_them():
    """On a dense page the stems of high notes over the next system's treble staff can reach up to the
    system above. They cross the gap like barlines but end in their own staff; only strokes that run on
    through both staves (barlines) join staves. Counting the stems joined two piano systems into one
    four-staff "ensemble" and lost both."""
    from acai_omr.detect.systems import _group_staves

    tops = [100, 180, 290, 370]  # two piano systems, 7 spaces apart
    staves = [_staff(t) for t in tops]
    ink = _staff_lines((500, 800), tops)
    for first, last in ((100, 221), (290, 411)):
        for x in (100, 250, 450, 699):  # each system's start line and barlines
            ink[first:last, x] = 1
    for x in (330, 370, 560):  # notes high over the lower system's treble, stems up to the bass line above
        ink[221:300, x] = 1
        ink[296:302, x - 9:x + 1] = 1
    groups = _group_staves(staves, ink)
    assert [g.kind for g in groups] == ["piano", "piano"]
    assert [len(g.staves) for g in groups] == [2, 2]


def test_lone_staves_join_the_piano_systems_the_page_layout_puts_them_in():
    """Where a photo's grain hides the strokes joining staves, the page's own piano pairs tell which lone
    staves are a pair (their gap, far from the staves around) and which lone staff is a voice over its
    piano; a page of lone staves alone, with no pair to learn from, is left as it is."""
    from acai_omr.detect.systems import _Group, _join_by_layout

    def single(top):
        return _Group([_staff(top)], "single", ["staff"], 0.9)

    # a joined pair (gap 40), a pair found as two lone staves, a voice over a pair (gap 70, nearer it than
    # the system above)
    groups = [_piano(100), single(300), single(380), single(560), _piano(670)]
    joined = _join_by_layout(groups)
    assert [g.kind for g in joined] == ["piano", "piano", "voice+piano"]
    assert joined[2].unit == (1, 2) and joined[2].roles == ["voice", "piano-upper", "piano-lower"]
    # a lone staff nearer the system above than the pair below is not that pair's voice
    far = _join_by_layout([_piano(100), single(240), _piano(360)])
    assert [g.kind for g in far] == ["piano", "single", "piano"]
    # ... unless lyrics run under it: a song's systems may stand closer than its voice to its piano
    lyrics = np.zeros((800, 800), np.uint8)
    for word in range(8):
        for letter in range(4):
            x = 110 + 70 * word + 8 * letter
            lyrics[300:308, x:x + 6] = 1  # letters 0.8 spaces tall, their feet on one baseline
    sung = _join_by_layout([_piano(100), single(240), _piano(360)], lyrics)
    assert [g.kind for g in sung] == ["piano", "voice+piano"]
    # at the top of the page, with nothing above to compare: a voice sits about a pair's gap over its
    # piano; a single-staff system stands further off
    assert [g.kind for g in _join_by_layout([single(100), _piano(185)])] == ["voice+piano"]
    assert [g.kind for g in _join_by_layout([single(100), _piano(240)])] == ["single", "piano"]
    # lone staves not lined up at their ends stay apart
    offset = [_piano(100), _Group([_staff(300, x0=300)], "single", ["staff"], 0.9), single(380)]
    assert [g.kind for g in _join_by_layout(offset)] == ["piano", "single", "single"]
    # no pair on the page: nothing to learn the gap from, so lone staves stay lone
    assert [g.kind for g in _join_by_layout([single(100), single(180), single(300)])] == ["single"] * 3


def test_a_lone_staff_as_far_over_a_piano_as_the_pages_other_voices_is_a_voice_too():
    # a song photographed: the top voice's lyrics lost in the grain, it stands two pairs' gaps over its
    # piano (too far for a lone top staff to be taken as a voice). Another song on the page, its voice
    # 70 px over its piano, gives the gap: the top staff, 80 px over, is that system's voice. Without
    # the song below it stays a single staff; at twice the song's gap it stays one too
    from acai_omr.detect.systems import _Group, _join_by_layout

    def single(top):
        return _Group([_staff(top)], "single", ["staff"], 0.9)

    assert [g.kind for g in _join_by_layout([single(120), _piano(240)])] == ["single", "piano"]
    page = _join_by_layout([single(120), _piano(240), single(450), _piano(560)])
    assert [g.kind for g in page] == ["voice+piano", "voice+piano"]
    assert all(g.unit == (1, 2) for g in page)
    far = _join_by_layout([single(60), _piano(240), single(450), _piano(560)])
    assert [g.kind for g in far] == ["single", "piano", "voice+piano"]


def test_on_a_page_of_songs_a_lone_staff_lined_up_over_a_piano_pair_is_its_voice_whatever_the_gap():
    # a song printed with room for words under the voice, the words lost in a photo's grain: the voice
    # stands 110 px over its piano (nearly three pairs' gaps), too far for the gap rules, and the system
    # above may even be nearer. On a page whose other systems are voice + piano it is still that system's
    # voice; on a page without songs, or not lined up with the pair, it stays a staff of its own
    from acai_omr.detect.systems import _Group, _join_by_layout

    def single(top, x0=100.0):
        return _Group([_staff(top, x0=x0)], "single", ["staff"], 0.9)

    song = _Group([_staff(800), _staff(900), _staff(980)], "voice+piano", ["voice", "piano-upper", "piano-lower"],
                  0.9, (1, 2))
    page = _join_by_layout([single(100), _piano(250), single(400), _piano(550), song])
    assert [g.kind for g in page] == ["voice+piano"] * 3
    assert all(g.unit == (1, 2) and g.roles[0] == "voice" for g in page)
    without_songs = _join_by_layout([single(100), _piano(250), single(400), _piano(550)])
    assert [g.kind for g in without_songs] == ["single", "piano", "single", "piano"]
    apart = _join_by_layout([single(100, x0=140.0), _piano(250), song])  # 4 spaces in: an indented system
    assert [g.kind for g in apart] == ["single", "piano", "voice+piano"]


def _plain_projection_skew(lines: np.ndarray, max_deg: float, bands: int) -> float:
    """The skew search written out plainly (a fresh array per step, float sum of squares): what
    `estimate_skew`'s buffer-reusing loop must reproduce angle for angle."""
    ys, xs = np.nonzero(lines)
    band = np.minimum(xs * bands // lines.shape[1], bands - 1).astype(np.int64)
    xs = xs.astype(np.float64) - lines.shape[1] / 2
    ys = ys.astype(np.float64)
    offset = lines.shape[1] * np.tan(np.radians(max_deg)) + 2
    stride = int(lines.shape[0] + 2 * offset + 2)

    def energy(deg):
        proj = np.round(ys - xs * np.tan(np.radians(deg)) + offset).astype(np.int64) + band * stride
        return float((np.bincount(proj).astype(np.float64) ** 2).sum())

    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.25)
    best = coarse[int(np.argmax([energy(a) for a in coarse]))]
    fine = np.arange(best - 0.25, best + 0.25 + 1e-9, 0.025)
    return float(fine[int(np.argmax([energy(a) for a in fine]))])


@pytest.mark.parametrize("angle", [0.0, 1.3, -2.7])
def test_the_skew_search_finds_the_plain_projections_angle_from_the_ink_or_the_callers_strokes(angle):
    from acai_omr.detect.normalize import binarize, estimate_skew, horizontal_lines, to_gray_array

    page = make_page(["piano"] * 2, seed=3, angle=angle, noise=True)
    ink = binarize(to_gray_array(page.image))
    space = page.space
    strokes = horizontal_lines(ink, 2 * space)
    assert np.count_nonzero(strokes) < 120_000  # every stroke pixel counted: no subsample to differ by
    expected = _plain_projection_skew(strokes, 5.0, 4)
    assert estimate_skew(ink, space) == expected
    assert estimate_skew(ink, space, lines=strokes) == expected
    assert expected == pytest.approx(-angle, abs=0.2)


def test_the_sheet_edge_search_takes_numpys_median_to_the_bit():
    from acai_omr.detect.normalize import _median

    rng = np.random.default_rng(5)
    for n in range(1, 80):
        for _ in range(20):
            values = np.log(rng.integers(0, 256, n).astype(np.float32) + 8.0)
            assert _median(values) == float(np.median(values))


def test_the_ghost_of_the_sheets_other_side_does_not_grow_the_boxes():
    """Show-through: the reverse's music, mirrored, blurred, a third as dark and half a system lower,
    lies in the gaps between the page's systems. Its notes are not the page's ink (they are far
    fainter than its staff lines), so every box stays as it is without the ghost; taking them as ink
    (`show_through_share=0`) grows boxes over the gaps, which shows the page is a real test."""
    page = make_page(["piano"] * 4, seed=0)
    gray = np.asarray(page.image, np.float32) / 255
    pitch = page.boxes[1][1] - page.boxes[0][1]
    mirror = np.float32([[-1, 0, gray.shape[1] - 1], [0, 1, pitch / 2]])
    ghost = cv2.GaussianBlur(cv2.warpAffine(gray, mirror, gray.shape[::-1], borderValue=1.0), (0, 0), 1.5)
    seen = np.clip(255 * gray * (1 - 0.3 * (1 - ghost)), 0, 255).astype(np.uint8)

    alone = boxes_of(detect_systems(page.image))
    with_ghost = boxes_of(detect_systems(seen))
    assert len(with_ghost) == 4
    for a, b in zip(alone, with_ghost):
        assert iou(a, b) >= 0.9
    taken_as_ink = boxes_of(detect_systems(seen, DetectConfig(show_through_share=0.0)))
    assert max((b[3] - b[1]) / (a[3] - a[1]) for a, b in zip(alone, taken_as_ink)) > 1.15


def test_a_sharp_shadow_across_the_lower_page_does_not_pass_for_the_sheets_edge():
    """A shadow with a sharp edge (a lamp, a phone held close) darkens the lower part of the page.
    Its edge is as sharp a rise in brightness as the sheet's own edge against a table, but the
    music goes on beyond it, which a table does not hold: every system is found, the shadowed ones
    too, each in its own box."""
    for seed in range(2):
        page = make_page(["piano"] * 4, seed=seed, noise=True)
        gray = np.asarray(page.image, np.float32)
        h, w = gray.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        third = page.boxes[2]
        edge = (third[1] + third[3]) / 2 + (xx - w / 2) * 0.08  # through the third system, a little tilted
        shade = np.clip((yy - edge) / 10 + 0.5, 0, 1)
        seen = np.clip(gray * (1 - 0.5 * shade), 0, 255).astype(np.uint8)
        result = detect_systems(seen)
        assert [b.kind for b in result.boxes] == ["piano"] * 4
        for truth, box in zip(page.boxes, boxes_of(result)):
            assert iou(truth, box) >= 0.7


def _each_whole_in_a_box_of_its_own(truths, found) -> None:
    """Each true system is 90% inside its found box, which overlaps no other system much."""
    assert len(found) == len(truths)
    for index, (truth, box) in enumerate(zip(truths, found)):
        across = max(0.0, min(truth[2], box[2]) - max(truth[0], box[0]))
        covered = across * max(0.0, min(truth[3], box[3]) - max(truth[1], box[1]))
        assert covered >= 0.9 * (truth[2] - truth[0]) * (truth[3] - truth[1])
        assert all(iou(other, box) < 0.1 for other in truths[:index] + truths[index + 1:])


def _sheet_on_a_grainy_table(seed: int, shadow: bool):
    """A whole sheet of four piano systems on a dark table whose grain makes blotches about a note
    head's size; with `shadow`, a sharp shadow darkens the top half of the sheet (systems 1-2) to the
    table's level. (picture, sheet box, true boxes)."""
    page = make_page(["piano"] * 4, seed=seed, noise=True)
    gray = np.asarray(page.image, np.float32)
    h, w = gray.shape
    pad = 150
    rng = np.random.default_rng(seed)
    picture = np.full((h + 2 * pad, w + 2 * pad), 45.0, np.float32)
    blotches = rng.normal(0, 1, (picture.shape[0] // 10, picture.shape[1] // 10)).astype(np.float32)
    picture += 20 * cv2.resize(blotches, picture.shape[::-1], interpolation=cv2.INTER_CUBIC)
    picture[pad:pad + h, pad:pad + w] = 0.85 * gray
    if shadow:
        edge = pad + (page.boxes[1][3] + page.boxes[2][1]) / 2
        rows = np.arange(picture.shape[0], dtype=np.float32)[:, None]
        picture *= 0.25 + 0.75 * np.clip((rows - edge) / 4 + 0.5, 0, 1)
    picture += rng.normal(0, 14, picture.shape)
    boxes = [(x0 + pad, y0 + pad, x1 + pad, y1 + pad) for x0, y0, x1, y1 in page.boxes]
    return np.clip(picture, 0, 255).astype(np.uint8), (pad, pad, pad + w, pad + h), boxes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_grainy_tables_blotches_do_not_pass_for_music_beyond_the_sheets_edge(seed):
    """The sheet's outline is found on a grainy table: the table's blotches read as ink on the
    thumbnail, but no more past the sheet's sides than along the picture's frame."""
    from acai_omr.detect.normalize import find_page_quad

    picture, (x0, y0, x1, y1), _ = _sheet_on_a_grainy_table(seed, shadow=False)
    quad = find_page_quad(picture)
    assert quad is not None
    assert np.abs(quad - np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])).max() < 0.03 * picture.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lit_part_of_a_sheet_under_a_sharp_shadow_is_not_taken_for_the_sheet(seed):
    """A shadow darkens the top half of the sheet as deep as the table: the bright lower half is a
    clean quadrilateral, but the music goes on past its top side, so it is no sheet outline, and the
    two shadowed systems are found with the lit ones, each whole in a box of its own. (On so dark and
    blotchy a table the shadowed systems' boxes still run out over the table's side: not pinned here.)"""
    from acai_omr.detect.normalize import find_page_quad

    picture, _, boxes = _sheet_on_a_grainy_table(seed, shadow=True)
    quad = find_page_quad(picture)
    assert quad is None or quad[:, 1].min() < boxes[0][1]
    result = detect_systems(Image.fromarray(picture))
    assert [b.kind for b in result.boxes] == ["piano"] * 4, result.messages
    _each_whole_in_a_box_of_its_own(boxes, boxes_of(result))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_staff_lines_fainter_than_the_papers_pixel_noise_are_found_by_their_steadiness_along_the_row(seed):
    """A dim, grainy photo: the lines are fainter than one pixel's noise, but a line's darkness over a
    staff's thousand columns varies far less than a pixel does, so the staves are still proven and
    every system found."""
    page = make_page(["piano"] * 3, seed=seed)
    gray = 200 - 0.1 * (255 - np.asarray(page.image, np.float32))  # dim paper, faint ink
    gray = cv2.GaussianBlur(gray, (0, 0), 0.8)
    grain = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 1, gray.shape).astype(np.float32), (0, 0), 1.0)
    gray += 12 * grain / grain.std()
    result = detect_systems(np.clip(gray, 0, 255).astype(np.uint8))
    assert [b.kind for b in result.boxes] == ["piano"] * 3, result.messages
    _each_whole_in_a_box_of_its_own(page.boxes, boxes_of(result))  # (in so much grain they come out loose)


def _sheet_on_a_table(seed: int = 3):
    """A clean page laid on a dark table, every edge in view, rotated 2 degrees: (picture, corners of the
    sheet tl/tr/br/bl, true boxes)."""
    page = make_page(["piano", "piano", "piano"], seed=seed)
    gray = np.asarray(page.image)
    h, w = gray.shape
    pad = 150
    picture = np.full((h + 2 * pad, w + 2 * pad), 70, np.uint8)
    picture[pad:pad + h, pad:pad + w] = gray
    R = cv2.getRotationMatrix2D((picture.shape[1] / 2, picture.shape[0] / 2), 2.0, 1.0)
    picture = cv2.warpAffine(picture, R, picture.shape[::-1], flags=cv2.INTER_LINEAR, borderValue=70)
    corners = np.array([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]], np.float64)
    corners = corners @ R[:, :2].T + R[:, 2]
    boxes = []
    for x0, y0, x1, y1 in page.boxes:
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64) + pad
        pts = pts @ R[:, :2].T + R[:, 2]
        boxes.append((*pts.min(axis=0), *pts.max(axis=0)))
    return picture, corners, boxes


def test_a_traced_outline_that_slants_the_staff_lines_is_dropped_and_the_page_read_as_it_lies(monkeypatch):
    """A sheet's outline straightens a photo only when it is the sheet's: with one corner traced two fifths of
    the way down its side (a bright patch's edge), the warp would slant the music by several degrees.
    The lines lie straighter on the photo as taken, so the page is read that way and every system is
    found; the true outline is still used."""
    import acai_omr.detect.systems as systems

    picture, corners, boxes = _sheet_on_a_table()
    right = detect_systems(Image.fromarray(picture))
    assert "page outline straightened" in right.messages[0]
    assert len(right.boxes) == 3, right.messages

    wrong = corners.copy()
    wrong[1] += 0.4 * (corners[2] - corners[1])  # the top-right corner slid down the right side
    monkeypatch.setattr(systems.normalize, "find_page_quad", lambda work: wrong * (work.shape[1] / picture.shape[1]))
    result = detect_systems(Image.fromarray(picture))
    assert "page outline straightened" not in result.messages[0], result.messages
    assert len(result.boxes) == 3, result.messages
    for truth, found in zip(boxes, boxes_of(result)):
        assert iou(truth, found) > 0.7


def _faint_grainy_staves(seed: int = 0, noise: float = 7.0):
    """A flattened photo of two staves (space 13 px) whose lines are a blurred 14 grey levels darker than
    paper with a pixel noise of `noise` levels (7: a plain cut breaks them into dashes, as on a dim phone
    photo; 30: a high-ISO photo's grain)."""
    rng = np.random.default_rng(seed)
    h, w, sp = 500, 900, 13.0
    dark = np.zeros((h, w), np.float32)
    tops = (120.0, 300.0)
    for top in tops:
        for k in range(5):
            dark[int(round(top + k * sp)), 60:860] = 40.0
    dark = cv2.GaussianBlur(dark, (0, 0), 1.2)  # a blurred 1-px line: some 14 levels at its centre
    flat = np.clip(250 - dark + rng.normal(0, noise, (h, w)), 0, 255).astype(np.uint8)
    return flat, sp, tops


def test_faint_staff_lines_on_grainy_paper_are_found_on_the_retry_by_averaging_along_the_lines():
    # a dim, grainy phone photo (a voice+piano page in Gonville): a plain cut and a three-space average
    # both leave the lines in dashes, and the page's first read found one staff of nine. Averaged over
    # eight spaces along the rows the lines stand clear of the grain, and every staff is found
    from acai_omr.detect import normalize
    from acai_omr.detect.systems import _binarize_all, _deskew_and_find

    flat, sp, tops = _faint_grainy_staves()
    dashed = normalize.thin_lines(flat, sp, 1.0, length=int(3 * sp))
    line_rows = [int(round(top + k * sp)) for top in tops for k in range(5)]
    assert dashed[line_rows, 60:860].mean() < 0.5
    staves = _deskew_and_find(flat, _binarize_all(flat), sp, 1.0, DetectConfig(), faint=True)[0]
    assert len(staves) == 2
    assert all(abs(st.top - top) <= 1.5 and st.x0 < 100 and st.x1 > 820 for st, top in zip(staves, tops))


def test_staff_lines_under_a_heavy_grain_are_found_only_on_the_page_smoothed_along_its_rows():
    # a dark phone photo at high ISO: lines some 14 levels darker than paper under a pixel noise of 30.
    # Averaging along the rows after the vertical top-hat still leaves the grain's peaks above the
    # lines; a Gaussian along the rows first (1.5 spaces) brings both staves out, in place
    from acai_omr.detect import normalize
    from acai_omr.detect.systems import _binarize_all, _deskew_and_find

    flat, sp, tops = _faint_grainy_staves(noise=30.0)
    assert _deskew_and_find(flat, _binarize_all(flat), sp, 1.0, DetectConfig(), faint=True)[0] == []
    found = _deskew_and_find(flat, _binarize_all(flat), sp, 1.0, DetectConfig(), faint=True, smooth=1.5)
    staves, returned_page = found[0], found[3]
    assert len(staves) == 2
    assert all(abs(st.top - top) <= 2.5 and st.x0 < 110 and st.x1 > 800 for st, top in zip(staves, tops))
    assert normalize.binarize(returned_page).mean() > 0.05  # the page handed on keeps its grain: boxes are cut
    # from the page as it is, not from the blurred one


@pytest.mark.parametrize("seed", [0, 1])
def test_a_page_whose_lines_drown_in_grain_is_read_again_smoothed_along_its_rows(seed):
    """Nothing of the page is found on the first read nor on the faint-line retries; the page read again
    blurred along its rows finds every system (and without that read, none)."""
    page = make_page(["piano"] * 3, seed=seed)
    gray = cv2.GaussianBlur(220 - 0.1 * (255 - np.asarray(page.image, np.float32)), (0, 0), 0.8)
    gray += np.random.default_rng(seed).normal(0, 30, gray.shape).astype(np.float32)
    photo = np.clip(gray, 0, 255).astype(np.uint8)
    assert detect_systems(photo, DetectConfig(grain_row_sigma_spaces=0)).boxes == []
    result = detect_systems(photo)
    assert [b.kind for b in result.boxes] == ["piano"] * 3, result.messages
    _each_whole_in_a_box_of_its_own(page.boxes, boxes_of(result))


@pytest.mark.parametrize("height", [502, 505, 508, 511, 514])
def test_a_screenshots_staff_lines_drawn_across_two_pixel_rows_still_make_every_staff(height):
    """At a staff space of 5 px (a page shown small on screen) an anti-aliased line that falls between
    two pixel rows darkens both by half. The rows beside a line that tell it from a band are taken from
    two pixels off, so the half-dark row next to it is not read as its side: every staff is found, and
    no system loses one (a lone staff left, the other joined to its neighbour). The page is shrunk to
    a few sizes, so its lines fall at several phases of the pixel grid (at 508 and 511 rows one staff
    was lost before)."""
    page = make_page(["piano"] * 4, seed=0, width=2480, height=3508)
    scale = height / 3508
    small = cv2.resize(np.asarray(page.image), (round(2480 * scale), height), interpolation=cv2.INTER_AREA)
    result = detect_systems(small)
    assert [b.kind for b in result.boxes] == ["piano"] * 4, result.messages
    _each_whole_in_a_box_of_its_own([tuple(v * scale for v in box) for box in page.boxes], boxes_of(result))


@pytest.mark.parametrize("seed,noise", [(1, 20), (2, 30), (3, 30)])
def test_a_grainy_photo_of_a_page_of_text_has_no_systems_though_its_lines_blur_into_bars(seed, noise):
    # blurred along the rows, five lines of text pass for a staff; no stroke runs through all five
    # (music has barlines and stems), so that read is refused and the page has no systems
    text = 220 - 0.3 * (255 - np.asarray(make_text_page(seed=seed), np.float32))
    photo = np.clip(text + np.random.default_rng(seed).normal(0, noise, text.shape), 0, 255).astype(np.uint8)
    result = detect_systems(photo)
    assert result.boxes == [], result.messages
    assert "no five-line staves" in result.messages[0]


def test_a_start_line_the_grain_breaks_in_the_mask_still_joins_its_staves_by_its_darkness():
    # on the same photo the system start line comes through the ink mask in pieces (under 85% of the gap's
    # rows); its darkness, taken over the gap, still stands some 30 levels clear of the paper beside it
    from acai_omr.detect.systems import _connectors

    rng = np.random.default_rng(1)
    h, w, sp = 400, 800, 13.0
    upper, lower = _staff(100.0, sp=sp, contrast=8), _staff(240.0, sp=sp, contrast=8)
    dark = np.clip(rng.normal(0, 7, (h, w)), 0, 255)
    dark[:, 99:102] += 35
    dark = dark.astype(np.uint8)
    ink = (dark > 30).astype(np.uint8)
    ink[rng.random(h) < 0.3, 99:102] = 0  # the mask loses a third of its rows
    assert _connectors(upper, lower, ink, None) == (False, 0)
    assert _connectors(upper, lower, ink, dark) == (True, 1)


def test_grain_that_darkens_whole_columns_of_a_gap_does_not_join_two_systems():
    # heavy, blurred grain (a Bravura photo) darkens some columns of the blank between two systems
    # nearly all the way down; in grey levels they pass the staves' faint contrast, but no more than
    # the gap's other columns scatter: they join nothing. A real barline there still counts
    from acai_omr.detect.systems import _connectors

    rng = np.random.default_rng(2)
    h, w, sp = 400, 800, 10.0
    upper, lower = _staff(100.0, sp=sp, contrast=12), _staff(260.0, sp=sp, contrast=12)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=1.0, sigmaY=25.0)
    dark = np.clip(12 + 12 * grain / grain.std(), 0, 255).astype(np.uint8)
    ink = np.zeros((h, w), np.uint8)
    assert _connectors(upper, lower, ink, dark) == (False, 0)
    dark[:, 400:402] = 150
    ink[:, 400:402] = 1
    assert _connectors(upper, lower, ink, dark) == (False, 1)


def test_a_brace_spanning_two_staves_alone_joins_them_where_the_start_line_is_lost():
    # a grainy Bravura photo: the start lines came through in pieces, no barline was read down both
    # staves, and each staff was boxed alone (seven boxes for five systems). The brace, a mark at the
    # left end crossing one gap and no other, joins its pair; the gap between systems stays open
    from acai_omr.detect.systems import _group_staves

    tops = [100, 180, 290, 370]
    staves = [_staff(t) for t in tops]
    ink = _staff_lines((500, 800), tops)
    assert [g.kind for g in _group_staves(staves, ink)] == ["single"] * 4
    for top in (100, 290):
        ink[top:top + 121, 86:90] = 1  # each system's brace
    groups = _group_staves(staves, ink)
    assert [(g.kind, len(g.staves)) for g in groups] == [("piano", 2), ("piano", 2)]


def test_a_comb_fitted_to_ledger_lines_in_the_gap_under_a_staff_is_dropped_but_close_staves_stay():
    # ledger lines, beams and stems in the gap between a piano's staves can pass for a short staff 0.6 to
    # 1.5 spaces under the treble; kept, it split the system in two. Staves that close are never engraved;
    # a full staff three spaces under another (a tight system) stays
    from acai_omr.detect.staves import _drop_overlapping

    treble, bass = _staff(100), _staff(220)
    ghost = _staff(155, x0=400, x1=650)  # 1.5 spaces under the treble, a third of its width
    ghost.score = 0.5
    assert [s.top for s in _drop_overlapping([treble, ghost, bass])] == [100, 220]
    near = _staff(146)  # 0.6 spaces under, full width
    near.score = 0.5
    assert [s.top for s in _drop_overlapping([treble, near, bass])] == [100, 220]
    tight = _staff(170)  # 3 spaces under: a real staff
    assert sorted(s.top for s in _drop_overlapping([treble, tight])) == [100, 170]


def test_a_staff_lost_in_a_shadows_grain_is_found_by_averaging_along_its_lines_while_the_rest_stands():
    # a photo with a shadow over its top system: flattened, the shadow's grain comes up with its faint
    # lines and the first read finds only the lit staves. Where no staff was found but ink fills the
    # rows, the lines averaged along the row are read again in the same frame, and the lost staff joins
    from acai_omr.detect.systems import _binarize_all, _deskew_and_find, _fill_in_faint

    flat, sp, tops = _faint_grainy_staves()
    h, w = flat.shape
    page = np.full((h + 150, w), 250, np.uint8)
    page[:h] = flat
    for k in range(5):
        page[int(420 + k * sp), 60:860] = 220  # a third staff under the two, in the light: 30 levels dark
    first = _deskew_and_find(page, _binarize_all(page), sp, 1.0, DetectConfig())
    assert [round(s.top) for s in first[0]] == [420]
    filled = _fill_in_faint(first, sp, 1.0, DetectConfig())
    assert len(filled[0]) == 3
    assert all(abs(st.top - top) <= 1.5 for st, top in zip(filled[0], (*tops, 420)))
    assert filled[0][2] is first[0][0] and filled[1:] == first[1:]  # in the same frame, the lit staff as it was
