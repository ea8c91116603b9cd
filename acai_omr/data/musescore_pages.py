"""Whole pages engraved by MuseScore 3, with the true box of every system, for page-detection benchmarks.

A second page source beside Verovio's (`acai_omr.data.pages`), so that a detector
tuned on one engraver is judged on another. For one piece and one seed:

1. the piece becomes MusicXML: a Lieder ``.mxl`` as it is (voice + piano) or its
   piano part alone; a ``**kern`` file through music21 (`ingest.kern_to_score`),
   with the tempo text, dynamics and pedal marks music21 drops read back from the
   kern text (placed at the start / end of their measure);
2. MuseScore imports it (.mscx); the .mscx gets a sampled style (`sample_style`:
   music font, staff size, page size, margins, spacing, last-system fill), page
   numbers and a footer by chance, a title frame (VBox: title, sometimes a
   subtitle, composer, and a poet or an arranger line such as "Transcribed by
   ..."), sometimes a first-system indent (an HBox before the first measure); the
   piece's own line/page breaks and instrument names are removed;
3. MuseScore engraves the whole score to SVG pages (and to MusicXML, whose
   ``<print new-system/new-page>`` count the systems of each page independently);
4. one page is kept: the first (with its title) about half the time, else the
   last (short last systems) or one in between.

True boxes come from MuseScore's own SVG: every element carries its type as its
class. The staff lines (``StaffLines``) are grouped into staves of five and into
systems of as many staves as the score has (2 for the piano alone, 3 for voice and
piano, 4 for a duet); every other element, except the
page's own text (``PAGE_CLASSES``: header, footer, page number, title frame), goes
to a system: inside a system's staff band to that system, in the gap between two
systems to the one it stacks onto (nearest chain of elements, MuseScore keeps the
two systems' skylines apart by at least the minimum system distance; the notes
with their ledger lines are stacked first, then the slurs, beams and marks), above the
first / below the last system to that system. A system's box is the ink box of
its own elements drawn alone (brace, clefs, ledger lines, dynamics, pedal marks,
tempo text included), exactly as `acai_omr.data.pages` boxes Verovio's systems.

On voice + piano pages (and any score with more staves than the piano's) a
system is its piano pair, the unit the transcription model reads: the pair the
brace spans (else the lowest two staves). Within the system every element goes
to one staff (`split_piano`): lyrics to the voice; a barline to the staff it
starts on (the system start line's stretch from the voice down to the piano is
the voice's); an element in a staff's band, or above the top staff / below the
bottom one, to that staff; one in the gap between the voice and the piano to the
side it stacks onto, as between systems; one reaching into both sides' staves is
left out. The box is the ink of the piano's elements alone (brace included; the
voice staff, its lyrics, dynamics, slurs, and the tempo text and measure numbers
over it excluded), the convention of the Verovio bench pages and of the
detector's ``voice+piano`` boxes; ``staff_boxes`` are the piano pair's lines.

Boxes are kept in SVG units (MuseScore writes 360 units per inch); `render`
rasterizes the page at any resolution and scales them. Pages are cached on disk
(one folder per piece, part choice and seed), so a benchmark rerun costs only the
rasterization.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from acai_omr.data.ingest import chopin_work, kern_to_score
from acai_omr.data.musescore_render import (MUSIC_FONTS, SvgElement, _svg_pages, apply_style, available_fonts,
                                            parse_svg_page, sample_style)
from acai_omr.lmx.musicxml import find_piano_part, part_to_score, read_score, score_to_string
from acai_omr.render.musescore import MuseScoreError, convert_batch, find_mscore
from acai_omr.render.raster import rasterize_svg

SVG_DPI = 360.0  # MuseScore 3 SVG units per inch (an A4 page is 2976 units wide)
# 2: voice + piano systems are boxed as their piano pair; 3: notes between two systems are stacked onto
# their own staff before the rest (an older version's page is derived again from its SVG, `_truth_anew`)
CACHE_VERSION = "3"
Box = tuple[int, int, int, int]
FloatBox = tuple[float, float, float, float]

# drawn by the page, not by a system: header / footer / page number ("Page"), the title frame's text
# (VBox texts: title, subtitle, composer, lyricist; "Text")
PAGE_CLASSES = frozenset({"Page", "Text"})
# what MuseScore 3 draws for a system (its class names); all of them belong to the system they sit in
SYSTEM_CLASSES = frozenset({
    "StaffLines", "Bracket", "BarLine", "Clef", "KeySig", "TimeSig", "Note", "NoteDot", "Stem", "StemSlash",
    "Hook", "Beam", "Rest", "LedgerLine", "Accidental", "Articulation", "Fermata", "Ornament", "Arpeggio",
    "Tremolo", "Tuplet", "Breath", "Glissando", "GlissandoSegment", "SlurSegment", "TieSegment",
    "Dynamic", "HairpinSegment", "PedalSegment", "OttavaSegment", "TrillSegment", "VibratoSegment",
    "TextLineSegment", "LetRingSegment", "PalmMuteSegment", "VoltaSegment", "Tempo", "StaffText",
    "SystemText", "RehearsalMark", "Expression", "InstrumentChange", "Fingering", "Lyrics",
    "LyricsLineSegment", "Harmony", "FiguredBass", "MeasureNumber", "InstrumentName", "Symbol", "Image",
    "ChordLine", "Bend", "Jump", "Marker", "Spacer", "Ambitus", "BracketItem", "MeasureRepeat",
    "RepeatMeasure", "MMRest", "MMRestRange",
})
KINDS = ("piano", "voice+piano")
NOTE_CLASSES = frozenset({"Note", "LedgerLine", "Accidental", "NoteDot"})  # drawn at a notehead
DYNAMICS = frozenset("ppp pp p mp mf f ff fff ffff sf sfz sff fz rfz rf fp".split())


def cache_root() -> Path:
    """Where rendered bench pages live: $ACAI_BENCH_PAGES, else ~/.cache/acai-omr/bench-pages."""
    env = os.environ.get("ACAI_BENCH_PAGES")
    return Path(env) if env else Path.home() / ".cache" / "acai-omr" / "bench-pages"


# ---------------------------------------------------------------- pieces

def piece_group(path: Path) -> str:
    """What must stay on one side of a split: a Chopin work (all its editions), else the file itself."""
    path = Path(path)
    if "chopin" in str(path.parent):
        return f"chopin/{chopin_work(path.name)}"
    return f"{path.parent.name}/{path.stem}"


def _lieder_index(path: Path) -> dict[str, str]:
    index = path.parent.parent / "index.tsv"
    if not index.exists():
        return {}
    for line in index.read_text().splitlines()[1:]:
        fields = line.split("\t")
        if fields and fields[0] == path.stem and len(fields) >= 5:
            tidy = [f.replace("_", " ").strip() for f in fields]
            return {"composer": tidy[2], "set": tidy[3], "title": tidy[4]}
    return {}


def _kern_records(text: str) -> dict[str, str]:
    records = {}
    for line in text.splitlines():
        match = re.match(r"!!!([A-Za-z-]+)[^:]*:\s*(.*)", line)
        if match and match.group(2).strip():
            records.setdefault(match.group(1), match.group(2).strip())
    return records


def piece_metadata(path: Path) -> dict[str, str]:
    """Title, composer and the like of a corpus piece (for its title frame); empty strings when unknown."""
    path = Path(path)
    meta = {"title": "", "subtitle": "", "composer": "", "poet": "", "tempo": ""}
    if path.suffix == ".krn":
        records = _kern_records(path.read_text(errors="replace"))
        meta.update(title=records.get("OTL", ""), subtitle=records.get("OPS", "") or records.get("PTL", ""),
                    composer=records.get("COM", ""), tempo=records.get("OMD", ""))
        if "," in meta["composer"]:  # "Chopin, Fryderyk" -> "Fryderyk Chopin"
            last, first = meta["composer"].split(",", 1)
            meta["composer"] = f"{first.strip()} {last.strip()}"
    else:
        index = _lieder_index(path)
        meta.update(title=index.get("title", ""), composer=index.get("composer", ""),
                    subtitle="" if index.get("set", "") in ("", "-") else index["set"])
        if "," in meta["composer"]:
            last, first = meta["composer"].split(",", 1)
            meta["composer"] = f"{first.strip()} {last.strip()}"
    meta["title"] = meta["title"] or path.stem
    return meta


def _kern_marks(text: str) -> dict[int, list[str]]:
    """Per kern measure number, the dynamics and pedal events in order (``dyn:p``, ``ped``, ``Xped``).

    Only what music21 drops and a page shows: dynamics of a ``**dynam`` spine and ``*ped``/``*Xped``.
    """
    marks: dict[int, list[str]] = {}
    measure = 0
    dynam_cols: set[int] = set()
    for line in text.splitlines():
        if not line or line.startswith("!"):
            continue
        tokens = line.split("\t")
        if line.startswith("**"):
            dynam_cols = {i for i, t in enumerate(tokens) if t == "**dynam"}
            continue
        if tokens[0].startswith("="):
            number = re.match(r"=+(\d+)", tokens[0])
            if number:
                measure = int(number.group(1))
            continue
        if line.startswith("*"):
            for token in tokens:
                if token in ("*ped", "*Xped"):
                    marks.setdefault(measure, []).append(token[1:])
            continue
        for i, token in enumerate(tokens):
            if dynam_cols and i not in dynam_cols and i < min(dynam_cols):
                continue
            found = re.match(r"([pmfsrz]+)", token)
            if found and found.group(1) in DYNAMICS:
                marks.setdefault(measure, []).append(f"dyn:{found.group(1)}")
    return marks


def _direction(kind: str, value: str, staff: str, placement: str) -> ET.Element:
    direction = ET.Element("direction", placement=placement)
    kind_el = ET.SubElement(direction, "direction-type")
    if kind == "dynamics":
        ET.SubElement(ET.SubElement(kind_el, "dynamics"), value)
    elif kind == "pedal":
        ET.SubElement(kind_el, "pedal", type=value, line="no", sign="yes")
    else:
        words = ET.SubElement(kind_el, "words", {"font-weight": "bold"})
        words.text = value
    ET.SubElement(direction, "staff").text = staff
    return direction


def _insert_at_start(measure: ET.Element, element: ET.Element) -> None:
    position = 0
    for position, child in enumerate(list(measure)):
        if child.tag not in ("attributes", "print", "barline"):
            break
    else:
        position = len(measure)
    measure.insert(position, element)


def add_kern_marks(score: ET.Element, kern_text: str, tempo: str = "") -> int:
    """Put the kern's tempo text, dynamics and pedal marks into the music21 MusicXML; returns how many."""
    part = score.find("part")
    if part is None:
        return 0
    measures = part.findall("measure")
    by_number = {m.get("number"): m for m in measures}
    added = 0
    if tempo and measures:
        _insert_at_start(measures[0], _direction("words", tempo.strip().rstrip("."), "1", "above"))
        added += 1
    open_pedal: ET.Element | None = None
    for number, events in sorted(_kern_marks(kern_text).items()):
        measure = by_number.get(str(number)) or (measures[0] if number == 0 and measures else None)
        if measure is None:
            continue
        for event in events:
            if event.startswith("dyn:"):
                _insert_at_start(measure, _direction("dynamics", event[4:], "1", "below"))
                added += 1
        peds = [e for e in events if e in ("ped", "Xped")]
        if "ped" in peds:
            if open_pedal is not None and open_pedal is not measure:
                open_pedal.append(_direction("pedal", "stop", "2", "below"))
            _insert_at_start(measure, _direction("pedal", "start", "2", "below"))
            open_pedal = measure
            added += 1
        if peds and peds[-1] == "Xped" and open_pedal is not None:
            measure.append(_direction("pedal", "stop", "2", "below"))
            open_pedal = None
    if open_pedal is not None:
        open_pedal.append(_direction("pedal", "stop", "2", "below"))
    return added


def piece_musicxml(path: Path, kind: str, cache: Path | None = None) -> bytes:
    """MusicXML (or .mxl bytes) MuseScore imports for a piece: voice + piano as it is, or the piano alone."""
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"kind is one of {KINDS}, not {kind!r}")
    if path.suffix == ".krn":
        if kind != "piano":
            raise ValueError("kern pieces are engraved piano-only")
        stored = (cache or cache_root()) / "musicxml" / f"{path.parent.name}-{path.stem}.musicxml"
        if stored.exists():
            return stored.read_bytes()
        text = path.read_text(errors="replace")
        score = kern_to_score(path)
        add_kern_marks(score, text, piece_metadata(path)["tempo"])
        data = score_to_string(score).encode()
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(data)
        return data
    if kind == "voice+piano":
        return path.read_bytes()
    return score_to_string(part_to_score(find_piano_part(read_score(path)), name="")).encode()


# ---------------------------------------------------------------- .mscx edits

ARRANGERS = ("Transcribed by {}", "Arranged by {}", "Arr. {}", "Edited by {}", "Revised by {}", "Fingering by {}")
EDITOR_NAMES = ("Sergei Rachmaninoff", "Franz Liszt", "Karl Klindworth", "Ignaz Friedman", "Hans von Bülow",
                "Carl Mikuli", "Ignacy Paderewski", "Alfred Cortot")


def title_frame(meta: dict[str, str], rng: random.Random, kind: str) -> str:
    """A VBox (.mscx) with the title, maybe a subtitle, the composer and a poet or arranger line."""
    texts = [("Title", meta["title"])]
    if meta.get("subtitle") and rng.random() < 0.6:
        texts.append(("Subtitle", meta["subtitle"]))
    composer = meta.get("composer") or "Anonymous"
    arranger = rng.choice(ARRANGERS).format(rng.choice(EDITOR_NAMES)) if rng.random() < 0.4 else ""
    if arranger and rng.random() < 0.5:
        composer = f"{composer}\n{arranger}"  # two lines right, as many editions print them
        arranger = ""
    texts.append(("Composer", composer))
    left = meta.get("poet") or ("Words: anonymous" if kind == "voice+piano" and rng.random() < 0.5 else "")
    if arranger or left:
        texts.append(("Lyricist", arranger or left))
    height = round(rng.uniform(7.0, 16.0), 1)
    body = "".join(f"<Text><style>{style}</style><text>{_escape(text)}</text></Text>" for style, text in texts)
    return f"<VBox><height>{height}</height>{body}</VBox>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def prepare_mscx(mscx: str, style: dict[str, object], frame: str, indent_sp: float, copyright_text: str) -> str:
    """MuseScore's import with our layout: no breaks or instrument names of its own, our title frame,
    a first-system indent (HBox, when ``indent_sp`` > 0), a footer text and the sampled style."""
    mscx = re.sub(r"<LayoutBreak>.*?</LayoutBreak>", "", mscx, flags=re.S)
    mscx = re.sub(r"<(VBox|HBox|TBox)>.*?</\1>", "", mscx, flags=re.S)
    mscx = re.sub(r"<(longName|shortName)\b[^>]*?(?:/>|>.*?</\1>)", "", mscx, flags=re.S)
    mscx = re.sub(r'<metaTag name="copyright">.*?</metaTag>', "", mscx, flags=re.S)
    body = mscx.rfind("</Part>")
    first = mscx.find('<Staff id="1">', body)
    if body < 0 or first < 0:
        raise MuseScoreError("the .mscx has no first staff")
    insert = frame + (f"<HBox><width>{indent_sp:.1f}</width></HBox>" if indent_sp > 0 else "")
    at = first + len('<Staff id="1">')
    mscx = mscx[:at] + insert + mscx[at:]
    score = mscx.find("<Score>") + len("<Score>")
    mscx = mscx[:score] + f'<metaTag name="copyright">{_escape(copyright_text)}</metaTag>' + mscx[score:]
    return apply_style(mscx, style)


def page_style(rng: random.Random, font: str) -> dict[str, object]:
    """`sample_style` in ``font`` with page furniture by chance and any last-system fill."""
    style = sample_style(rng, fonts={font: {**MUSIC_FONTS, "Leland": "Leland Text"}[font]},
                         last_system_fill_limit=rng.choice([0.0, 0.3, 0.6, 1.0]))
    numbers = rng.random() < 0.6
    style.update(showPageNumber=int(numbers), showPageNumberOne=int(numbers and rng.random() < 0.5),
                 showFooter=int(rng.random() < 0.5), showHeader=0)
    return style


# ---------------------------------------------------------------- SVG page -> system boxes

def _staff_rows(elements: list[SvgElement], tolerance: float = 0.5) -> list[list[float]]:
    """[y, x0, x1] of every distinct staff line, top to bottom (a line drawn in pieces is one)."""
    rows: list[list[float]] = []
    for e in sorted((e for e in elements if e.kind == "StaffLines"), key=lambda e: e.cy):
        if rows and abs(e.cy - rows[-1][0]) <= tolerance:
            rows[-1][1], rows[-1][2] = min(rows[-1][1], e.x0), max(rows[-1][2], e.x1)
        else:
            rows.append([e.cy, e.x0, e.x1])
    return rows


@dataclass
class PageSystem:
    """One system of an SVG page: its staff-line extent (x0, top line, x1, bottom line), staff space, elements."""

    staff_box: FloatBox
    space: float
    elements: list[SvgElement] = field(default_factory=list)
    staves: list[FloatBox] = field(default_factory=list)  # each staff's line extent, top to bottom


def assign_systems(elements: list[SvgElement], staves_per_system: int) -> tuple[list[PageSystem], set[str]]:
    """The page's systems, top to bottom, each with its elements (see the module doc); and the classes
    met that are in neither PAGE_CLASSES nor SYSTEM_CLASSES (they are given to systems all the same)."""
    rows = _staff_rows(elements)
    per_system = 5 * staves_per_system
    if not rows or len(rows) % per_system:
        raise ValueError(f"{len(rows)} staff lines do not make systems of {staves_per_system} staves")
    systems = []
    for start in range(0, len(rows), per_system):
        chunk = rows[start:start + per_system]
        space = float(np.median(np.diff([r[0] for r in chunk])))
        box = (min(r[1] for r in chunk), chunk[0][0], max(r[2] for r in chunk), chunk[-1][0])
        staves = [(min(r[1] for r in chunk[k:k + 5]), chunk[k][0], max(r[2] for r in chunk[k:k + 5]), chunk[k + 4][0])
                  for k in range(0, per_system, 5)]
        systems.append(PageSystem(box, space, [e for e in elements if e.kind == "StaffLines"
                                               and box[1] - 0.5 <= e.cy <= box[3] + 0.5], staves))
    unknown = set()
    gaps: dict[int, list[SvgElement]] = {}
    for e in elements:
        if e.kind == "StaffLines" or e.kind in PAGE_CLASSES:
            continue
        if e.kind not in SYSTEM_CLASSES:
            unknown.add(e.kind)
        if e.cy < systems[0].staff_box[1]:
            systems[0].elements.append(e)
            continue
        for k, s in enumerate(systems):
            if e.cy <= s.staff_box[3]:  # inside system k's band (or above it, below system k-1's)
                if e.cy >= s.staff_box[1]:
                    s.elements.append(e)
                else:
                    gaps.setdefault(k - 1, []).append(e)
                break
        else:
            systems[-1].elements.append(e)
    for k, pending in gaps.items():
        _split_gap(systems[k], systems[k + 1], pending)
    return systems, unknown


def _split_gap(upper: PageSystem, lower: PageSystem, pending: list[SvgElement]) -> None:
    """Give the elements between two systems to the one each stacks onto, nearest first: the notes
    (with their ledger lines, accidentals and dots) among themselves first, then everything else.

    An element's distance to a system is the vertical gap to the nearest of the system's elements
    that overlaps it horizontally (the staff band overlaps everything); once given, an element
    extends its system's reach (pedal marks below dynamics below ledger-line notes). Notes go
    first because their ledger lines chain them to their own staff a space at a time, while
    stacking all at once let the upper system's slurs and beams reach a high run of the lower
    system's notes first and carry it away.
    """
    _stack(upper, lower, [e for e in pending if e.kind in NOTE_CLASSES])
    _stack(upper, lower, [e for e in pending if e.kind not in NOTE_CLASSES])


def _stack(upper: PageSystem, lower: PageSystem, pending: list[SvgElement]) -> None:
    """`_split_gap`'s greedy: the free element nearest to either system's reach goes to it, until none is left."""
    if not pending:
        return
    n = len(pending)
    boxes = np.array([[e.x0, e.y0, e.x1, e.y1] for e in pending], np.float64)
    slack = 0.5 * (upper.space + lower.space) / 2

    def gaps_to(box: np.ndarray, below: bool) -> np.ndarray:
        overlap = (boxes[:, 0] <= box[2] + slack) & (boxes[:, 2] >= box[0] - slack)
        gap = boxes[:, 1] - box[3] if below else box[1] - boxes[:, 3]
        return np.where(overlap, np.maximum(gap, 0.0), np.inf)

    def reach(system: PageSystem, below: bool) -> np.ndarray:
        band = system.staff_box[3] if below else system.staff_box[1]
        d = np.maximum(boxes[:, 1] - band, 0.0) if below else np.maximum(band - boxes[:, 3], 0.0)
        for e in system.elements:  # e.g. stems and beams of notes inside the band reaching out
            if (below and e.y1 > band) or (not below and e.y0 < band):
                d = np.minimum(d, gaps_to(np.array([e.x0, e.y0, e.x1, e.y1]), below))
        return d

    d_up, d_low = reach(upper, True), reach(lower, False)
    free = np.ones(n, bool)
    for _ in range(n):
        best_up = np.where(free, d_up, np.inf)
        best_low = np.where(free, d_low, np.inf)
        i_up, i_low = int(np.argmin(best_up)), int(np.argmin(best_low))
        if best_up[i_up] <= best_low[i_low]:
            i, target, below = i_up, upper, True
        else:
            i, target, below = i_low, lower, False
        free[i] = False
        target.elements.append(pending[i])
        if below:
            d_up = np.minimum(d_up, gaps_to(boxes[i], True))
        else:
            d_low = np.minimum(d_low, gaps_to(boxes[i], False))


VOICE_CLASSES = frozenset({"Lyrics", "LyricsLineSegment"})  # always the voice's, wherever they sit


def _piano_pair(system: PageSystem) -> int:
    """Index of the piano's upper staff in ``system``: the adjacent pair its brace (``Bracket``) spans,
    else the lowest two staves."""
    tops = [s[1] for s in system.staves]
    bottoms = [s[3] for s in system.staves]
    for e in system.elements:
        if e.kind != "Bracket":
            continue
        for k in range(len(system.staves) - 1):
            if (abs(e.y0 - tops[k]) <= 1.5 * system.space and abs(e.y1 - bottoms[k + 1]) <= 1.5 * system.space):
                return k
    return len(system.staves) - 2


def split_piano(system: PageSystem) -> tuple[PageSystem, list[SvgElement]]:
    """(the piano's two staves of a system as a system of their own, the elements left out).

    A voice + piano system is read as its piano pair: the voice staff, its lyrics and everything
    else of the voice are left out. Each element goes to a staff: lyrics to the voice; a barline
    to the staff it starts on (MuseScore draws a system's start line staff by staff, each segment
    down to the next staff); an element inside a staff's band (or above the top staff / below the
    bottom one) to that staff; one in the gap between a voice staff and a piano staff to the one it
    stacks onto (as between systems, `_split_gap`, the lyrics already the voice's); one in a gap
    between two staves of the same side to that side. An element reaching into the bands of both
    sides (a bracket around the whole system) is left out. A system of two staves is its own piano.
    """
    n = len(system.staves)
    if n <= 2:
        return system, []
    k = _piano_pair(system)
    piano_rows = {k, k + 1}
    units = [PageSystem(s, system.space, [], [s]) for s in system.staves]
    sp = system.space
    pending: dict[int, list[SvgElement]] = {}  # gap index (between staff j and j + 1) -> elements
    left_out: list[SvgElement] = []
    for e in system.elements:
        piano_hit = any(e.y0 < s[3] and e.y1 > s[1] for j, s in enumerate(system.staves) if j in piano_rows)
        other_hit = any(e.y0 < s[3] and e.y1 > s[1] for j, s in enumerate(system.staves) if j not in piano_rows)
        if e.kind == "BarLine":
            y = e.y0
        elif e.kind in VOICE_CLASSES:
            others = [j for j in range(n) if j not in piano_rows]
            j = min(others, key=lambda j: abs(e.cy - (system.staves[j][1] + system.staves[j][3]) / 2))
            units[j].elements.append(e)
            continue
        elif piano_hit and other_hit:
            left_out.append(e)
            continue
        else:
            y = e.cy
        for j, (_, top, _, bottom) in enumerate(system.staves):
            if j == 0 and y < top - 0.5 * sp or top - 0.5 * sp <= y <= bottom + 0.5 * sp:
                units[j].elements.append(e)
                break
            if j + 1 < n and bottom + 0.5 * sp < y < system.staves[j + 1][1] - 0.5 * sp:
                pending.setdefault(j, []).append(e)
                break
        else:
            units[-1].elements.append(e)
    for j, elements in sorted(pending.items()):
        if (j in piano_rows) == (j + 1 in piano_rows):
            units[j].elements.extend(elements)  # between two staves of one side (the piano's own gap)
        else:
            _split_gap(units[j], units[j + 1], elements)
    piano = PageSystem((min(system.staves[k][0], system.staves[k + 1][0]), system.staves[k][1],
                        max(system.staves[k][2], system.staves[k + 1][2]), system.staves[k + 1][3]), sp,
                       units[k].elements + units[k + 1].elements, system.staves[k:k + 2])
    left_out += [e for j, u in enumerate(units) if j not in piano_rows for e in u.elements]
    return piano, left_out


def ink_box(head: str, elements: list[SvgElement], zoom: float = 1.0, threshold: int = 200) -> FloatBox | None:
    """Ink box (SVG units) of these elements drawn alone at ``zoom`` (ink = gray below ``threshold``)."""
    if not elements:
        return None
    pad = 20.0  # strokes reach beyond the coordinates
    x0 = min(e.x0 for e in elements) - pad
    y0 = min(e.y0 for e in elements) - pad
    width = max(e.x1 for e in elements) + pad - x0
    height = max(e.y1 for e in elements) + pad - y0
    svg = re.sub(r"<svg\b[^>]*>",
                 f'<svg width="{width:.2f}px" height="{height:.2f}px" viewBox="{x0:.2f} {y0:.2f} {width:.2f} '
                 f'{height:.2f}" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                 'version="1.2">', head, count=1, flags=re.S)
    gray = rasterize_svg(svg + "\n".join(e.text for e in elements) + "\n</svg>\n", zoom=zoom)
    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return None
    return (x0 + cols[0] / zoom, y0 + rows[0] / zoom, x0 + (cols[-1] + 1) / zoom, y0 + (rows[-1] + 1) / zoom)


def drawable_svg(head: str, elements: list[SvgElement]) -> str:
    """The page as the rasterizer should see it (parse_svg_page made unstroked glyphs explicit)."""
    return head + "\n".join(e.text for e in elements) + "\n</svg>\n"


def systems_per_page(musicxml: Path) -> list[int]:
    """Systems on each page of MuseScore's own MusicXML export (its new-page / new-system prints)."""
    root = ET.parse(musicxml).getroot()
    part = root.find("part")
    counts = [0]
    for index, measure in enumerate(part.findall("measure") if part is not None else []):
        prints = measure.findall("print")
        new_page = any(p.get("new-page") == "yes" for p in prints)
        new_system = any(p.get("new-system") == "yes" for p in prints)
        if index == 0:
            counts[0] = 1
        elif new_page:
            counts.append(1)
        elif new_system:
            counts[-1] += 1
    return counts


# ---------------------------------------------------------------- pages

@dataclass
class MuseScorePage:
    """One engraved page: its drawable SVG, and per system the true ink box and staff-line box (SVG units)."""

    name: str
    piece: str
    kind: str  # piano | voice+piano
    font: str
    page: int  # 0-based
    pages: int
    width: float  # SVG units (1/360 inch)
    height: float
    boxes: list[FloatBox]
    staff_boxes: list[FloatBox]
    musescore_systems: int  # systems MuseScore's MusicXML puts on this page
    style: dict
    svg_file: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def svg(self) -> str:
        return Path(self.svg_file).read_text()

    def render(self, dpi: float) -> tuple[np.ndarray, list[Box]]:
        """(gray page uint8, true box of each system in pixels) at ``dpi``."""
        zoom = dpi / SVG_DPI
        gray = rasterize_svg(self.svg, zoom=zoom)
        h, w = gray.shape
        boxes = [(max(0, math.floor(x0 * zoom)), max(0, math.floor(y0 * zoom)),
                  min(w, math.ceil(x1 * zoom)), min(h, math.ceil(y1 * zoom))) for x0, y0, x1, y1 in self.boxes]
        return gray, boxes

    def save(self, folder: Path) -> None:
        data = asdict(self)
        data["svg_file"] = Path(self.svg_file).name
        (folder / "page.json").write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "MuseScorePage":
        data = json.loads((folder / "page.json").read_text())
        data["svg_file"] = str(folder / data["svg_file"])
        for key in ("boxes", "staff_boxes"):
            data[key] = [tuple(b) for b in data[key]]
        return cls(**data)


@dataclass
class PageRequest:
    """One page to engrave: a piece, voice+piano or piano only, a music font and a seed."""

    path: Path
    kind: str
    font: str
    seed: int

    @property
    def key(self) -> str:
        digest = hashlib.sha1(f"{self.path.parent.name}/{self.path.name}".encode()).hexdigest()[:6]
        kind = "vp" if self.kind == "voice+piano" else "pf"
        return f"{self.path.stem[:40]}-{digest}-{kind}-{self.font}-s{self.seed}-v{CACHE_VERSION}"

    @property
    def sample_key(self) -> str:
        """What the page's random choices (style, title frame, indent, page) are drawn from: the key of
        cache version 1, so that a version bump (truth derived anew) engraves the same pages."""
        return self.key.rsplit("-v", 1)[0] + "-v1"


def cached_page(request: PageRequest, root: Path | None = None) -> MuseScorePage | str | None:
    """The page from the cache, the reason it failed before, or None when never tried."""
    folder = (root or cache_root()) / "musescore" / request.key
    if (folder / "page.json").exists():
        return MuseScorePage.load(folder)
    if (folder / "failed.txt").exists():
        return (folder / "failed.txt").read_text()
    return None


def _choose_page(rng: random.Random, systems: list[int]) -> int | None:
    """First page about half the time, else the last one or one between; pages of one system only
    if nothing else (a page with no system never)."""
    usable = [i for i, n in enumerate(systems) if n >= 2] or [i for i, n in enumerate(systems) if n >= 1]
    if not usable:
        return None
    u = rng.random()
    if u < 0.5 or len(usable) == 1:
        return usable[0]
    if u < 0.75:
        return usable[-1]
    return rng.choice(usable[1:-1] or usable)


def _finish(request: PageRequest, folder: Path, xml: Path, svg_stem: Path, style: dict,
            rng: random.Random, staves: int) -> MuseScorePage:
    """Pick the page of one export, find its systems' boxes, store it in ``folder``."""
    counts = systems_per_page(xml)
    svg_files = _svg_pages(svg_stem)
    if len(svg_files) != len(counts):
        raise ValueError(f"{len(svg_files)} SVG pages but {len(counts)} pages in MuseScore's MusicXML")
    page = _choose_page(rng, counts)
    if page is None:
        raise ValueError("no page holds a system")
    head, elements = parse_svg_page(svg_files[page].read_text())
    width, height = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', head).groups())
    result = MuseScorePage(
        name=f"{request.path.stem} p{page + 1}/{len(counts)} {request.kind} {request.font}", piece=request.path.name,
        kind=request.kind, font=request.font, page=page, pages=len(counts), width=width, height=height,
        boxes=[], staff_boxes=[], musescore_systems=counts[page], style=style)
    return _with_truth(result, head, elements, staves, folder)


def _with_truth(page: MuseScorePage, head: str, elements: list[SvgElement], staves: int,
                folder: Path) -> MuseScorePage:
    """`page` with the true boxes of its SVG's systems, stored in ``folder`` with its drawable SVG."""
    systems, unknown = assign_systems(elements, staves)
    if len(systems) != page.musescore_systems:
        raise ValueError(f"{len(systems)} systems drawn on page {page.page + 1}, MuseScore's MusicXML has "
                         f"{page.musescore_systems}")
    systems = [split_piano(system)[0] for system in systems]  # voice + piano: the piano pair alone
    boxes = []
    for system in systems:
        box = ink_box(head, system.elements)
        if box is None:
            raise ValueError("a system without ink")
        boxes.append(tuple(round(float(v), 2) for v in box))
    folder.mkdir(parents=True, exist_ok=True)
    svg_file = folder / "page.svg"
    svg_file.write_text(drawable_svg(head, elements))
    page = replace(page, boxes=boxes, staff_boxes=[tuple(round(float(v), 2) for v in s.staff_box) for s in systems],
                   svg_file=str(svg_file),
                   notes=[f"unlisted classes given to systems: {sorted(unknown)}"] if unknown else [])
    page.save(folder)
    return page


def _truth_anew(request: PageRequest, root: Path) -> MuseScorePage | None:
    """The page an earlier cache version engraved for `request`, its truth derived again by this version's
    rules from the SVG it kept (no MuseScore run: the same page, only the boxes can change); None when
    there is none."""
    stem = request.key.rsplit("-v", 1)[0]
    for version in range(int(CACHE_VERSION) - 1, 0, -1):
        old = root / "musescore" / f"{stem}-v{version}"
        if (old / "page.json").exists() and (old / "page.svg").exists():
            page = MuseScorePage.load(old)
            head, elements = parse_svg_page(page.svg)
            staves = len(_staff_rows(elements)) // 5 // max(1, page.musescore_systems)
            try:
                return _with_truth(page, head, elements, staves, root / "musescore" / request.key)
            except ValueError:
                return None
    return None


def engrave_pages(requests: list[PageRequest], root: Path | None = None,
                  timeout_per_file: float = 90.0) -> list[MuseScorePage | str]:
    """Each requested page (from the cache, else engraved: two MuseScore processes for all), or the
    reason it could not be made; a failure is remembered in the cache and never raises."""
    if find_mscore() is None:
        raise MuseScoreError("MuseScore 3 not found: apt-get install musescore3 (or set ACAI_MSCORE)")
    root = root or cache_root()
    results: list[MuseScorePage | str | None] = [cached_page(r, root) or _truth_anew(r, root) for r in requests]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results  # type: ignore[return-value]

    def fail(i: int, reason: str) -> None:
        folder = root / "musescore" / requests[i].key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failed.txt").write_text(reason[:500])
        results[i] = reason

    with tempfile.TemporaryDirectory(prefix="acai-mspages-") as tmp:
        tmp = Path(tmp)
        imports = []
        for i in todo:
            r = requests[i]
            try:
                data = piece_musicxml(r.path, r.kind, root)
            except Exception as error:  # a piece music21 or the part finder cannot read
                fail(i, f"cannot read the piece: {type(error).__name__}: {error}")
                continue
            source = tmp / (f"in{i}.mxl" if data[:2] == b"PK" else f"in{i}.musicxml")
            source.write_bytes(data)
            imports.append((i, source, tmp / f"in{i}.mscx"))
        report = convert_batch([(src, [mscx]) for _, src, mscx in imports], timeout_per_file=timeout_per_file)
        exports = []
        for i, _, mscx in imports:
            r = requests[i]
            if not mscx.exists():
                fail(i, f"MuseScore import failed: {report.failures.get(str(mscx), report.log_tail[-300:])}")
                continue
            rng = random.Random(f"musescore-page/{r.sample_key}")
            style = page_style(rng, r.font)
            meta = piece_metadata(r.path)
            indent = rng.uniform(3.0, 9.0) if rng.random() < 0.5 else 0.0
            copyright_text = rng.choice(["Public domain", "Edition based on the first edition",
                                         "Engraved with MuseScore", "Urtext"])
            styled = tmp / f"styled{i}.mscx"
            try:
                styled.write_text(prepare_mscx(mscx.read_text(), style, title_frame(meta, rng, r.kind), indent,
                                               copyright_text))
            except MuseScoreError as error:
                fail(i, str(error))
                continue
            text = styled.read_text()
            staves = len(re.findall(r'<Staff id="\d+">', text[:text.rfind("</Part>")]))  # every staff of the score
            exports.append((i, styled, tmp / f"out{i}.musicxml", tmp / f"out{i}.svg", style, rng, staves))
        report = convert_batch([(s, [x, v]) for _, s, x, v, *_ in exports], timeout_per_file=timeout_per_file)
        for i, _, xml, svg, style, rng, staves in exports:
            stem = svg.with_suffix("")
            if not xml.exists() or not _svg_pages(stem):
                fail(i, "MuseScore export failed: " + (report.failures.get(str(xml))
                                                       or report.failures.get(str(svg), "no output")))
                continue
            try:
                results[i] = _finish(requests[i], root / "musescore" / requests[i].key, xml, stem, style, rng,
                                     staves)
            except Exception as error:  # one page's surprise must not sink the batch
                fail(i, f"{type(error).__name__}: {error}")
    return results  # type: ignore[return-value]


def fonts() -> list[str]:
    """The music fonts this MuseScore ships, in a fixed order."""
    return sorted(available_fonts())
