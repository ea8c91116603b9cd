"""MuseScore 3 as a second engraver: many scores per process, gold from its own MusicXML export.

MuseScore 3 ignores ``-S style.mss`` for imported MusicXML, so a batch takes two
processes: MusicXML -> .mscx for every score, the sampled style written into
each .mscx, then .mscx -> (MusicXML, SVG pages) for every score. Each process
costs about a second to start, amortized over the batch.

The gold is MuseScore's re-exported piano part cut where MuseScore broke its
lines (its ``<print new-system="yes">``). The image of a system is drawn from
the SVG elements that belong to it (by vertical position relative to the staff
lines), so neighbouring systems never leak in. The measures *drawn* are counted
from the barlines in the SVG, independently of the gold, and a system whose
count disagrees with its gold is dropped; so is one whose gold holds a time
signature that its drawing lacks (or the reverse), and one whose noteheads, read
by staff position under the gold's clefs, are not the gold's pitches (the export
loses some clef changes it draws). The notes read are kept as the system's
labels for the encoder's note map, as Verovio's are.
"""

from __future__ import annotations

import functools
import os
import random
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acai_omr.data.layout import (MEASURES_UNLIKE_GOLD, NOT_DRAWN, NOTES_UNLIKE_GOLD, TIME_UNLIKE_GOLD,
                                  RenderedSystem, crop_to_ink_at, measures_of, restate_time, shows_time,
                                  without_breaks)
from acai_omr.lmx.linearize import LinearizeError, linearize_part
from acai_omr.lmx.musicxml import (MusicXMLError, find_piano_part, parse_score_string, score_to_string,
                                   split_part_into_systems)
from acai_omr.lmx.reading_order import NOTE_LABELS, REST, reading_order
from acai_omr.render.musescore import MuseScoreError, convert_batch, find_mscore
from acai_omr.render.raster import RasterError, rasterize_svg

# symbol font -> the text font that matches it (dynamics, tempo marks)
MUSIC_FONTS = {"Emmentaler": "Emmentaler Text", "Bravura": "Bravura Text", "Gonville": "Gootville Text",
               "MuseJazz": "MuseJazz Text"}
LELAND = {"Leland": "Leland Text"}  # shipped from MuseScore 3.6 on
PAGE_SIZES_IN = {"a4": (8.27, 11.69), "letter": (8.5, 11.0)}


# ---------------------------------------------------------------- style

@functools.lru_cache(maxsize=1)
def mscore_version() -> tuple[int, ...]:
    """MuseScore's version as a tuple, e.g. (3, 2, 3); () when unknown."""
    exe = find_mscore()
    if exe is None:
        return ()
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout + done.stderr)
    return tuple(int(g) for g in found.groups() if g is not None) if found else ()


def available_fonts() -> dict[str, str]:
    """Music fonts this MuseScore ships (symbol font -> text font)."""
    return {**MUSIC_FONTS, **(LELAND if mscore_version() >= (3, 6) else {})}


def _uniform(rng: random.Random, bounds: tuple[float, float], digits: int = 3) -> float:
    return round(rng.uniform(*bounds), digits)


def sample_style(rng: random.Random, fonts: dict[str, str] | None = None,
                 spatium_mm: tuple[float, float] = (1.45, 2.0),
                 page_sizes: dict[str, tuple[float, float]] = PAGE_SIZES_IN,
                 side_margin_in: tuple[float, float] = (0.35, 0.9),
                 top_margin_in: tuple[float, float] = (0.35, 0.8),
                 min_measure_width_sp: tuple[float, float] = (4.0, 9.0),
                 measure_spacing: tuple[float, float] = (1.0, 1.5),
                 min_note_distance_sp: tuple[float, float] = (0.2, 0.4),
                 grand_staff_distance_sp: tuple[float, float] = (5.5, 8.5),
                 min_system_distance_sp: tuple[float, float] = (7.0, 11.0),
                 staff_line_width_sp: tuple[float, float] = (0.07, 0.12),
                 stem_width_sp: tuple[float, float] = (0.08, 0.14),
                 beam_width_sp: tuple[float, float] = (0.42, 0.55),
                 bar_width_sp: tuple[float, float] = (0.12, 0.2),
                 end_bar_width_sp: tuple[float, float] = (0.4, 0.6),
                 ledger_line_width_sp: tuple[float, float] = (0.12, 0.2),
                 last_system_fill_limit: float = 0.0) -> dict[str, object]:
    """A MuseScore 3 style (.mss ``<Style>`` children) drawn from realistic ranges.

    Units are MuseScore's: Spatium in mm, page sizes in inches, the rest in
    staff spaces. ``last_system_fill_limit`` 0 stretches a piece's last system
    to the full width, so that no system image is a sliver.
    """
    fonts = fonts or available_fonts()
    symbol_font = rng.choice(sorted(fonts))
    page_width, page_height = page_sizes[rng.choice(sorted(page_sizes))]
    left, right = _uniform(rng, side_margin_in), _uniform(rng, side_margin_in)
    top = _uniform(rng, top_margin_in)
    bottom = round(top + rng.uniform(0.0, 0.4), 3)
    style: dict[str, object] = {
        "Spatium": _uniform(rng, spatium_mm),
        "musicalSymbolFont": symbol_font, "musicalTextFont": fonts[symbol_font],
        "pageWidth": page_width, "pageHeight": page_height, "pagePrintableWidth": round(page_width - left - right, 3),
        "pageTwosided": 0,
        "minMeasureWidth": _uniform(rng, min_measure_width_sp, 2),
        "measureSpacing": _uniform(rng, measure_spacing, 2),
        "minNoteDistance": _uniform(rng, min_note_distance_sp),
        "akkoladeDistance": _uniform(rng, grand_staff_distance_sp, 2),
        "minSystemDistance": _uniform(rng, min_system_distance_sp, 2),
        "staffLineWidth": _uniform(rng, staff_line_width_sp),
        "stemWidth": _uniform(rng, stem_width_sp),
        "beamWidth": _uniform(rng, beam_width_sp),
        "barWidth": _uniform(rng, bar_width_sp),
        "endBarWidth": _uniform(rng, end_bar_width_sp),
        "ledgerLineWidth": _uniform(rng, ledger_line_width_sp),
        "lastSystemFillLimit": last_system_fill_limit,
        # nothing outside the systems: no page numbers, headers or footers
        "showPageNumber": 0, "showPageNumberOne": 0, "showHeader": 0, "showFooter": 0,
    }
    for side in ("Even", "Odd"):
        style.update({f"page{side}LeftMargin": left, f"page{side}TopMargin": top, f"page{side}BottomMargin": bottom})
    return style


def apply_style(mscx: str, style: dict[str, object]) -> str:
    """The .mscx text with ``style`` written into its score's <Style> (replacing same-named settings)."""
    settings = "".join(f"<{key}>{value}</{key}>" for key, value in style.items())
    match = re.search(r"<Style>(.*?)</Style>", mscx, re.S)
    if match is None:
        opening = re.search(r"<Score>", mscx)
        if opening is None:
            raise MuseScoreError("the .mscx has no <Score>")
        return f"{mscx[:opening.end()]}<Style>{settings}</Style>{mscx[opening.end():]}"
    kept = re.sub(r"<(\w+)\b[^>]*?(?:/>|>.*?</\1>)",
                  lambda m: "" if m.group(1) in style else m.group(0), match.group(1), flags=re.S)
    return f"{mscx[:match.start()]}<Style>{kept}{settings}</Style>{mscx[match.end():]}"


# ---------------------------------------------------------------- SVG geometry

_ELEMENT = re.compile(r"<(path|polyline|polygon|line|rect|ellipse|circle|image|text)\b[^>]*?(?:/>|>.*?</\1>)", re.S)
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_MATRIX = re.compile(r'transform="matrix\(([^)]*)\)"')
_GEOMETRY = re.compile(r'\b(?:points|d)="([^"]*)"')


@dataclass
class SvgElement:
    """One drawn element of a MuseScore SVG page: its source text, class and bounding box."""

    text: str
    kind: str  # MuseScore's element type, e.g. StaffLines, BarLine, Note
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


def _bounding_box(text: str) -> tuple[float, float, float, float] | None:
    """Box of the points / path coordinates (MuseScore writes absolute M, L, C only; control points bound curves)."""
    geometry = _GEOMETRY.search(text)
    if geometry is None:
        return None
    values = [float(v) for v in _NUMBER.findall(geometry.group(1))]
    xs, ys = values[0::2], values[1::2]
    if not ys:
        return None
    matrix = _MATRIX.search(text)
    if matrix:
        a, b, c, d, e, f = (float(v) for v in _NUMBER.findall(matrix.group(1)))
        xs, ys = [a * x + c * y + e for x, y in zip(xs, ys)], [b * x + d * y + f for x, y in zip(xs, ys)]
    return min(xs), min(ys), max(xs), max(ys)


def parse_svg_page(svg: str) -> tuple[str, list[SvgElement]]:
    """(the SVG's opening up to its first element, its drawn elements) of one MuseScore page."""
    elements = []
    head_end = None
    for match in _ELEMENT.finditer(svg):
        head_end = match.start() if head_end is None else head_end
        box = _bounding_box(match.group(0))
        if box is None:
            continue
        kind = re.search(r'class="([^"]*)"', match.group(0))
        text = match.group(0)
        if " stroke=" not in text:  # SVG default; the rasterizer would otherwise outline every glyph
            text = text.replace(f"<{match.group(1)} ", f'<{match.group(1)} stroke="none" ', 1)
        elements.append(SvgElement(text, kind.group(1) if kind else "", *box))
    return svg[: head_end if head_end is not None else svg.rfind("</svg>")], elements


@dataclass
class SystemOnPage:
    """One system located on an SVG page: its staff-line extent, staff space and elements."""

    lines: list[float]  # every staff line's y, top to bottom
    left: float
    staff_space: float
    elements: list[SvgElement]

    @property
    def top(self) -> float:
        return self.lines[0]

    @property
    def bottom(self) -> float:
        return self.lines[-1]


def _staff_line_rows(elements: list[SvgElement], tolerance: float = 0.5) -> list[tuple[float, float]]:
    """(y, left x) of every distinct staff line, top to bottom (lines drawn in pieces are merged)."""
    rows: list[list[float]] = []
    for element in sorted((e for e in elements if e.kind == "StaffLines"), key=lambda e: e.cy):
        if rows and abs(element.cy - rows[-1][0]) <= tolerance:
            rows[-1][1] = min(rows[-1][1], element.x0)
        else:
            rows.append([element.cy, element.x0])
    return [(y, x) for y, x in rows]


def locate_systems(elements: list[SvgElement], staves_per_system: int, lines_per_staff: int = 5,
                   reach_spaces: float = 14.0) -> list[SystemOnPage]:
    """Group a page's staff lines into systems and give every element to the nearest system.

    An element belongs to the system whose staff-line extent is nearest to its
    vertical centre; one farther than ``reach_spaces`` from every system (page
    furniture) belongs to none.
    """
    rows = _staff_line_rows(elements)
    per_system = staves_per_system * lines_per_staff
    if not rows or len(rows) % per_system:
        raise ValueError(f"{len(rows)} staff lines do not make systems of {staves_per_system} staves")
    systems = []
    for start in range(0, len(rows), per_system):
        chunk = rows[start: start + per_system]
        staff_space = float(np.median(np.diff([y for y, _ in chunk])))  # line gaps outnumber staff gaps
        systems.append(SystemOnPage([y for y, _ in chunk], min(x for _, x in chunk), staff_space, []))
    for element in elements:
        distances = [max(system.top - element.cy, element.cy - system.bottom, 0.0) for system in systems]
        nearest = int(np.argmin(distances))
        if distances[nearest] <= reach_spaces * systems[nearest].staff_space:
            systems[nearest].elements.append(element)
    return systems


def count_drawn_measures(system: SystemOnPage, merge_spaces: float = 1.0) -> int:
    """Measures drawn in a system, counted from its barlines.

    Barline strokes (and repeat dots) closer than ``merge_spaces`` are one
    barline (double, final, repeat). A barline ends a measure when notes or
    rests were drawn since the previous one, so the system's opening line and a
    start-repeat after the clefs count for nothing.
    """
    xs = sorted(e.cx for e in system.elements if e.kind == "BarLine")
    clusters: list[list[float]] = []
    for x in xs:
        if clusters and x - clusters[-1][-1] <= merge_spaces * system.staff_space:
            clusters[-1].append(x)
        else:
            clusters.append([x])
    events = sorted(e.cx for e in system.elements if e.kind in ("Note", "Rest"))
    measures, previous = 0, system.left
    for cluster in clusters:
        if any(previous < x < cluster[0] for x in events):
            measures += 1
            previous = cluster[-1]
    return measures


def draw_system(head: str, system: SystemOnPage, staff_space_px: float,
                margin_px: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Gray image of only this system's elements, scaled to ``staff_space_px`` and cropped to its ink,
    and (x, y, scale) that take a point of the SVG to the image: ((px - x) * scale, (py - y) * scale)."""
    pad = 2 * system.staff_space  # stroke widths reach beyond the coordinates
    x0 = min(e.x0 for e in system.elements) - pad
    y0 = min(e.y0 for e in system.elements) - pad
    width = max(e.x1 for e in system.elements) + pad - x0
    height = max(e.y1 for e in system.elements) + pad - y0
    svg_open = re.sub(r"<svg\b[^>]*>",
                      f'<svg width="{width:.2f}px" height="{height:.2f}px" '
                      f'viewBox="{x0:.2f} {y0:.2f} {width:.2f} {height:.2f}" xmlns="http://www.w3.org/2000/svg" '
                      'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.2">', head, count=1, flags=re.S)
    svg = svg_open + "\n".join(e.text for e in system.elements) + "\n</svg>\n"
    zoom = staff_space_px / system.staff_space
    image, (dx, dy) = crop_to_ink_at(rasterize_svg(svg, zoom=zoom), margin_px)
    return image, (x0 + dx / zoom, y0 + dy / zoom, zoom)


# ---------------------------------------------------------------- notes read from the drawing

# the pitch on a clef's line, in diatonic steps from C0 (E4 = 30), and the line it sits on by default
_CLEF_PITCH = {"G": (4 * 7 + 4, 2), "F": (3 * 7 + 3, 4), "C": (4 * 7 + 0, 3)}


def _gold_clefs(part: ET.Element) -> dict[int, list[int | None]]:
    """Per staff (numbered from 1), the pitch on its bottom line under each clef the gold sets, in
    order (a clef restated unchanged merged; None for one that gives no pitch, e.g. percussion)."""
    clefs: dict[int, list[int | None]] = defaultdict(list)
    for clef in part.iter("clef"):
        sign, line = clef.findtext("sign"), (clef.findtext("line") or "").strip()
        octaves = (clef.findtext("clef-octave-change") or "0").strip()
        bottom = None
        if sign in _CLEF_PITCH and line in ("", *"12345") and octaves.lstrip("-").isdigit():
            pitch, default_line = _CLEF_PITCH[sign]
            bottom = pitch + 7 * int(octaves) - 2 * (int(line or default_line) - 1)
        in_order = clefs[int(clef.get("number", "1"))]
        if not in_order or in_order[-1] != bottom:
            in_order.append(bottom)
    return clefs


def drawn_notes(system: SystemOnPage, gold: ET.Element, lines_per_staff: int = 5,
                tolerance: float = 0.3) -> list[tuple[float, float, str]] | None:
    """Where each notehead and rest of a MuseScore system is drawn (SVG units), with its label read
    from the drawing; None when a notehead cannot be read.

    MuseScore's SVG names a notehead's class but not its pitch, so the pitch is read as a musician
    reads it: the notehead's staff position under the clef drawn last before it on that staff, the
    drawn clefs taken to be the gold's in order (a courtesy clef may end the line). Rests are
    labelled "rest", as `acai_omr.lmx.reading_order` labels them.
    """
    if not system.lines or len(system.lines) % lines_per_staff:
        return None
    staves = [system.lines[i: i + lines_per_staff] for i in range(0, len(system.lines), lines_per_staff)]

    def staff_of(element: SvgElement) -> int:
        return min(range(len(staves)), key=lambda s: abs(element.cy - (staves[s][0] + staves[s][-1]) / 2))

    gold_clefs = [_gold_clefs(gold).get(staff + 1, []) for staff in range(len(staves))]
    drawn_at: list[list[float]] = [[] for _ in staves]  # per staff, the x of each clef drawn on it
    for clef in sorted((e for e in system.elements if e.kind == "Clef"), key=lambda e: e.cx):
        drawn_at[staff_of(clef)].append(clef.cx)
    if any(not len(gold) <= len(drawn) <= len(gold) + 1 for gold, drawn in zip(gold_clefs, drawn_at)):
        return None
    half_space = system.staff_space / 2
    notes = []
    for element in system.elements:
        if element.kind == "Rest":
            notes.append((element.cx, element.cy, REST))
        elif element.kind == "Note":
            staff = staff_of(element)
            before = [bottom for x, bottom in zip(drawn_at[staff], gold_clefs[staff]) if x < element.cx]
            steps = (staves[staff][-1] - element.cy) / half_space
            if not before or before[-1] is None or abs(steps - round(steps)) > tolerance:
                return None  # no clef to read it by, or not on a line or in a space
            diatonic = before[-1] + round(steps)
            if not 0 <= diatonic < len(NOTE_LABELS) - 1:
                return None  # off the pitch range LMX writes
            notes.append((element.cx, element.cy, NOTE_LABELS[diatonic]))  # C0 ... B9, diatonic order
    return notes


def read_as_gold(notes: list[tuple[float, float, str]] | None, gold: ET.Element) -> bool:
    """Whether the notes read from the drawing are the gold's, as multisets of `reading_order` labels.

    This checks the gold's clefs: MuseScore 3's MusicXML export loses some clef changes that it
    draws (a change back at a measure's start after one inside a measure: in 12 Lieder training
    pieces, 54 of 151 MuseScore systems began with another clef in the gold than the one drawn,
    mostly treble over drawn bass notes), and a note read under a lost clef is a third or more
    off its gold pitch. Under an ottava line notes are drawn an
    octave from their pitch, so there only the note names (and rests) are compared.
    """
    if notes is None:
        return False
    try:
        gold_labels = reading_order(linearize_part(gold, fail_on_unknown=False))
    except (LinearizeError, ValueError):
        return False
    drawn_labels = [label for _, _, label in notes]
    if gold.find(".//octave-shift") is not None:
        gold_labels, drawn_labels = [label[0] for label in gold_labels], [label[0] for label in drawn_labels]
    return Counter(drawn_labels) == Counter(gold_labels)


# ---------------------------------------------------------------- batch

def _unbroken(score: ET.Element) -> ET.Element:
    """The score with its piano part's breaks removed (MuseScore decides the layout)."""
    unbroken = ET.Element(score.tag, dict(score.attrib))
    for child in score:
        unbroken.append(without_breaks(child) if child.tag == "part" else child)
    return unbroken


def _broken_by_us(score: ET.Element, rng: random.Random, time_probability: float,
                  measures: tuple[int, int] = (3, 5)) -> ET.Element:
    """The unbroken score with a system break every `measures` measures (drawn per system), each
    restating the time signature in force with `time_probability`.

    A printed system rarely shows its time signature, so MuseScore's own layout gives few system
    starts with one (and the header reader few MuseScore digits to learn from). MuseScore keeps
    breaks it is given (it adds its own only where a system overflows) and prints a restated
    signature at the system's start; with ``genCourtesyTimesig`` off, nothing at the end of the
    line before, so image and gold agree.
    """
    score = _unbroken(score)
    for part in score.iter("part"):
        bars = measures_of(part)
        time: ET.Element | None = None
        upcoming = rng.randint(*measures)
        for index, measure in enumerate(bars):
            if index == upcoming:
                printed = measure.find("print")
                if printed is None:
                    measure.insert(0, ET.Element("print", {"new-system": "yes"}))
                else:
                    printed.set("new-system", "yes")
                upcoming += rng.randint(*measures)
                if time is not None and measure.find("attributes/time") is None and rng.random() < time_probability:
                    restate_time(measure, time)
            for element in measure.iter("time"):
                time = element
    return score


def _staves(part: ET.Element) -> int:
    return max((int(s.text) for s in part.iter("staves") if (s.text or "").strip().isdigit()), default=1)


def _svg_pages(stem: Path) -> list[Path]:
    """MuseScore's SVG pages of one export in page order (name-1.svg ..., or name-01.svg ... from 10 pages on)."""
    pages = sorted((p for p in stem.parent.glob(f"{stem.name}-*.svg") if p.stem.rsplit("-", 1)[1].isdigit()),
                   key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return pages or ([stem.with_suffix(".svg")] if stem.with_suffix(".svg").exists() else [])


def _systems_of(gold_xml: Path, svg_stem: Path, style: dict[str, object], staff_space_px: float,
                margin_px: int, left_out: list[str] | None = None) -> list[RenderedSystem] | str:
    """Pair the gold systems of one export with the systems drawn on its SVG pages.

    A system whose drawing disagrees with its gold is dropped; why goes on ``left_out``.
    """
    left_out = [] if left_out is None else left_out
    try:
        part = find_piano_part(parse_score_string(gold_xml.read_bytes(), str(gold_xml)))
    except (MusicXMLError, OSError) as error:
        return f"MuseScore's MusicXML is unreadable: {error}"
    golds = split_part_into_systems(part)
    drawn: list[tuple[str, SystemOnPage]] = []
    for page in _svg_pages(svg_stem):
        head, elements = parse_svg_page(page.read_text())
        try:
            drawn += [(head, system) for system in locate_systems(elements, _staves(part))]
        except ValueError as error:
            return f"{page.name}: {error}"
    if not golds or len(golds) != len(drawn):
        return f"{len(golds)} systems in MuseScore's MusicXML but {len(drawn)} drawn"
    systems = []
    for index, (gold, (head, system)) in enumerate(zip(golds, drawn)):
        measures, gold_measures = count_drawn_measures(system), len(measures_of(gold))
        drawn_time = any(e.kind == "TimeSig" for e in system.elements)
        if measures != gold_measures:
            left_out.append(f"system {index}: {MEASURES_UNLIKE_GOLD} ({measures} drawn, {gold_measures} in it)")
            continue
        if drawn_time != (gold.find(".//time") is not None):
            left_out.append(f"system {index}: {TIME_UNLIKE_GOLD} ({'drawn only' if drawn_time else 'in the gold only'})")
            continue
        notes = drawn_notes(system, gold)
        if not read_as_gold(notes, gold):  # typically a clef change the export lost
            left_out.append(f"system {index}: {NOTES_UNLIKE_GOLD} (its noteheads do not read as the gold's pitches)")
            continue
        if gold.find(".//octave-shift") is not None:
            notes = None  # read an octave off under the ottava line: no labels
        try:
            image, (x0, y0, scale) = draw_system(head, system, staff_space_px, margin_px)
        except (RasterError, ValueError) as error:
            left_out.append(f"system {index}: {NOT_DRAWN} ({error})")
            continue
        options = {**style, "engraver": "musescore", "staff_space_px": round(staff_space_px, 2), "system": index,
                   "measures_drawn": measures}
        if notes is not None:
            notes = [(round((x - x0) * scale, 1), round((y - y0) * scale, 1), label) for x, y, label in notes]
        systems.append(RenderedSystem(gold, image, options, shows_time(gold), notes))
    return systems or f"all {len(golds)} systems dropped: drawn measures, time signatures or notes disagree with the gold"


@dataclass
class _Export:
    """One score's second MuseScore pass: styled .mscx in, MusicXML and SVG pages out."""

    index: int
    mscx: Path
    style: dict[str, object]
    staff_space_px: float
    margin_px: int

    @property
    def xml(self) -> Path:
        return self.mscx.with_name(f"out{self.index}.musicxml")

    @property
    def svg(self) -> Path:
        return self.mscx.with_name(f"out{self.index}.svg")


def render_batch(scores: list[ET.Element], rng: random.Random, staff_space_px: float | None = None,
                 staff_space_range: tuple[float, float] = (8.0, 14.0), margin_spaces: tuple[float, float] = (0.5, 2.0),
                 timeout_per_file: float = 60.0, style_ranges: dict | None = None,
                 time_probability: float = 0.0,
                 left_out: list[list[str]] | None = None) -> list[list[RenderedSystem] | str]:
    """Engrave piano-only scores with MuseScore 3, each in its own sampled style; two processes for all.

    Returns per score its systems (gold part, image, options) or the reason it
    failed; one bad score never raises or sinks the others.
    ``staff_space_px`` None draws one per score from ``staff_space_range``;
    ``style_ranges`` overrides keyword arguments of ``sample_style``;
    ``time_probability`` > 0 breaks the systems ourselves, restating the time
    signature at a break with that chance (`_broken_by_us`); 0 leaves the
    layout to MuseScore. ``left_out``, one list per score, collects why
    systems drawn but not returned were dropped.
    """
    results: list[list[RenderedSystem] | str] = ["not converted"] * len(scores)
    with tempfile.TemporaryDirectory(prefix="acai-mscore-") as folder:
        folder = Path(folder)
        imports = []
        for index, score in enumerate(scores):
            source = folder / f"in{index}.musicxml"
            try:
                laid_out = _broken_by_us(score, rng, time_probability) if time_probability > 0 else _unbroken(score)
                source.write_text(score_to_string(laid_out))
            except (TypeError, ValueError) as error:
                results[index] = f"cannot write the score: {error}"
                continue
            imports.append((index, source, folder / f"in{index}.mscx"))
        try:
            report = convert_batch([(src, [mscx]) for _, src, mscx in imports], timeout_per_file=timeout_per_file)
        except MuseScoreError as error:
            return [str(error)] * len(scores)
        exports = []
        for index, _, mscx in imports:
            if not mscx.exists():
                results[index] = f"MuseScore import failed: {report.failures.get(str(mscx), report.log_tail[-300:])}"
                continue
            style = sample_style(rng, **(style_ranges or {}))
            if time_probability > 0:
                style["genCourtesyTimesig"] = 0  # a restated signature is no change to warn of
            space = staff_space_px if staff_space_px is not None else rng.uniform(*staff_space_range)
            export = _Export(index, folder / f"styled{index}.mscx", style, space,
                             max(1, round(rng.uniform(*margin_spaces) * space)))
            export.mscx.write_text(apply_style(mscx.read_text(), style))
            exports.append(export)
        report = convert_batch([(e.mscx, [e.xml, e.svg]) for e in exports], timeout_per_file=timeout_per_file)
        for export in exports:
            svg_stem = export.svg.with_suffix("")
            if not export.xml.exists() or not _svg_pages(svg_stem):  # not report.failures: it misses name-01.svg
                reason = report.failures.get(str(export.xml)) or report.failures.get(str(export.svg), "no output")
                results[export.index] = f"MuseScore export failed: {reason}"
                continue
            try:
                results[export.index] = _systems_of(export.xml, svg_stem, export.style, export.staff_space_px,
                                                    export.margin_px, None if left_out is None else left_out[export.index])
            except Exception as error:  # one score's surprise must not sink the batch
                results[export.index] = f"{type(error).__name__}: {error}"
    return results
