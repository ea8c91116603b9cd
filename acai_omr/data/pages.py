"""Whole engraved pages with the true box of every system, for system detection tests and benchmarks.

Verovio lays a piece out on a page; the page is rasterized once as it is and
once per system with every other system removed, so each box is exactly the
ink of that system's own elements (brace, labels and lyrics included), whatever
reaches into the neighbouring systems' space.
"""

from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image

from acai_omr.data.verovio_render import FONTS, STAFF_SPACE_SVG_PX, clean_svg
from acai_omr.lmx.musicxml import find_piano_part, part_to_score, read_score, score_to_string
from acai_omr.paths import shared_dir
from acai_omr.render.raster import rasterize_svg

PAGE_RATIOS = {"a4": 297 / 210, "letter": 11 / 8.5}  # height / width
Box = tuple[int, int, int, int]

_GROUP_TAG = re.compile(r"<(/?)g\b[^>]*?(/?)>")


def sample_page_options(rng: random.Random, fonts: tuple[str, ...] = FONTS,
                        page_width: tuple[int, int] = (1900, 2500), page_ratios: dict[str, float] = PAGE_RATIOS,
                        margin: tuple[int, int] = (60, 220), spacing_system: tuple[int, int] = (8, 18),
                        spacing_staff: tuple[int, int] = (8, 14)) -> dict:
    """Verovio page options: font, page size (A4 or letter shape; wider = smaller music), margins, spacing.

    Lengths are Verovio units at scale 100 (a staff space is 18).
    """
    width = rng.randint(*page_width)
    return {
        "font": rng.choice(fonts), "scale": 100, "pageWidth": width,
        "pageHeight": round(width * page_ratios[rng.choice(sorted(page_ratios))]),
        "pageMarginLeft": rng.randint(*margin), "pageMarginRight": rng.randint(*margin),
        "pageMarginTop": rng.randint(*margin), "pageMarginBottom": rng.randint(*margin),
        "spacingSystem": rng.randint(*spacing_system), "spacingStaff": rng.randint(*spacing_staff),
        "adjustPageHeight": False, "breaks": "auto", "header": "none", "footer": "none",
    }


def _group_spans(svg: str, class_word: str) -> list[tuple[int, int]]:
    """(start, end) of every <g> whose class holds ``class_word``, including everything nested in it."""
    spans, depth, start = [], 0, None
    for match in _GROUP_TAG.finditer(svg):
        closing, self_closing = match.group(1), match.group(2)
        if start is not None:
            if closing:
                depth -= 1
                if depth == 0:
                    spans.append((start, match.end()))
                    start = None
            elif not self_closing:
                depth += 1
        elif not closing and re.search(rf'class="[^"]*\b{class_word}\b[^"]*"', match.group(0)):
            if self_closing:
                spans.append((match.start(), match.end()))
            else:
                start, depth = match.start(), 1
    return spans


def _without(svg: str, spans: list[tuple[int, int]]) -> str:
    kept, position = [], 0
    for start, end in spans:
        kept.append(svg[position:start])
        position = end
    return "".join(kept) + svg[position:]


def _ink_box(gray: np.ndarray, threshold: int) -> Box | None:
    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def page_and_boxes(svg: str, zoom: float, ink_threshold: int = 200) -> tuple[np.ndarray, list[Box]]:
    """(gray page, ink box of every system top to bottom) of one Verovio SVG page.

    Instrument labels are dropped (a printed piano page rarely names its instrument).
    """
    svg = clean_svg(svg)
    svg = _without(svg, _group_spans(svg, "label"))
    systems = _group_spans(svg, "system")
    boxes = []
    for index in range(len(systems)):
        alone = _without(svg, systems[:index] + systems[index + 1:])
        box = _ink_box(rasterize_svg(alone, zoom), ink_threshold)
        if box is not None:
            boxes.append(box)
    return rasterize_svg(svg, zoom), sorted(boxes, key=lambda box: box[1])


def _load(toolkit, path: Path, keep_all_parts: bool) -> bool:
    """Load a piece into Verovio: only its piano part (unlabelled), or the whole score."""
    if not keep_all_parts:
        part = find_piano_part(read_score(path))
        return toolkit.loadData(score_to_string(part_to_score(part, name="")))
    if path.suffix.lower() == ".mxl":
        return toolkit.loadZipDataBase64(base64.b64encode(path.read_bytes()).decode())
    return toolkit.loadFile(str(path))


def _engrave(path: Path, options: dict, keep_all_parts: bool) -> list[str]:
    """Every SVG page of ``path`` engraved with ``options`` ([] when Verovio cannot load it)."""
    import verovio

    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions(options)
    if not _load(toolkit, path, keep_all_parts):
        return []
    return [toolkit.renderToSVG(number) for number in range(1, toolkit.getPageCount() + 1)]


def render_page(path: Path | None = None, seed: int = 0, page: int = 0, staff_space_px: float = 10.0,
                keep_all_parts: bool = False, pieces_dir: Path | None = None, min_systems: int = 2,
                max_tries: int = 50) -> tuple[Image.Image, list[Box]]:
    """One engraved page (grayscale) and the ink box (x0, y0, x1, y1) of each of its systems, top to bottom.

    Page options are drawn from ``seed``. Without ``path`` the seed also picks a
    Lieder training piece (from ``pieces_dir``) whose page ``page`` holds at
    least ``min_systems`` systems. ``keep_all_parts`` engraves voice and piano
    (3-staff systems) instead of the piano part alone.
    """
    rng = random.Random(seed)
    options = sample_page_options(rng)
    zoom = staff_space_px / STAFF_SPACE_SVG_PX * 100 / options["scale"]
    if path is not None:
        pages = _engrave(Path(path), options, keep_all_parts)
        if page >= len(pages):
            raise ValueError(f"{path} has {len(pages)} pages at these options; page {page} does not exist")
        gray, boxes = page_and_boxes(pages[page], zoom)
        return Image.fromarray(gray, mode="L"), boxes
    pieces = sorted((pieces_dir or shared_dir() / "corpora" / "lieder" / "train").glob("*.mxl"))
    rng.shuffle(pieces)
    for candidate in pieces[:max_tries]:
        pages = _engrave(candidate, options, keep_all_parts)
        if page < len(pages) and len(_group_spans(pages[page], "system")) >= min_systems:
            gray, boxes = page_and_boxes(pages[page], zoom)
            return Image.fromarray(gray, mode="L"), boxes
    raise ValueError(f"no piece among {min(len(pieces), max_tries)} tried has {min_systems}+ systems on page {page}")
