"""Cutting a piano part into systems where an engraver broke its lines, and tidying system images.

Both engravers lay a whole piece out first; the measures each printed line
holds decide where the gold is cut, so a training system holds as many
measures as a real page shows. Cutting goes through the codec's own
``split_part_into_systems``, which restates key and clefs at every system start
(spec §1.5); time is restated only when asked (a printed system rarely shows it).
"""

from __future__ import annotations

import copy
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from acai_omr.lmx.musicxml import sort_attributes, split_part_into_systems


# why an engraver drew a system but did not return it: every reason starts with one of these, so the
# build's summary can count them (`data.build`)
MEASURES_UNLIKE_GOLD = "measures drawn unlike the gold"
TIME_UNLIKE_GOLD = "time signature drawn unlike the gold"
NOTES_UNLIKE_GOLD = "notes drawn unlike the gold"
NOT_DRAWN = "not drawn"
UNMEASURED = "unmeasured passage"
LEFT_OUT_KINDS = (MEASURES_UNLIKE_GOLD, TIME_UNLIKE_GOLD, NOTES_UNLIKE_GOLD, NOT_DRAWN, UNMEASURED)


@dataclass
class RenderedSystem:
    """One engraved system: its gold (a ``<part>`` with a restated header) and its grayscale image."""

    part: ET.Element
    image: np.ndarray  # uint8 (H, W), white paper = 255, with a white margin all round
    options: dict = field(default_factory=dict)  # engraver settings, plus measures_drawn
    time_shown: bool = False
    # where each notehead and rest is drawn: (x, y) in image pixels and its label ("E4" or "rest");
    # None when they could not be read (a MuseScore system under an ottava line)
    notes: list[tuple[float, float, str]] | None = None


def measures_of(part: ET.Element) -> list[ET.Element]:
    return part.findall("measure")


def _is_break(element: ET.Element) -> bool:
    return element.tag == "print" and (element.get("new-system") == "yes" or element.get("new-page") == "yes")


def without_breaks(part: ET.Element) -> ET.Element:
    """A copy of ``part`` with every system/page break removed (the engraver decides the layout)."""
    part = copy.deepcopy(part)
    for measure in measures_of(part):
        for child in list(measure):
            if child.tag == "print":
                child.attrib.pop("new-system", None)
                child.attrib.pop("new-page", None)
                if not child.attrib and len(child) == 0:
                    measure.remove(child)
    return part


def _head_attributes(measure: ET.Element) -> ET.Element | None:
    for child in measure:
        if child.tag == "attributes":
            return child
        if child.tag in ("note", "forward", "backup"):
            return None
    return None


def shows_time(system: ET.Element) -> bool:
    """Whether the system's first measure states a time signature before its first note."""
    measures = measures_of(system)
    head = _head_attributes(measures[0]) if measures else None
    return head is not None and head.find("time") is not None


def restate_time(measure: ET.Element, time: ET.Element) -> None:
    """Put a copy of `time` in the attributes that open `measure` (made when it has none)."""
    head = _head_attributes(measure)
    if head is None:
        head = ET.Element("attributes")
        at = next((i for i, child in enumerate(measure) if child.tag != "print"), len(measure))
        measure.insert(at, head)
    head.append(copy.deepcopy(time))
    sort_attributes(head)


def cut_into_systems(part: ET.Element, counts: list[int], rng: random.Random | None = None,
                     time_probability: float = 0.0) -> list[ET.Element]:
    """Cut ``part`` (breaks already removed) into systems of ``counts`` measures each.

    Every later system restates key and clefs; with ``time_probability`` it also
    restates the time signature in force (drawn per system from ``rng``).
    """
    measures = measures_of(part)
    if sum(counts) != len(measures) or any(c <= 0 for c in counts):
        raise ValueError(f"system measure counts {counts} do not add up to the part's {len(measures)} measures")
    marked = copy.deepcopy(part)
    start = 0
    for count in counts[:-1]:
        start += count
        measures_of(marked)[start].insert(0, ET.Element("print", {"new-system": "yes"}))
    systems = split_part_into_systems(marked)
    if time_probability > 0:
        rng = rng or random.Random(0)
        time: ET.Element | None = None
        for system in systems:
            if time is not None and not shows_time(system) and rng.random() < time_probability:
                restate_time(measures_of(system)[0], time)
            for element in system.iter("time"):
                time = element
    return systems


def crop_to_ink(gray: np.ndarray, margin: int, threshold: int = 200) -> np.ndarray:
    """Crop to the ink's bounding box plus ``margin`` white pixels on every side."""
    return crop_to_ink_at(gray, margin, threshold)[0]


def crop_to_ink_at(gray: np.ndarray, margin: int, threshold: int = 200) -> tuple[np.ndarray, tuple[int, int]]:
    """`crop_to_ink`, and the (x, y) of the input that the output's (0, 0) shows (to move points along)."""
    ink = gray < threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        raise ValueError("the system image holds no ink")
    body = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    return np.pad(body, margin, constant_values=255), (int(cols[0]) - margin, int(rows[0]) - margin)
