"""Whole engraved pages with the true box of every system, for system detection tests and benchmarks.

Verovio lays a piece out on a page; the page is rasterized once as it is and
once per system with every other system removed, so each box is exactly the
ink of that system's own elements (brace and labels included), whatever
reaches into the neighbouring systems' space.

On voice + piano pages a system is its piano pair, the unit the transcription
model reads: its box is the ink of the piano's two staves alone (brace, clefs,
notes, ledger lines, the piano's dynamics, pedal marks, slurs, the system's start
line and barlines cut to the piano's staves), without the voice staff, its lyrics,
its dynamics and slurs, or the measure numbers and voltas printed above it.
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


# what tells whose staff an element outside the staff groups is (Verovio writes them as data-* attributes
# when asked): the staff a control event is drawn for, or the notes a slur or tie starts and ends at
_STAFF_OF = ("dynam", "hairpin", "dir", "tempo", "pedal", "fermata", "trill", "octave", "mordent", "turn",
             "harm", "reh", "breath", "caesura", "fing", "phrase", "arpeg", "bracketSpan", "gliss", "lv",
             "ornam", "repeatMark", "anchoredText")
_STARTID_OF = ("slur", "tie", "phrase", "lv", "gliss", "hairpin", "bracketSpan")
SVG_ATTRIBUTES = (["staff@n"] + [f"{name}@staff" for name in _STAFF_OF]
                  + [f"{name}@{end}" for name in _STARTID_OF for end in ("startid", "endid")])
_OPEN_TAG = re.compile(r"<(?P<close>/?)(?P<tag>[A-Za-z]+)\b(?P<attrs>[^>]*?)(?P<self>/?)>")
_LINE_PATH = re.compile(r'(<path d="M(-?[\d.]+) (-?[\d.]+) L(-?[\d.]+) (-?[\d.]+)")')
_PLACED_GLYPH = re.compile(r'<use [^>]*?transform="translate\(-?[\d.]+, (-?[\d.]+)\)[^>]*>')
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")


def piano_staff_numbers(path: Path) -> set[str]:
    """The MEI staff numbers (@n, as Verovio numbers a MusicXML score's staves) of the piano's two staves."""
    from acai_omr.lmx.musicxml import _part_staves

    root = read_score(path)
    piano = find_piano_part(root)
    first = 1
    for part in root.findall("part"):
        if part is piano:
            return {str(first), str(first + 1)}
        first += max(1, _part_staves(part))
    return set()


def _element_spans(svg: str, want) -> list[tuple[int, int, str]]:
    """(start, end, opening tag) of every element whose opening tag `want(tag)` accepts, nested ones skipped."""
    spans, stack = [], []
    for match in _OPEN_TAG.finditer(svg):
        if match.group("close"):
            if stack:
                start, tag, keep = stack.pop()
                if keep and not any(keep2 for _, _, keep2 in stack):
                    spans.append((start, match.end(), tag))
            continue
        keep = not any(k for _, _, k in stack) and want(match.group(0))
        if match.group("self"):
            if keep:
                spans.append((match.start(), match.end(), match.group(0)))
            continue
        stack.append((match.start(), match.group(0), keep))
    return sorted(spans)


def _attr(tag: str, name: str) -> str | None:
    found = re.search(rf'\b{name}="([^"]*)"', tag)
    return found.group(1) if found else None


def staff_ids(svg: str, piano: set[str]) -> tuple[set[str], set[str]]:
    """(ids of everything inside the piano's staff groups, ids inside the other staves') of a Verovio SVG."""
    inside: tuple[set[str], set[str]] = (set(), set())
    for a, b, tag in _element_spans(svg, lambda t: 'class="staff"' in t):
        inside[_attr(tag, "data-n") not in piano].update(re.findall(r'\bid="([^"]+)"', svg[a:b]))
    return inside


def piano_only(svg: str, piano: set[str], ids: tuple[set[str], set[str]] | None = None) -> str:
    """A Verovio SVG of one system (the page without its other systems) without its non-piano staves.

    Out go the other staves' ``staff`` groups (notes, lyrics, ledger lines, their clefs), any lyrics
    drawn outside them (a syllable carried over from the system before), the control events drawn
    for them (``data-staff``) or tied to their notes only (``data-startid``/``data-endid``), the brackets
    around them, and, when they are above the piano, the measure numbers, voltas and system dividers
    Verovio prints above the top staff; the system's start line and the barlines are cut to the piano's staves.
    ``piano`` holds the piano's staff numbers (needs the ``SVG_ATTRIBUTES`` in the SVG); ``ids``,
    `staff_ids` of the whole page, tells a slur or tie from the system before or after whose.
    """
    staves = _element_spans(svg, lambda tag: re.search(r'class="staff"', tag) is not None)
    voice = [(a, b) for a, b, tag in staves if _attr(tag, "data-n") not in piano]
    if not voice:
        return svg
    piano_lines = []
    for a, b, tag in staves:
        if _attr(tag, "data-n") in piano:
            ys = [float(m.group(3)) for m in _LINE_PATH.finditer(svg, a, b) if m.group(3) == m.group(5)][:5]
            piano_lines += ys
    voice_lines = [float(m.group(3)) for a, b in voice for m in list(_LINE_PATH.finditer(svg, a, b))[:1]]
    if not piano_lines:
        return svg
    top, bottom = min(piano_lines), max(piano_lines)
    voice_above = any(y < top for y in voice_lines)
    piano_ids, voice_ids = ids or staff_ids(svg, piano)

    def drop(tag: str) -> bool:
        classes = (_attr(tag, "class") or "").split()
        staff = _attr(tag, "data-staff")
        if staff is not None and not set(staff.split()) & piano:
            return True
        ends = {(_attr(tag, name) or "").lstrip("#") for name in ("data-startid", "data-endid")} - {""}
        if ends & voice_ids and not ends & piano_ids:
            return True
        if {"verse", "syl"} & set(classes):  # lyrics (a syllable carried over from the last system too)
            return True
        return voice_above and bool({"mNum", "ending", "systemDivider"} & set(classes))

    spans = [(a, b) for a, b in voice]
    spans += [(a, b) for a, b, tag in _element_spans(svg, lambda t: t.startswith("<g") and drop(t))]
    for a, b, tag in _element_spans(svg, lambda t: 'class="grpSym"' in t):  # brackets round other staves
        group = svg[a:b]  # a brace is drawn as paths; a bracket as a rect and its end glyphs
        ys = [float(v) for v in _NUMBERS.findall(" ".join(re.findall(r'\bd="([^"]*)"', group)))][1::2]
        ys += [float(y) for y in re.findall(r'translate\(-?[\d.]+, (-?[\d.]+)\)', group)]
        for y, height in re.findall(r'<rect [^>]*?\by="(-?[\d.]+)" height="(-?[\d.]+)"', group):
            ys += [float(y), float(y) + float(height)]
        if ys and (max(ys) < top - 1 or min(ys) > bottom + 1):
            spans.append((a, b))
    out = _without(svg, _outermost(spans))

    def clip(match: re.Match) -> str:
        x0, y0, x1, y1 = match.group(2), float(match.group(3)), match.group(4), float(match.group(5))
        if x0 != x1:
            return match.group(1)
        lo, hi = max(min(y0, y1), top), min(max(y0, y1), bottom)
        if hi <= lo:
            return '<path d="M0 0 L0 0" stroke-opacity="0"'
        return f'<path d="M{x0} {lo:g} L{x1} {hi:g}"'

    def cut(barline: str) -> str:  # lines cut to the piano's staves, the other staves' repeat dots out
        barline = _LINE_PATH.sub(clip, barline)
        return _PLACED_GLYPH.sub(lambda m: m.group(0) if top <= float(m.group(1)) <= bottom else "", barline)

    # the start line (a path straight under the system group) and the barlines, cut to the piano's staves
    pieces, position = [], 0
    for a, b, _ in _element_spans(out, lambda t: 'class="barLine"' in t or 'class="system"' in t):
        inner = out[a:b]
        if 'class="system"' in out[a:out.find(">", a)]:
            head_end = inner.find("<g", inner.find(">") + 1)
            head_end = len(inner) if head_end < 0 else head_end
            inner = _LINE_PATH.sub(clip, inner[:head_end]) + inner[head_end:]
            barlines = _element_spans(inner, lambda t: 'class="barLine"' in t)
            for c, d, _ in reversed(barlines):
                inner = inner[:c] + cut(inner[c:d]) + inner[d:]
        else:
            inner = cut(inner)
        pieces.append(out[position:a])
        pieces.append(inner)
        position = b
    return "".join(pieces) + out[position:]


def _outermost(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans not inside another, in order (for `_without`)."""
    kept: list[tuple[int, int]] = []
    for a, b in sorted(spans, key=lambda s: (s[0], -s[1])):
        if kept and a < kept[-1][1]:
            continue
        kept.append((a, b))
    return kept


def _ink_box(gray: np.ndarray, threshold: int) -> Box | None:
    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def page_and_boxes(svg: str, zoom: float, ink_threshold: int = 200,
                   piano: set[str] | None = None) -> tuple[np.ndarray, list[Box]]:
    """(gray page, ink box of every system top to bottom) of one Verovio SVG page.

    Instrument labels are dropped (a printed piano page rarely names its instrument). With
    ``piano`` (the piano's staff numbers), a system's box is that of its piano staves (`piano_only`).
    """
    svg = clean_svg(svg)
    svg = _without(svg, _group_spans(svg, "label"))
    systems = _group_spans(svg, "system")
    ids = staff_ids(svg, piano) if piano else None
    boxes = []
    for index in range(len(systems)):
        alone = _without(svg, systems[:index] + systems[index + 1:])
        if piano:
            alone = piano_only(alone, piano, ids)
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
    # which staff each staff group and control event is for (see `piano_only`); drawing is unchanged
    toolkit.setOptions({**options, "svgAdditionalAttribute": SVG_ATTRIBUTES} if keep_all_parts else options)
    if not _load(toolkit, path, keep_all_parts):
        return []
    return [toolkit.renderToSVG(number) for number in range(1, toolkit.getPageCount() + 1)]


def _piano_of(path: Path, keep_all_parts: bool) -> set[str] | None:
    """The piano's staff numbers when other parts are engraved with it (their systems are boxed as the piano)."""
    return piano_staff_numbers(path) if keep_all_parts else None


def render_page(path: Path | None = None, seed: int = 0, page: int = 0, staff_space_px: float = 10.0,
                keep_all_parts: bool = False, pieces_dir: Path | None = None, min_systems: int = 2,
                max_tries: int = 50) -> tuple[Image.Image, list[Box]]:
    """One engraved page (grayscale) and the ink box (x0, y0, x1, y1) of each of its systems, top to bottom.

    Page options are drawn from ``seed``. Without ``path`` the seed also picks a
    Lieder training piece (from ``pieces_dir``) whose page ``page`` holds at
    least ``min_systems`` systems. ``keep_all_parts`` engraves voice and piano
    (3-staff systems) instead of the piano part alone; a system's box is then
    that of its piano staves (see the module doc).
    """
    rng = random.Random(seed)
    options = sample_page_options(rng)
    zoom = staff_space_px / STAFF_SPACE_SVG_PX * 100 / options["scale"]
    if path is not None:
        pages = _engrave(Path(path), options, keep_all_parts)
        if page >= len(pages):
            raise ValueError(f"{path} has {len(pages)} pages at these options; page {page} does not exist")
        gray, boxes = page_and_boxes(pages[page], zoom, piano=_piano_of(Path(path), keep_all_parts))
        return Image.fromarray(gray, mode="L"), boxes
    pieces = sorted((pieces_dir or shared_dir() / "corpora" / "lieder" / "train").glob("*.mxl"))
    rng.shuffle(pieces)
    for candidate in pieces[:max_tries]:
        pages = _engrave(candidate, options, keep_all_parts)
        if page < len(pages) and len(_group_spans(pages[page], "system")) >= min_systems:
            gray, boxes = page_and_boxes(pages[page], zoom, piano=_piano_of(candidate, keep_all_parts))
            return Image.fromarray(gray, mode="L"), boxes
    raise ValueError(f"no piece among {min(len(pieces), max_tries)} tried has {min_systems}+ systems on page {page}")
