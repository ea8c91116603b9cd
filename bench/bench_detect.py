"""Benchmark system detection on engraved pages with known system boxes: clean, photographed, scanned.

    .venv/bin/python bench/bench_detect.py --pages 36 [--seed 0] [--dpi 150,200,250,300] \
        [--overlay docs/detect-overlay.png --overlay-page 8] [--show-failures]

Pages: Lieder *dev* pieces engraved by the project's page renderer
(`acai_omr.data.pages.render_page`), alternately the piano part alone (2-staff systems) and voice
and piano (3-staff systems), page 1 or 2. Each page's staff space is chosen so the page comes out
at one of the `--dpi` resolutions (A4 or letter width), cycled. The ground-truth box of a system
is the box of its own ink (the renderer rasterizes every system alone).

Each page is detected three times:

* clean: as rendered;
* photo: laid on a darker table, rotated up to +-3 degrees, seen in mild perspective, then given
  the degradation engine's photo appearance (`acai_omr.data.degrade` with p_photo=1: light,
  shadow, blur, motion, low resolution, sensor noise, tone curve, JPEG...);
* scan: rotated up to +-1.5 degrees, filling the frame, then the engine's scan appearance (ink,
  paper, even light, blur, low resolution, noise, and in 20% of scans a black-and-white
  threshold, which at 150 dpi can erase thin staff lines).

The engine's system-level geometry steps are skipped; the ground truth follows the page's own
warp (the convex hull of each system's ink is mapped through it and boxed again).

Figures: recall and precision of systems matched at IoU >= 0.5 (greedy by best IoU), the share
of matched boxes that contain their system's ink (nothing cut off, 2 px tolerance), and detection
seconds per page: wall clock, process CPU, and the slowest page.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acai_omr.data.pages import PAGE_RATIOS, render_page, sample_page_options  # noqa: E402
from acai_omr.data.verovio_render import STAFF_SPACE_SVG_PX  # noqa: E402
from acai_omr.detect import detect_systems  # noqa: E402
from acai_omr.paths import shared_dir  # noqa: E402

PAPER_WIDTH_IN = {"a4": 8.27, "letter": 8.5}
Box = tuple[int, int, int, int]


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


def pages(n: int, dpis: list[int], seed: int):
    """Yield (name, dpi, gray page uint8, true boxes) for `n` rendered Lieder dev pages."""
    pieces = sorted((shared_dir() / "corpora" / "lieder" / "dev").glob("*.mxl"))
    if not pieces:
        raise SystemExit(f"no Lieder dev pieces under {shared_dir() / 'corpora' / 'lieder' / 'dev'}")
    rng = random.Random(seed)
    rng.shuffle(pieces)
    done = 0
    for index, path in enumerate(pieces * 3):
        if done >= n:
            return
        dpi = dpis[done % len(dpis)]
        page_seed = seed * 100_003 + index
        space = staff_space_for_dpi(page_seed, dpi)
        keep_all_parts = done % 2 == 1  # voice + piano on every other page
        page_no = rng.choice([0, 0, 1])
        try:
            try:
                image, boxes = render_page(path, seed=page_seed, page=page_no, staff_space_px=space,
                                           keep_all_parts=keep_all_parts)
            except ValueError:
                if page_no == 0:
                    raise
                page_no = 0
                image, boxes = render_page(path, seed=page_seed, page=0, staff_space_px=space,
                                           keep_all_parts=keep_all_parts)
        except Exception as exc:  # a piece Verovio or the piano-part finder cannot handle
            print(f"  skip {path.name}: {type(exc).__name__}: {str(exc)[:80]}", file=sys.stderr)
            continue
        if not boxes:
            continue
        done += 1
        parts = "voice+piano" if keep_all_parts else "piano"
        yield f"{path.stem} p{page_no + 1} {parts} sp={space:.1f}", dpi, np.asarray(image, np.uint8), boxes


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


def degrade_page(gray: np.ndarray, boxes: list[Box], rng: np.random.Generator,
                 style: str = "photo") -> tuple[np.ndarray, list[Box], str]:
    """A photographed (or scanned) copy of the page, its warped ground truth, and a one-line
    description of the appearance steps applied.

    photo: the page lies on a darker table, rotated up to +-3 degrees, seen in mild perspective,
    then gets the degradation engine's photo appearance (light, shadow, blur, motion, low
    resolution, sensor noise, tone curve, JPEG...). scan: the page fills the frame, rotated up to
    +-1.5 degrees, then the engine's scan appearance (ink, paper, even light, blur, noise, and in
    ~25% of scans a hard black-and-white threshold).
    """
    from acai_omr.config import DegradeConfig
    from acai_omr.data.degrade import degrade, sample_plan

    h, w = gray.shape
    photo = style == "photo"
    pad = int(rng.uniform(0.0, 0.08) * max(h, w)) if photo else 0
    table = int(rng.uniform(40, 120)) if photo else 255
    canvas = np.full((h + 2 * pad, w + 2 * pad), table, np.uint8)
    canvas[pad:pad + h, pad:pad + w] = gray
    H, W = canvas.shape
    angle = rng.uniform(-3, 3) if photo else rng.uniform(-1.5, 1.5)
    rot = np.vstack([cv2.getRotationMatrix2D((W / 2, H / 2), angle, 1.0), [0, 0, 1]])
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
    jitter = ((rng.uniform(-0.02, 0.02, (4, 2)) * [W, H]).astype(np.float32) if pad > 0
              else np.zeros((4, 2), np.float32))
    persp = cv2.getPerspectiveTransform(src, src + jitter)
    M = persp @ rot
    warped = cv2.warpPerspective(canvas, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=table)
    warped_boxes = _warp_boxes(gray, boxes, M, pad)
    cfg = DegradeConfig(p_photo=1.0 if photo else 0.0)
    plan = sample_plan(rng, cfg, *warped.shape)
    plan.geometry = []  # the page geometry above is the one the ground truth follows
    steps = " ".join(name + ("(" + ",".join(f"{k}={v:.2g}" for k, v in params.items() if isinstance(v, float)) + ")"
                             if any(isinstance(v, float) for v in params.values()) else "")
                     for name, params in plan.appearance)
    return degrade(warped, rng, cfg, plan=plan), warped_boxes, f"{plan.style}: {steps}"


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score(gt: list, pred: list, tol: float = 2.0) -> tuple[int, int]:
    """(matched at IoU >= 0.5, matched boxes containing their ground truth) by greedy best IoU."""
    pairs = sorted(((iou(g, p), i, j) for i, g in enumerate(gt) for j, p in enumerate(pred)), reverse=True)
    used_g, used_p, matched, contained = set(), set(), 0, 0
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
    return matched, contained


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


CONDITIONS = ("clean", "photo", "scan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=36)
    ap.add_argument("--dpi", default="150,200,250,300", help="page resolutions, cycled")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overlay", type=Path, help="write one photo-degraded page with its detections here")
    ap.add_argument("--overlay-page", type=int, default=1, help="which page (1-based) --overlay shows")
    ap.add_argument("--show-failures", action="store_true",
                    help="list pages with misses, false or cut-off detections; overlays go to /tmp/detect_fail_*")
    args = ap.parse_args(argv)
    cv2.setNumThreads(2)
    dpis = [int(d) for d in args.dpi.split(",")]
    tallies = {k: dict(gt=0, pred=0, matched=0, contained=0, seconds=0.0, cpu=0.0, pages=0, worst=0.0)
               for k in CONDITIONS}
    done = 0
    for name_page, dpi, gray, gt in pages(args.pages, dpis, args.seed):
        done += 1
        versions = {"clean": (gray, gt, "")}
        for k, style in enumerate(("photo", "scan"), 1):
            rng = np.random.default_rng([args.seed, done, k])  # independent of the other conditions
            versions[style] = degrade_page(gray, gt, rng, style)
        for name in CONDITIONS:
            img, boxes, how = versions[name]
            t0, c0 = time.perf_counter(), time.process_time()
            result = detect_systems(Image.fromarray(img))
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            pred = [(b.x0, b.y0, b.x1, b.y1) for b in result.boxes]
            m, c = score(boxes, pred)
            tal = tallies[name]
            tal["gt"] += len(boxes)
            tal["pred"] += len(pred)
            tal["matched"] += m
            tal["contained"] += c
            tal["seconds"] += dt
            tal["cpu"] += dc
            tal["worst"] = max(tal["worst"], dt)
            tal["pages"] += 1
            if args.show_failures and (m < len(boxes) or m < len(pred) or c < m):
                print(f"  {done:2d} {name:6s} {name_page} dpi={dpi} {img.shape[1]}x{img.shape[0]}: gt={len(boxes)} "
                      f"pred={len(pred)} matched={m} contained={c} {result.messages}"
                      + (f"\n      {how}" if how else ""), flush=True)
                save_overlay(img, result, boxes, Path(f"/tmp/detect_fail_{done}_{name}.jpg"), max_side=1600)
            if args.overlay and name == "photo" and done == args.overlay_page:
                save_overlay(img, result, boxes, args.overlay)
    print(f"pages: {done} per condition (Lieder dev), dpi {args.dpi}, seed {args.seed}")
    print(f"{'':6s} {'systems':>7s} {'pred':>5s} {'recall':>7s} {'precis.':>7s} {'contain':>7s} "
          f"{'s/page':>6s} {'cpu s':>6s} {'max s':>6s}")
    for name, t in tallies.items():
        if not t["pages"]:
            continue
        print(f"{name:6s} {t['gt']:7d} {t['pred']:5d} {t['matched'] / max(t['gt'], 1):7.4f} "
              f"{t['matched'] / max(t['pred'], 1):7.4f} {t['contained'] / max(t['matched'], 1):7.4f} "
              f"{t['seconds'] / t['pages']:6.3f} {t['cpu'] / t['pages']:6.3f} {t['worst']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
