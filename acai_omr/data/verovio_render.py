"""Verovio as the fast engraver: a whole piece laid out once, then every system engraved alone.

The piece is laid out at a sampled page width, and the measures each line
holds decide where the gold is cut. Each cut system (key and clefs restated)
is then engraved by itself at the same page width and justified, so the image
shows exactly the MusicXML the gold is linearized from: image and gold agree
by construction, and the measures drawn in the SVG are counted as a check.
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

from acai_omr.data.layout import (MEASURES_UNLIKE_GOLD, RenderedSystem, crop_to_ink_at, cut_into_systems,
                                  measures_of, shows_time, without_breaks)
from acai_omr.lmx.musicxml import part_to_score, score_to_string
from acai_omr.lmx.reading_order import REST
from acai_omr.render.raster import rasterize_svg

FONTS = ("Leipzig", "Bravura", "Leland", "Petaluma", "Gootville")
STAFF_SPACE_SVG_PX = 18.0  # one staff space in Verovio's SVG px at scale 100 (unit 9 x 2)

# Verovio draws invisible milestones as ellipses that browsers hide with CSS
_PLACEHOLDER = re.compile(r'<g\b[^>]*class="[^"]*\bplaceholder\b[^"]*"[^>]*>.*?</g>', re.S)
_SYSTEM = re.compile(r'<g\b[^>]*class="system"')
_MEASURE = re.compile(r'class="measure\b')
# what drawn_notes reads: each note's or rest's group, its first glyph, and the page's coordinate frame
_EVENT = re.compile(r'<g\b[^>]*\bclass="(note|rest|mRest)\b[^"]*"[^>]*>')
_ID = re.compile(r'\bid="([^"]+)"')
_NOTEHEAD = re.compile(r'class="notehead"')
_TRANSLATE = re.compile(r'translate\(([-\d.]+),\s*([-\d.]+)\)')
_OUTER_WIDTH = re.compile(r'<svg\b[^>]*\bwidth="([\d.]+)px"')
_VIEWBOX = re.compile(r'class="definition-scale"[^>]*viewBox="[-\d.]+ [-\d.]+ ([\d.]+) [\d.]+"')
_PAGE_MARGIN = re.compile(r'class="page-margin"[^>]*transform="translate\(([-\d.]+),\s*([-\d.]+)\)"')
GLYPH_HALF_WIDTH_SPACES = 0.55  # a glyph is placed by its left edge; its centre is about this far right


def sample_options(rng: random.Random) -> dict:
    """Verovio engraving options for one piece: font, line width (measures per system), spacing, line weights."""
    return {
        "font": rng.choice(FONTS),
        "pageWidth": rng.randint(1500, 2700),
        "pageMarginLeft": rng.randint(20, 120),
        "pageMarginRight": rng.randint(20, 120),
        "spacingLinear": round(rng.uniform(0.18, 0.35), 3),
        "spacingNonLinear": round(rng.uniform(0.5, 0.7), 3),
        "spacingStaff": rng.randint(7, 16),
        "staffLineWidth": round(rng.uniform(0.1, 0.25), 3),
        "stemWidth": round(rng.uniform(0.15, 0.3), 3),
        "barLineWidth": round(rng.uniform(0.2, 0.5), 3),
        "ledgerLineThickness": round(rng.uniform(0.18, 0.35), 3),
        "beamMaxSlope": rng.randint(4, 20),
        "thickBarlineThickness": round(rng.uniform(0.7, 1.2), 3),
    }


def clean_svg(svg: str) -> str:
    """Drop what Verovio draws but a browser hides (milestone placeholders)."""
    return _PLACEHOLDER.sub("", svg)


def measures_per_system(svg_pages: list[str]) -> list[int]:
    """How many measures each printed line holds, in reading order, from Verovio's SVG pages."""
    counts = []
    for svg in svg_pages:
        starts = [match.start() for match in _SYSTEM.finditer(svg)] + [len(svg)]
        counts += [len(_MEASURE.findall(svg, a, b)) for a, b in zip(starts, starts[1:])]
    return counts


def drawn_notes(svg: str, attributes) -> list[tuple[float, float, str]]:
    """Where each notehead and rest of a Verovio SVG is drawn, in the SVG's px, with its label.

    The label is the LMX pitch token of the note ("E4", from the element's MEI `pname`/`oct`
    through ``attributes(id) -> dict``, e.g. ``toolkit.getElementAttr``) or "rest", the labels
    `acai_omr.lmx.reading_order` gives the same notes. The point is the glyph's centre: its
    placement is the left edge on the glyph's baseline, which for noteheads is their middle.
    """
    outer, box, margin = _OUTER_WIDTH.search(svg), _VIEWBOX.search(svg), _PAGE_MARGIN.search(svg)
    if not (outer and box):
        raise ValueError("not a Verovio page: no outer width or definition-scale viewBox")
    px_per_unit = float(outer.group(1)) / float(box.group(1))
    mx, my = (float(margin.group(1)), float(margin.group(2))) if margin else (0.0, 0.0)
    half_width = GLYPH_HALF_WIDTH_SPACES * STAFF_SPACE_SVG_PX / px_per_unit  # in page units
    events = list(_EVENT.finditer(svg))
    notes = []
    for index, event in enumerate(events):
        end = events[index + 1].start() if index + 1 < len(events) else len(svg)
        start = event.end()
        if event.group(1) == "note":
            head = _NOTEHEAD.search(svg, start, end)
            if head is None:
                continue  # drawn without a notehead group: not a note this reads
            start = head.end()
            element = _ID.search(event.group(0))
            attrs = attributes(element.group(1)) if element else {}
            if "pname" not in attrs or "oct" not in attrs:
                continue
            label = f"{attrs['pname'].upper()}{attrs['oct']}"
        else:
            label = REST
        place = _TRANSLATE.search(svg, start, end)
        if place is None:
            continue
        x, y = float(place.group(1)) + half_width + mx, float(place.group(2)) + my
        notes.append((x * px_per_unit, y * px_per_unit, label))
    return notes


class VerovioEngraver:
    """One Verovio toolkit, reused for every piece a worker renders (creating one costs fonts and time)."""

    def __init__(self) -> None:
        import verovio

        verovio.enableLog(verovio.LOG_OFF)
        self.toolkit = verovio.toolkit()

    def _load(self, xml: str, options: dict, breaks: str) -> int:
        self.toolkit.resetOptions()
        self.toolkit.setOptions({**options, "scale": 100, "breaks": breaks, "pageHeight": 60000,
                                 "adjustPageHeight": True, "header": "none", "footer": "none",
                                 "minLastJustification": 0.0})
        if not self.toolkit.loadData(xml):
            raise ValueError("Verovio could not load the MusicXML")
        return self.toolkit.getPageCount()

    def layout(self, part: ET.Element, options: dict) -> list[int]:
        """Measures per system when Verovio lays the whole part out with ``options``."""
        pages = self._load(score_to_string(part_to_score(part, name="")), options, "auto")
        return measures_per_system([self.toolkit.renderToSVG(page) for page in range(1, pages + 1)])

    def engrave(self, system: ET.Element, options: dict, staff_space_px: float) -> tuple[object, int, list]:
        """(uint8 image, measures drawn, drawn notes in image px) of one system engraved alone on one justified line."""
        pages = self._load(score_to_string(part_to_score(system, name="")), options, "none")
        svg = clean_svg(self.toolkit.renderToSVG(1))
        drawn = sum(measures_per_system([svg])) if pages == 1 else -1
        zoom = staff_space_px / STAFF_SPACE_SVG_PX
        image = rasterize_svg(svg, zoom=zoom)
        notes = [(x * zoom, y * zoom, label) for x, y, label in drawn_notes(svg, self._attributes)]
        return image, drawn, notes

    def _attributes(self, element_id: str) -> dict:
        attrs = self.toolkit.getElementAttr(element_id)
        return attrs if isinstance(attrs, dict) else {}

    def render_systems(self, score: ET.Element, options: dict, rng: random.Random, staff_space_px: float,
                       time_probability: float = 0.0, margin_spaces: float = 1.0,
                       left_out: list[str] | None = None) -> list[RenderedSystem]:
        """Every system of a piano-only score, each with its gold part; a system whose drawing disagrees is
        dropped, and why goes on ``left_out``."""
        part = without_breaks(score.find("part"))
        counts = self.layout(part, options)
        if sum(counts) != len(measures_of(part)):
            raise ValueError(f"Verovio laid out {sum(counts)} of {len(measures_of(part))} measures")
        systems = []
        margin = max(2, round(margin_spaces * staff_space_px))
        for index, gold in enumerate(cut_into_systems(part, counts, rng, time_probability)):
            image, drawn, notes = self.engrave(gold, options, staff_space_px)
            if drawn != len(measures_of(gold)):  # never train on a drawing of other measures than the gold's
                if left_out is not None:
                    left_out.append(f"system {index}: {MEASURES_UNLIKE_GOLD} ({drawn} drawn, {len(measures_of(gold))} in it)")
                continue
            image, (dx, dy) = crop_to_ink_at(image, margin)
            systems.append(RenderedSystem(
                part=gold, image=image,
                options={**options, "engraver": "verovio", "staff_space_px": staff_space_px, "system": index,
                         "measures_drawn": drawn},
                time_shown=shows_time(gold),
                notes=[(round(x - dx, 1), round(y - dy, 1), label) for x, y, label in notes]))
        return systems
