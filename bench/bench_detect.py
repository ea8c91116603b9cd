"""Benchmark system detection on engraved pages with known system boxes, from two engravers, four ways.

    poetry run python bench/bench_detect.py --split tune --pages 24 [--source verovio,musescore] [--seed 0] \
        [--dpi 150,200,250,300] [--show-failures] [--overlay /tmp/overlay.png --overlay-page 8] \
        [--overlay-dir docs/detect]

Sources (`--source`, default both):

* verovio: Lieder *dev* pieces engraved by the project's page renderer (`acai_omr.data.pages.render_page`),
  alternately the piano part alone (2-staff systems) and voice and piano (3-staff systems), page 1 or 2.
  The detector was developed on these pages.
* musescore: whole pages engraved by MuseScore 3 (`acai_omr.data.musescore_pages`) in every music font
  it ships (cycled), with sampled staff size, page size, margins, first-system indent, last-system fill,
  a title frame (title, composer, arranger or poet lines), page numbers and footers by chance; pieces
  cycle through Chopin first editions (`**kern`), Lieder *dev* voice + piano, Polish keyboard music
  (`**kern`) and Lieder *dev* piano parts. Engraved pages are cached under
  ~/.cache/acai-omr/bench-pages/ (or $ACAI_BENCH_PAGES), keyed by piece and seed.

On voice + piano pages the true box of a system is its piano pair, the unit the transcription model
reads (brace, clefs, the piano's notes, dynamics and pedal marks; not the voice staff, its lyrics or its
dynamics), for both sources: the box of the piano staves' own ink (their elements drawn alone).

Split (`--split`, printed with the results): every piece belongs to one side by a hash of its name
(a Chopin work with all its editions), and the page seeds of `tune` are even, those of `report` odd.
Tune the detector on `tune`; run `report` once for the figures you publish.

Conditions, each page detected once per condition:

* clean: as rendered (at one of `--dpi`, cycled);
* scan: title text (MuseScore's title frame on first pages; on Verovio pages an arranger line drawn
  just above the first system), a page number where the engraver printed none, the grey scanner bed along some edges, rotated up to +-1.5 degrees,
  then the degradation engine's scan appearance (ink, paper, light, blur, noise, sometimes a
  black-and-white threshold);
* screenshot: the page at screen resolution (72-110 dpi, anti-aliased: MuseScore's SVG rasterized
  at that size, Verovio's page area-resampled), in a UI-grey margin by chance, nothing else;
* photo: page curl (the engine's curl step), laid on a darker table, rotated up to +-3 degrees, mild
  perspective, the engine's photo appearance, by chance a partial shadow and low light, then two JPEG
  compressions.

The ground truth follows every geometric step: each system's ink pixels are moved through it and
boxed again.

Figures: recall and precision of systems matched at IoU >= 0.5 (greedy by best IoU), the share of
matched boxes that contain their system's ink (nothing cut off, 2 px tolerance), the share that are
tight (reaching no more than two staff spaces above or below their system's ink: no title, credit
line, lyrics or neighbour's notes taken in), and detection seconds
per page: wall clock, process CPU and the slowest page; by source and condition, by music font, by
page kind, and overall.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acai_omr.data.pages import PAGE_RATIOS, render_page, sample_page_options  # noqa: E402
from acai_omr.data.verovio_render import STAFF_SPACE_SVG_PX  # noqa: E402
from acai_omr.detect import detect_systems  # noqa: E402
from acai_omr.paths import shared_dir  # noqa: E402

PAPER_WIDTH_IN = {"a4": 8.27, "letter": 8.5}
Box = tuple[int, int, int, int]
SOURCES = ("verovio", "musescore")
CONDITIONS = ("clean", "scan", "screenshot", "photo")
SPLITS = ("tune", "report")
SCREEN_DPI = (72.0, 110.0)


# ------------------------------------------------------------------------------------------ split

def split_of(path: Path) -> str:
    """The side of the split a piece is on: a stable hash of its group's name (`piece_group`: a Chopin
    work with all its editions, else the file)."""
    from acai_omr.data.musescore_pages import piece_group

    return SPLITS[int(hashlib.sha1(f"bench-detect/{piece_group(path)}".encode()).hexdigest(), 16) % 2]


def page_seed(split: str, seed: int, source: str, index: int) -> int:
    """A page's seed: even on the tune side, odd on the report side, so the two never share one."""
    h = int(hashlib.sha1(f"{source}/{seed}/{index}".encode()).hexdigest(), 16) % 10 ** 8
    return 2 * h + SPLITS.index(split)


@dataclass
class BenchPage:
    source: str
    name: str
    dpi: float
    gray: np.ndarray
    boxes: list[Box]
    font: str
    kind: str  # piano | voice+piano
    space: float  # staff space in px (about)
    screen: Callable[[float], tuple[np.ndarray, list[Box]]]  # the page at another dpi
    has_title: bool = False
    has_page_number: bool = False


# ------------------------------------------------------------------------------------------ Verovio

def staff_space_for_dpi(seed: int, dpi: float) -> float:
    """The staff space (px) that makes `render_page(..., seed=seed)` come out at `dpi`.

    render_page draws its page options from `random.Random(seed)` first; the page width in
    Verovio units and its shape (A4 or letter) fix the paper width in inches.
    """
    options = sample_page_options(random.Random(seed))
    ratio = options["pageHeight"] / options["pageWidth"]
    paper = min(PAGE_RATIOS, key=lambda k: abs(PAGE_RATIOS[k] - ratio))
    width_px = dpi * PAPER_WIDTH_IN[paper]
    return width_px * STAFF_SPACE_SVG_PX / options["pageWidth"]


def _resampled(gray: np.ndarray, boxes: list[Box], factor: float) -> tuple[np.ndarray, list[Box]]:
    """The page area-resampled by `factor` (what a renderer draws at that size), boxes scaled with it."""
    h, w = gray.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return out, [(int(np.floor(x0 * factor)), int(np.floor(y0 * factor)), int(np.ceil(x1 * factor)),
                  int(np.ceil(y1 * factor))) for x0, y0, x1, y1 in boxes]


def verovio_pages(n: int, dpis: list[int], split: str, seed: int) -> Iterator[BenchPage]:
    """`n` Verovio-engraved Lieder dev pages of one side of the split."""
    folder = shared_dir() / "corpora" / "lieder" / "dev"
    pieces = [p for p in sorted(folder.glob("*.mxl")) if split_of(p) == split]
    if not pieces:
        raise SystemExit(f"no Lieder dev pieces under {folder}")
    rng = random.Random(f"verovio/{split}/{seed}")
    rng.shuffle(pieces)
    done = 0
    for index, path in enumerate(pieces * 3):
        if done >= n:
            return
        dpi = dpis[done % len(dpis)]
        seed_here = page_seed(split, seed, "verovio", index)
        space = staff_space_for_dpi(seed_here, dpi)
        keep_all_parts = done % 2 == 1  # voice + piano on every other page
        page_no = rng.choice([0, 0, 1])
        try:
            try:
                image, boxes = render_page(path, seed=seed_here, page=page_no, staff_space_px=space,
                                           keep_all_parts=keep_all_parts)
            except ValueError:
                if page_no == 0:
                    raise
                page_no = 0
                image, boxes = render_page(path, seed=seed_here, page=0, staff_space_px=space,
                                           keep_all_parts=keep_all_parts)
        except Exception as exc:  # a piece Verovio or the piano-part finder cannot handle
            print(f"  skip {path.name}: {type(exc).__name__}: {str(exc)[:80]}", file=sys.stderr)
            continue
        if not boxes:
            continue
        done += 1
        kind = "voice+piano" if keep_all_parts else "piano"
        gray = np.asarray(image, np.uint8)
        font = sample_page_options(random.Random(seed_here))["font"]
        yield BenchPage("verovio", f"{path.stem} p{page_no + 1} {kind} {font} sp={space:.1f}", dpi, gray, boxes,
                        font, kind, space, lambda d, g=gray, b=boxes, dpi=dpi: _resampled(g, b, d / dpi))


# ------------------------------------------------------------------------------------------ MuseScore

MUSESCORE_CYCLE = ("chopin", "lieder-vp", "polish", "lieder-piano")


def _musescore_pieces(split: str, seed: int) -> dict[str, list[Path]]:
    """Per corpus of the cycle, its pieces on this side of the split, shuffled (one file per Chopin work)."""
    from acai_omr.data.ingest import chopin_work

    corpora = shared_dir() / "corpora"
    rng = random.Random(f"musescore/{split}/{seed}")
    lieder = [p for p in sorted((corpora / "lieder" / "dev").glob("*.mxl"))
              if split_of(p) == split]
    works: dict[str, list[Path]] = defaultdict(list)
    for p in sorted((corpora / "chopin-first-editions").glob("*.krn")):
        works[chopin_work(p.name)].append(p)
    chopin = [rng.choice(files) for work, files in sorted(works.items()) if split_of(files[0]) == split]
    polish = [p for p in sorted((corpora / "polish" / "keyboard").glob("*.krn"))
              if split_of(p) == split]
    out = {"chopin": chopin, "lieder-vp": list(lieder), "polish": polish, "lieder-piano": list(lieder)}
    for pieces in out.values():
        rng.shuffle(pieces)
    return out


RENDER_TIMES: list[float] = []  # seconds per MuseScore page not in the cache (engraved, or its truth derived again)


def musescore_pages(n: int, dpis: list[int], split: str, seed: int, batch: int = 6) -> Iterator[BenchPage]:
    """`n` MuseScore-engraved pages of one side of the split (from the cache where rendered before)."""
    from acai_omr.data.musescore_pages import PageRequest, cached_page, engrave_pages, fonts

    names = fonts()
    pieces = _musescore_pieces(split, seed)
    cursor = {k: 0 for k in pieces}
    slots = list(range(n))  # page slots still to fill
    done = 0
    failures = 0
    while slots and failures < 3 * n:
        requests, taken = [], []
        for slot in slots[:batch]:
            corpus = MUSESCORE_CYCLE[slot % len(MUSESCORE_CYCLE)]
            if cursor[corpus] >= len(pieces[corpus]):
                corpus = "lieder-vp" if corpus != "lieder-vp" else "lieder-piano"
            if cursor[corpus] >= len(pieces[corpus]):
                continue
            path = pieces[corpus][cursor[corpus]]
            cursor[corpus] += 1
            kind = "voice+piano" if corpus == "lieder-vp" else "piano"
            font = names[(slot + slot // len(MUSESCORE_CYCLE)) % len(names)]
            requests.append(PageRequest(path, kind, font, page_seed(split, seed, "musescore", slot)))
            taken.append(slot)
        if not requests:
            break
        fresh = sum(cached_page(r) is None for r in requests)
        t0 = time.perf_counter()
        results = engrave_pages(requests)
        if fresh:
            RENDER_TIMES.extend([(time.perf_counter() - t0) / fresh] * fresh)
        for slot, request, page in zip(taken, requests, results):
            if isinstance(page, str):
                failures += 1
                print(f"  skip {request.path.name} ({request.kind}): {page[:120]}", file=sys.stderr)
                continue
            slots.remove(slot)
            dpi = dpis[done % len(dpis)]
            done += 1
            gray, boxes = page.render(dpi)
            space = float(page.style["Spatium"]) / 25.4 * dpi  # MuseScore's staff space is in mm
            numbers = 'class="Page"' in page.svg  # MuseScore's header/footer: page number, copyright line
            yield BenchPage("musescore", page.name, dpi, gray, boxes, page.font, page.kind, space,
                            page.render, has_title=page.page == 0, has_page_number=numbers)


# ------------------------------------------------------------------------------------------ conditions

def _points_of(gray: np.ndarray, boxes: list[Box], ink_level: int = 200) -> list[np.ndarray]:
    """Per true box, the centres of its ink pixels (x, y) on the clean page."""
    out = []
    for x0, y0, x1, y1 in boxes:
        ys, xs = np.nonzero(gray[y0:y1, x0:x1] < ink_level)
        out.append(np.stack([xs + x0 + 0.5, ys + y0 + 0.5], axis=1).astype(np.float64))
    return out


def _boxes_of(points: list[np.ndarray], shape: tuple[int, int]) -> list[Box]:
    """The pixel box of each moved point set (a pixel reaches half a pixel around its centre), clipped."""
    h, w = shape
    out = []
    for pts in points:
        if len(pts) < 3:
            continue
        lo, hi = pts.min(axis=0) - 0.5, pts.max(axis=0) + 0.5
        box = (int(max(0, np.floor(lo[0]))), int(max(0, np.floor(lo[1]))),
               int(min(w, np.ceil(hi[0]))), int(min(h, np.ceil(hi[1]))))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return sorted(out, key=lambda b: b[1])


def _warp_boxes(gray: np.ndarray, boxes: list[Box], M: np.ndarray, offset: int, ink_level: int = 200) -> list[Box]:
    """Each true box after the page warp: the box of its ink's convex hull mapped through M."""
    out = []
    for x0, y0, x1, y1 in boxes:
        ys, xs = np.nonzero(gray[y0:y1, x0:x1] < ink_level)
        if xs.size < 3:
            continue
        pts = np.stack([xs + x0 + offset, ys + y0 + offset], axis=1).astype(np.float32)
        hull = cv2.convexHull(pts).reshape(-1, 1, 2)
        mapped = cv2.perspectiveTransform(hull, M).reshape(-1, 2)
        lo, hi = mapped.min(axis=0), mapped.max(axis=0)
        out.append((int(np.floor(lo[0])), int(np.floor(lo[1])), int(np.ceil(hi[0])) + 1, int(np.ceil(hi[1])) + 1))
    return sorted(out, key=lambda b: b[1])


def _move(points: list[np.ndarray], M: np.ndarray) -> list[np.ndarray]:
    """Points through a 3x3 warp as cv2.warpPerspective moves the pixels under them (pixel centres)."""
    return [cv2.perspectiveTransform((p - 0.5)[None], M)[0] + 0.5 if len(p) else p for p in points]


def _font(size: float, italic: bool = False, bold: bool = False) -> ImageFont.ImageFont:
    name = "DejaVuSerif" + ("-BoldItalic" if bold and italic else "-Bold" if bold else "-Italic" if italic else "")
    for candidate in (f"/usr/share/fonts/truetype/dejavu/{name}.ttf", f"{name}.ttf"):
        try:
            return ImageFont.truetype(candidate, max(6, int(size)))
        except OSError:
            continue
    return ImageFont.load_default()


def _free(boxes: list[Box], box: tuple[float, float, float, float], pad: float) -> bool:
    return all(box[2] + pad <= b[0] or box[0] - pad >= b[2] or box[3] + pad <= b[1] or box[1] - pad >= b[3]
               for b in boxes)


def add_furniture(gray: np.ndarray, boxes: list[Box], page: BenchPage, rng: np.random.Generator) -> np.ndarray:
    """A scanned edition's text: an arranger line just above the first system (when the page has no
    title of its own and there is room), and a page number where the engraver printed none."""
    image = Image.fromarray(gray)
    draw = ImageDraw.Draw(image)
    h, w = gray.shape
    sp = page.space
    if page.source == "verovio" and not page.has_title and boxes:
        first = min(boxes, key=lambda b: b[1])
        size = rng.uniform(1.3, 2.2) * sp
        text = str(rng.choice(["Transcribed by Sergei Rachmaninoff", "Arranged for piano by Franz Liszt",
                               "Revised and fingered by Carl Mikuli", "Edited by Ignacy J. Paderewski"]))
        font = _font(size, italic=bool(rng.random() < 0.6))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        bottom = first[1] - rng.uniform(0.8, 2.5) * sp
        left = first[2] - (x1 - x0) if rng.random() < 0.6 else first[0]  # right-aligned, or left
        top = bottom - (y1 - y0)
        if top > 0.01 * h:
            draw.text((left - x0, top - y0), text, fill=int(rng.integers(0, 40)), font=font)
            page.has_title = True
    if not page.has_page_number:
        number = str(int(rng.integers(2, 60)))
        font = _font(rng.uniform(1.4, 2.2) * sp)
        x0, y0, x1, y1 = draw.textbbox((0, 0), number, font=font)
        top_place = rng.random() < 0.5
        y = (rng.uniform(0.02, 0.05) if top_place else rng.uniform(0.94, 0.97)) * h
        x = rng.choice([0.08, 0.5, 0.92]) * w - (x1 - x0) / 2
        if _free(boxes, (x, y, x + x1 - x0, y + y1 - y0), sp):
            draw.text((x - x0, y - y0), number, fill=0, font=font)
    return np.asarray(image, np.uint8)


def _appearance(warped: np.ndarray, rng: np.random.Generator, photo: bool) -> tuple[np.ndarray, str]:
    """The degradation engine's scan or photo appearance (no system-level geometry); photos get a
    partial shadow (60%), low light (40%) and two JPEG compressions on top of the engine's plan."""
    from acai_omr.config import DegradeConfig
    from acai_omr.data.degrade import apply_appearance, sample_plan

    cfg = DegradeConfig(p_photo=1.0 if photo else 0.0, p_clean=0.0)
    plan = sample_plan(rng, cfg, *warped.shape)
    plan.geometry = []  # the page geometry is the one the ground truth follows
    steps = [s for s in plan.appearance if not (photo and s[0] == "jpeg")]
    if photo:
        if not any(name == "shadow" for name, _ in steps) and rng.random() < 0.6:
            shadow = {"darkness": float(rng.uniform(0.25, 0.6)), "softness": float(rng.uniform(0.02, 0.25)),
                      "point": rng.uniform(0.15, 0.85, 2).tolist(), "angle": float(rng.uniform(0, 2 * np.pi)),
                      "corner_angle": float(rng.uniform(0.4, 1.2)) if rng.random() < 0.5 else None}
            steps.insert(max(0, len(steps) - 1), ("shadow", shadow))
        if rng.random() < 0.4:  # low light: dim exposure, the camera's gain lifts the noise
            steps.insert(max(0, len(steps) - 1), ("gamma", {"gamma": float(rng.uniform(1.2, 1.8)), "black": 0.0,
                                                             "white": float(rng.uniform(0.45, 0.7)),
                                                             "auto_exposure": False}))
            steps.insert(max(0, len(steps) - 1), ("noise", {"sigma": float(rng.uniform(0.03, 0.07)), "shot": 0.8,
                                                             "grain": 2, "specks": 0.0}))
        steps += [("jpeg", {"quality": int(rng.integers(70, 93))}), ("jpeg", {"quality": int(rng.integers(35, 80))})]
    out = apply_appearance(warped, rng, steps)
    described = " ".join(name + ("(" + ",".join(f"{k}={v:.2g}" for k, v in params.items() if isinstance(v, float)) + ")"
                                 if any(isinstance(v, float) for v in params.values()) else "")
                         for name, params in steps)
    return out, f"{'photo' if photo else 'scan'}: {described}"


def degrade_page(gray: np.ndarray, boxes: list[Box], rng: np.random.Generator, style: str = "photo",
                 page: BenchPage | None = None) -> tuple[np.ndarray, list[Box], str]:
    """A scanned, photographed or screen-captured copy of the page, its moved ground truth, and a
    one-line description of what was applied (see the module doc for each condition)."""
    from acai_omr.data.degrade import apply_geometry_with_points

    if style == "screenshot":
        dpi = float(rng.uniform(*SCREEN_DPI))
        if page is not None:
            shot, shot_boxes = page.screen(dpi)
        else:
            shot, shot_boxes = _resampled(gray, boxes, dpi / 200.0)
        how = f"screenshot: {dpi:.0f} dpi"
        if rng.random() < 0.7:  # the page inside the editor's grey
            sides = [int(v) for v in rng.integers(0, 80, 4)]
            ui = int(rng.integers(150, 236))
            shot = cv2.copyMakeBorder(shot, *sides, cv2.BORDER_CONSTANT, value=ui)
            shot_boxes = [(x0 + sides[2], y0 + sides[0], x1 + sides[2], y1 + sides[0]) for x0, y0, x1, y1 in shot_boxes]
            if sides[0] >= 30 and rng.random() < 0.5:  # a toolbar
                shot[: sides[0] // 2] = int(rng.integers(40, 90))
            how += f", UI grey {ui} margin {sides}"
        return shot, shot_boxes, how

    photo = style == "photo"
    points = _points_of(gray, boxes)
    if page is not None and style == "scan":
        gray = add_furniture(gray, boxes, page, rng)
    geometry = ""
    if photo and rng.random() < 0.7:  # page curl, every column of the page bent by a smooth amount
        curl = {"amplitude": float(rng.uniform(0.004, 0.02) * rng.choice([-1, 1])),
                "shape": "edge" if rng.random() < 0.5 else "wave"}
        if curl["shape"] == "edge":
            curl.update(side=str(rng.choice(["left", "right"])), power=float(rng.uniform(1.5, 4.0)))
        else:
            curl.update(period=float(rng.uniform(0.8, 2.5)), phase=float(rng.uniform(0, 2 * np.pi)))
        sizes = [len(p) for p in points]
        gray, moved = apply_geometry_with_points(gray, [("curl", curl)], np.concatenate(points + [np.zeros((0, 2))]))
        points = np.split(moved, np.cumsum(sizes)[:-1]) if sizes else []
        geometry = f"curl({curl['shape']},{curl['amplitude']:.3f}) "

    h, w = gray.shape
    if photo:
        pads = [int(rng.uniform(0.0, 0.08) * max(h, w))] * 4
        background = int(rng.uniform(40, 120))
        jitter_on = pads[0] > 0
        angle = rng.uniform(-3, 3)
    else:  # the scanner bed shows along some edges
        pads = [int(rng.uniform(0.005, 0.04) * w) if rng.random() < 0.5 else 0 for _ in range(4)]
        background = int(rng.uniform(90, 190))
        jitter_on = False
        angle = rng.uniform(-1.5, 1.5)
    top, bottom, left, right = pads
    H, W = h + top + bottom, w + left + right
    canvas = np.full((H, W), background, np.uint8)
    shift = np.array([[1, 0, left], [0, 1, top], [0, 0, 1]], np.float64)
    rot = np.vstack([cv2.getRotationMatrix2D((left + w / 2, top + h / 2), angle, 1.0), [0, 0, 1]])
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    jitter = ((rng.uniform(-0.02, 0.02, (4, 2)) * [W, H]).astype(np.float32) if jitter_on
              else np.zeros((4, 2), np.float32))
    M = cv2.getPerspectiveTransform(src, src + jitter) @ rot @ shift
    if photo:
        warped = cv2.warpPerspective(gray, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=background)
    else:  # the page turns on the bed; the bed around it does not
        warped = cv2.warpPerspective(gray, M, (W, H), dst=canvas, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_TRANSPARENT)
    warped_boxes = _boxes_of(_move(points, M), warped.shape)
    out, how = _appearance(warped, rng, photo)
    return out, warped_boxes, f"{geometry}rot={angle:.2f} pads={pads} bg={background} {how}"


# ------------------------------------------------------------------------------------------ scoring

def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


TIGHT_SPACES = 2.0  # how far past its system's ink, above or below, a box may reach and still be tight


def score(gt: list, pred: list, tol: float = 2.0, space: float = 0.0) -> tuple[int, int, int]:
    """(matched at IoU >= 0.5, matched boxes containing their ground truth, matched boxes reaching no
    further than TIGHT_SPACES staff spaces above and below it) by greedy best IoU."""
    pairs = sorted(((iou(g, p), i, j) for i, g in enumerate(gt) for j, p in enumerate(pred)), reverse=True)
    used_g, used_p, matched, contained, tight = set(), set(), 0, 0, 0
    for v, i, j in pairs:
        if v < 0.5:
            break
        if i in used_g or j in used_p:
            continue
        used_g.add(i)
        used_p.add(j)
        matched += 1
        g, p = gt[i], pred[j]
        if p[0] <= g[0] + tol and p[1] <= g[1] + tol and p[2] >= g[2] - tol and p[3] >= g[3] - tol:
            contained += 1
        if not _loose_sides(g, p, space):
            tight += 1
    return matched, contained, tight


def _loose_sides(g, p, space: float) -> list[str]:
    """The sides (top, bottom) where box p reaches past truth g by over TIGHT_SPACES; none where the
    staff space is unknown (0)."""
    if space <= 0:
        return []
    reach = TIGHT_SPACES * space + 2.0
    return [side for side, bad in (("top", p[1] < g[1] - reach), ("bottom", p[3] > g[3] + reach)) if bad]


def failure_kinds(gt: list, pred: list, tol: float = 2.0, space: float = 0.0) -> list[str]:
    """What went wrong on one page, in words: missed / merged / split systems, extra boxes, cut or
    loose boxes."""
    kinds = []
    for g in gt:
        overlaps = [p for p in pred if iou(g, p) > 0.05]
        best = max((iou(g, p) for p in pred), default=0.0)
        if not overlaps:
            kinds.append("missed")
        elif best < 0.5:
            big = [p for p in overlaps if (p[3] - p[1]) > 1.5 * (g[3] - g[1])]
            kinds.append("merged" if big else ("split" if len(overlaps) > 1 else "poor-fit"))
    for p in pred:
        if not any(iou(g, p) > 0.05 for g in gt):
            kinds.append("extra")
    for g in gt:
        p = max(pred, key=lambda p: iou(g, p), default=None)
        if p is not None and iou(g, p) >= 0.5:
            cut = [side for side, bad in (("left", p[0] > g[0] + tol), ("top", p[1] > g[1] + tol),
                                          ("right", p[2] < g[2] - tol), ("bottom", p[3] < g[3] - tol)) if bad]
            if cut:
                kinds.append("cut-" + "/".join(cut))
            loose = _loose_sides(g, p, space)
            if loose:
                kinds.append("loose-" + "/".join(loose))
    return kinds


def save_overlay(gray: np.ndarray, result, gt: list, path: Path, max_side: int = 1000) -> None:
    """The page with true boxes (green) and detections (per-kind colour, staves cyan), downscaled.

    A .png gets a small fixed palette (16 greys and the drawing colours, no dithering), which
    keeps a noisy photo's overlay to a few hundred kB; anything else is saved as it is.
    """
    from acai_omr.detect.draw import KIND_COLOURS, draw_detections

    image = draw_detections(gray, result, truth=[tuple(float(v) for v in g) for g in gt])
    f = min(1.0, max_side / max(image.size))
    if f < 1.0:
        image = image.resize((round(image.width * f), round(image.height * f)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".png":
        image.save(path, quality=85)
        return
    colours = [(v, v, v) for v in np.linspace(0, 255, 16).astype(int)]
    colours += [(0, 160, 0), (0, 170, 220), *KIND_COLOURS.values()]
    palette = Image.new("P", (1, 1))
    palette.putpalette([c for rgb in colours for c in rgb] + [0] * (768 - 3 * len(colours)))
    image.quantize(palette=palette, dither=Image.Dither.NONE).save(path, optimize=True)


def _space_on(page: BenchPage, boxes: list) -> float:
    """The page's staff space where its systems now are: a screenshot or photo is scaled."""
    scale = [(b[3] - b[1]) / (a[3] - a[1]) for a, b in zip(page.boxes, boxes) if a[3] > a[1]]
    return page.space * float(np.median(scale)) if scale else page.space


class Tally:
    def __init__(self) -> None:
        self.gt = self.pred = self.matched = self.contained = self.tight = self.pages = 0
        self.seconds = self.cpu = self.worst = 0.0

    def add(self, gt: int, pred: int, matched: int, contained: int, tight: int, seconds: float, cpu: float) -> None:
        self.gt += gt
        self.pred += pred
        self.matched += matched
        self.contained += contained
        self.tight += tight
        self.seconds += seconds
        self.cpu += cpu
        self.worst = max(self.worst, seconds)
        self.pages += 1

    def row(self, label: str, width: int) -> str:
        return (f"{label:{width}s} {self.pages:5d} {self.gt:7d} {self.pred:5d} {self.matched / max(self.gt, 1):7.4f} "
                f"{self.matched / max(self.pred, 1):7.4f} {self.contained / max(self.matched, 1):7.4f} "
                f"{self.tight / max(self.matched, 1):7.4f} "
                f"{self.seconds / max(self.pages, 1):6.3f} {self.cpu / max(self.pages, 1):6.3f} {self.worst:6.3f}")

    def short(self) -> str:
        if not self.pages:
            return f"{'-':>17s}"
        return f"{self.matched / max(self.gt, 1):.3f}/{self.matched / max(self.pred, 1):.3f} ({self.gt:3d})"


def print_table(title: str, rows: list[tuple[str, Tally]]) -> None:
    width = max([len(label) for label, _ in rows] + [6])
    print(title)
    print(f"{'':{width}s} {'pages':>5s} {'systems':>7s} {'pred':>5s} {'recall':>7s} {'precis.':>7s} {'contain':>7s} "
          f"{'tight':>7s} {'s/page':>6s} {'cpu s':>6s} {'max s':>6s}")
    for label, tally in rows:
        if tally.pages:
            print(tally.row(label, width))


def print_matrix(title: str, tallies: dict, keys: list[str]) -> None:
    """recall/precision (systems) per key and condition."""
    width = max([len(k) for k in keys] + [6])
    print(title)
    print(f"{'':{width}s} " + " ".join(f"{c:>17s}" for c in CONDITIONS))
    for key in keys:
        print(f"{key:{width}s} " + " ".join(f"{tallies[(key, c)].short():>17s}" for c in CONDITIONS))


# ------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=24, help="pages per source")
    ap.add_argument("--source", default="verovio,musescore", help="comma-separated: verovio, musescore")
    ap.add_argument("--split", choices=SPLITS, default="tune",
                    help="which pieces and seeds: tune (to improve the detector on) or report (held out)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset of " + ", ".join(CONDITIONS))
    ap.add_argument("--dpi", default="150,200,250,300", help="page resolutions, cycled")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overlay", type=Path, help="write one photo-degraded page with its detections here")
    ap.add_argument("--overlay-page", type=int, default=1, help="which page (1-based, per source) the overlays show")
    ap.add_argument("--overlay-source", default="verovio", help="the source --overlay takes its page from")
    ap.add_argument("--overlay-dir", type=Path,
                    help="write one overlay per (source, condition) here: detect-<source>-<condition>.png")
    ap.add_argument("--show-failures", action="store_true",
                    help="list pages with misses, false or cut-off detections; overlays go to /tmp/detect_fail_*")
    args = ap.parse_args(argv)
    cv2.setNumThreads(2)
    dpis = [int(d) for d in args.dpi.split(",")]
    sources = [s.strip() for s in args.source.split(",") if s.strip()]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    for s in sources:
        if s not in SOURCES:
            ap.error(f"unknown source {s!r}: {', '.join(SOURCES)}")
    for c in conditions:
        if c not in CONDITIONS:
            ap.error(f"unknown condition {c!r}: {', '.join(CONDITIONS)}")
    if "musescore" in sources:
        from acai_omr.render.musescore import find_mscore

        if find_mscore() is None:
            print("MuseScore 3 not found: the musescore source is skipped", file=sys.stderr)
            sources.remove("musescore")

    tallies: dict[tuple, Tally] = defaultdict(Tally)
    fonts_seen: dict[str, set] = defaultdict(set)
    failures_seen: dict[str, int] = defaultdict(int)
    generators = {"verovio": verovio_pages, "musescore": musescore_pages}
    render_seconds: dict[str, list[float]] = defaultdict(list)
    for source in sources:
        done = 0
        t_render = time.perf_counter()
        for page in generators[source](args.pages, dpis, args.split, args.seed):
            render_seconds[source].append(time.perf_counter() - t_render)
            done += 1
            fonts_seen[source].add(page.font)
            for k, condition in enumerate(CONDITIONS):
                if condition not in conditions:
                    continue
                salt = [SPLITS.index(args.split), args.seed, SOURCES.index(source), done, k]
                rng = np.random.default_rng(salt)  # independent of the other conditions
                if condition == "clean":
                    img, boxes, how = page.gray, page.boxes, ""
                else:
                    img, boxes, how = degrade_page(page.gray, page.boxes, rng, condition, page)
                t0, c0 = time.perf_counter(), time.process_time()
                result = detect_systems(Image.fromarray(img))
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                pred = [(b.x0, b.y0, b.x1, b.y1) for b in result.boxes]
                space = _space_on(page, boxes)
                m, c, t = score(boxes, pred, space=space)
                for key in ((source, condition), ("all", condition), ("all", "all"), (source, "all"),
                            (f"{source}/{page.font}", condition), (f"{source}/{page.kind}", condition)):
                    tallies[key].add(len(boxes), len(pred), m, c, t, dt, dc)
                failed = m < len(boxes) or m < len(pred) or c < m or t < m
                if args.show_failures and failed:
                    kinds = failure_kinds(boxes, pred, space=space)
                    for kind in kinds:
                        failures_seen[kind] += 1
                    path = Path(f"/tmp/detect_fail_{source}_{done}_{condition}.jpg")
                    print(f"  {source} {done:2d} {condition:10s} {page.name} dpi={page.dpi} {img.shape[1]}x{img.shape[0]}: "
                          f"gt={len(boxes)} pred={len(pred)} matched={m} contained={c} [{', '.join(kinds)}] "
                          f"{result.messages}" + (f"\n      {how}" if how else "") + f"\n      -> {path}", flush=True)
                    save_overlay(img, result, boxes, path, max_side=1600)
                if args.overlay and condition == "photo" and source == args.overlay_source and done == args.overlay_page:
                    save_overlay(img, result, boxes, args.overlay)
                if args.overlay_dir and done == args.overlay_page:
                    save_overlay(img, result, boxes, args.overlay_dir / f"detect-{source}-{condition}.png")
            t_render = time.perf_counter()

    # ------------------------------------------------------------------ report
    print(f"\nsplit: {args.split} (pieces by a hash of their name, Chopin by work; {args.split} page seeds are "
          f"{'even' if args.split == 'tune' else 'odd'}), seed {args.seed}, dpi {args.dpi}, "
          f"{args.pages} pages per source, IoU >= 0.5")
    rows = []
    for source in sources:
        rows += [(f"{source} {c}", tallies[(source, c)]) for c in conditions]
        rows.append((f"{source} all", tallies[(source, "all")]))
    rows += [(f"all {c}", tallies[("all", c)]) for c in conditions]
    rows.append(("overall", tallies[("all", "all")]))
    print_table("\nby source and condition", rows)
    keys = [f"{s}/{f}" for s in sources for f in sorted(fonts_seen[s])]
    print_matrix("\nrecall/precision (systems) by music font", tallies, keys)
    print_matrix("\nrecall/precision (systems) by page kind", tallies,
                 [f"{s}/{k}" for s in sources for k in ("piano", "voice+piano")])
    for source in sources:
        times = render_seconds[source]
        if times:
            print(f"\n{source}: {len(times)} pages, page preparation {np.mean(times):.2f} s/page (max {max(times):.1f})",
                  end="")
    if RENDER_TIMES:
        print(f"; {len(RENDER_TIMES)} MuseScore pages made anew (engraved, or their truth derived again from an "
              f"older cache) at {np.mean(RENDER_TIMES):.2f} s/page, the rest from the cache", end="")
    print()
    if failures_seen:
        print("failure kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(failures_seen.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
