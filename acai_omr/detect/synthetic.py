"""Synthetic score pages with exact system boxes, for tests of the detector.

Cheap stand-ins for engraved pages: five-line staves, clefs, note heads with stems, ledger lines,
beams, barlines (shared by a piano's two staves), a system start line, a brace, dynamics, lyrics
and a title. Each system is drawn onto its own layer too, so its ground-truth box is the box of
its own ink, also after rotation. A voice + piano system's box is its piano pair's (the unit the
transcription model reads): the voice staff, its barlines and lyrics, and the stretch of the system
start line beside them, are drawn on a layer of their own that is no system's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

import cv2

STAVES_PER_KIND = {"single": 1, "piano": 2, "voice+piano": 3}


@dataclass
class SyntheticPage:
    image: Image.Image  # grayscale page
    # ink box (x0, y0, x1, y1) per system, top to bottom (of a voice + piano system: its piano pair's)
    boxes: list[tuple[int, int, int, int]]
    kinds: list[str]
    space: float  # staff space in pixels


def _draw_staff_music(layer: np.ndarray, rng: np.random.Generator, x0: int, x1: int, top: float,
                      sp: float, dense: bool) -> None:
    """Clef, notes (with ledger lines, stems, some beams) and a dynamic on one staff."""
    ink = 255
    t = max(1, int(round(sp / 8)))
    for k in range(5):
        y = int(round(top + k * sp))
        cv2.line(layer, (x0, y), (x1, y), ink, t)
    # clef: a blob with a stroke
    cx = int(x0 + 1.8 * sp)
    cv2.ellipse(layer, (cx, int(top + 2.5 * sp)), (int(0.9 * sp), int(1.3 * sp)), 0, 0, 360, ink, max(2, t * 2))
    cv2.line(layer, (cx, int(top - 0.8 * sp)), (cx, int(top + 4.8 * sp)), ink, max(1, t))
    x = x0 + 5 * sp
    step = 2.2 * sp if dense else 3.2 * sp
    beam_group: list[tuple[int, int]] = []
    while x < x1 - 2 * sp:
        pos = int(rng.integers(-4, 13))  # half-spaces below the top line; <0 above, >8 below
        y = top + pos * sp / 2
        xi = int(x)
        for ledger in range(-2, pos - 1, -2) if pos <= -2 else ():
            yy = int(round(top + ledger * sp / 2))
            cv2.line(layer, (int(xi - 0.9 * sp), yy), (int(xi + 0.9 * sp), yy), ink, t)
        for ledger in range(10, pos + 1, 2) if pos >= 10 else ():
            yy = int(round(top + ledger * sp / 2))
            cv2.line(layer, (int(xi - 0.9 * sp), yy), (int(xi + 0.9 * sp), yy), ink, t)
        cv2.ellipse(layer, (xi, int(round(y))), (int(0.65 * sp), int(0.45 * sp)), -20, 0, 360, ink, -1)
        up = pos >= 4
        sx = int(xi + 0.6 * sp) if up else int(xi - 0.6 * sp)
        sy = int(y - 3.3 * sp) if up else int(y + 3.3 * sp)
        cv2.line(layer, (sx, int(y)), (sx, sy), ink, max(1, t))
        if rng.random() < 0.35 or beam_group:
            beam_group.append((sx, sy))
            if len(beam_group) >= int(rng.integers(2, 5)):
                (ax, ay), (bx, by) = beam_group[0], beam_group[-1]
                cv2.line(layer, (ax, ay), (bx, by), ink, max(2, int(0.45 * sp)))
                beam_group = []
        if rng.random() < 0.08:
            cv2.putText(layer, rng.choice(["p", "f", "mf", "pp"]), (xi, int(top + 6.5 * sp)),
                        cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, sp / 14, ink, max(1, t))
        x += step * float(rng.uniform(0.8, 1.3))


def _draw_system(layer: np.ndarray, rng: np.random.Generator, kind: str, x0: int, x1: int, top: float,
                 sp: float, inner_gap: float, voice_layer: np.ndarray | None = None) -> None:
    """One system on `layer`; a voice + piano system's voice (staff, barlines, lyrics) on `voice_layer`."""
    n = STAVES_PER_KIND[kind]
    tops = [top + i * (4 * sp + inner_gap) for i in range(n)]
    t = max(1, int(round(sp / 8)))
    voice = layer if voice_layer is None or n != 3 else voice_layer
    for i, st in enumerate(tops):
        _draw_staff_music(voice if n == 3 and i == 0 else layer, rng, x0, x1, st, sp, dense=bool(rng.random() < 0.5))
    bottom = tops[-1] + 4 * sp
    first = tops[1] if n == 3 else tops[0]  # the system start line, the voice's stretch of it on its layer
    cv2.line(layer, (x0, int(first)), (x0, int(bottom)), 255, max(1, t))
    if n == 3:
        cv2.line(voice, (x0, int(tops[0])), (x0, int(first)), 255, max(1, t))
    piano = tops[-2:] if n >= 2 else []
    # barlines: the piano's two staves share them, the voice has its own
    for bx in np.linspace(x0, x1, int(rng.integers(3, 6)))[1:]:
        bx = int(bx)
        if piano:
            cv2.line(layer, (bx, int(piano[0])), (bx, int(piano[1] + 4 * sp)), 255, max(1, t + 1))
        if n == 1 or n == 3:
            cv2.line(voice, (bx, int(tops[0])), (bx, int(tops[0] + 4 * sp)), 255, max(1, t + 1))
    if piano:  # brace: two thick arcs left of the start line
        y_a, y_b = int(piano[0]), int(piano[1] + 4 * sp)
        mid = (y_a + y_b) // 2
        bx = int(x0 - 0.9 * sp)
        for ya, yb in ((y_a, mid), (mid, y_b)):
            pts = []
            for u in np.linspace(0, 1, 24):
                yy = ya + (yb - ya) * u
                xx = bx - 0.5 * sp * np.sin(np.pi * u) * (1 if ya == y_a else -1) * 0 + 0.4 * sp * np.sin(np.pi * u)
                pts.append((int(xx), int(yy)))
            cv2.polylines(layer, [np.array(pts, np.int32)], False, 255, max(2, int(0.35 * sp)))
    if n == 3:  # lyrics under the voice
        words = ["la", "mein", "Herz", "und", "die", "Nacht", "so", "still"]
        y = int(tops[0] + 6.2 * sp)
        x = x0 + 5 * sp
        while x < x1 - 6 * sp:
            word = str(rng.choice(words))
            cv2.putText(voice, word, (int(x), y), cv2.FONT_HERSHEY_SIMPLEX, sp / 18, 255, max(1, t))
            x += 5 * sp * float(rng.uniform(0.8, 1.4))


def make_page(kinds: list[str], seed: int = 0, width: int = 1240, height: int = 1754, angle: float = 0.0,
              noise: bool = False, title: bool = True) -> SyntheticPage:
    """A page holding one system per entry of `kinds` (top to bottom), optionally rotated and noisy."""
    rng = np.random.default_rng(seed)
    staves = sum(STAVES_PER_KIND[k] for k in kinds)
    top_room = 0.12 * height if title else 0.06 * height
    avail = height - top_room - 0.05 * height
    # each staff 4 spaces, gaps inside systems ~6.5 spaces, between systems ~9 spaces
    units = staves * 4 + sum(STAVES_PER_KIND[k] - 1 for k in kinds) * 6.5 + max(0, len(kinds) - 1) * 9
    sp = float(min(0.016 * width, avail / max(units, 1)))
    x0, x1 = int(0.1 * width), int(0.92 * width)
    page = np.zeros((height, width), np.uint8)  # ink layer (255 = ink)
    layers = []
    voices = np.zeros_like(page)  # voice staves and lyrics: on the page, in no system's box
    y = top_room
    for i, kind in enumerate(kinds):
        layer = np.zeros_like(page)
        xs = x0 + int(3 * sp) if (i == 0 and title) else x0  # indented first system
        _draw_system(layer, rng, kind, xs, x1, y, sp, inner_gap=6.5 * sp, voice_layer=voices)
        layers.append(layer)
        np.maximum(page, layer, out=page)
        np.maximum(page, voices, out=page)
        y += (4 * STAVES_PER_KIND[kind] + 6.5 * (STAVES_PER_KIND[kind] - 1) + 9) * sp
    if title:
        cv2.putText(page, "Sonatina", (int(0.38 * width), int(0.05 * height)), cv2.FONT_HERSHEY_TRIPLEX,
                    width / 700, 255, 2)
        cv2.putText(page, "J. Composer (1790)", (int(0.7 * width), int(0.09 * height)), cv2.FONT_HERSHEY_SIMPLEX,
                    width / 1800, 255, 1)
    if angle:
        rot = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        page = cv2.warpAffine(page, rot, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
        layers = [cv2.warpAffine(layer, rot, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
                  for layer in layers]
    boxes = []
    for layer in layers:
        ys, xs = np.nonzero(layer > 96)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    gray = 255.0 - page.astype(np.float32) * 0.92
    if noise:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        light = 0.75 + 0.25 * np.cos(xx / width * 2.5 + rng.uniform(0, 3)) * np.cos(yy / height * 2 + rng.uniform(0, 3))
        gray = gray * light
        gray = cv2.GaussianBlur(gray, (3, 3), 0.8)
        gray += rng.normal(0, 12, gray.shape).astype(np.float32)
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), mode="L")
    return SyntheticPage(image=image, boxes=boxes, kinds=list(kinds), space=sp)


def make_text_page(seed: int = 0, width: int = 1240, height: int = 1754) -> Image.Image:
    """A page of prose (no music), drawn with PIL's default font."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(12, width // 60))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    words = "the quick brown fox jumps over lazy dogs while music plays softly in a quiet room".split()
    step = int(width / 60 * 1.6)
    for y in range(int(0.08 * height), int(0.92 * height), step):
        line = " ".join(rng.choice(words, size=12))
        draw.text((int(0.08 * width), y), line, fill=0, font=font)
    return image
