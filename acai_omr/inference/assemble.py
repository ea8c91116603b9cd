"""Join per-system parts (one per transcribed crop) into one score in reading order.

The model transcribes each system on its own, so each system's first measure
restates clefs, key and divisions (LMX spec §1.5). Joined naively, every
system would show a fresh key and time signature; we drop restated attributes
that equal what is already in force and mark each later system's first
measure with <print new-system="yes"/> (or new-page="yes" when it begins a new
page), which is the inverse of `acai_omr.lmx.musicxml.split_part_into_systems`.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Sequence

from acai_omr.lmx.musicxml import part_to_score, score_to_string

BREAK_NONE, BREAK_SYSTEM, BREAK_PAGE = "none", "system", "page"


def _signature(element: ET.Element) -> str:
    """Compare attribute elements by content, ignoring whitespace."""
    clone = copy.deepcopy(element)
    for node in clone.iter():
        node.tail = None
        if node.text is not None:
            node.text = node.text.strip()
    return ET.tostring(clone, encoding="unicode")


class _InForce:
    """The attributes in force at the end of what is joined so far."""

    def __init__(self) -> None:
        self.single: dict[str, str] = {}  # divisions / key / time / staves -> signature
        self.clefs: dict[str, str] = {}  # staff number -> clef signature

    def drop_redundant(self, attributes: ET.Element) -> None:
        """Remove children equal to what is already in force (the restated header of a new system)."""
        for child in list(attributes):
            if child.tag == "clef":
                if self.clefs.get(child.get("number", "1")) == _signature(child):
                    attributes.remove(child)
            elif child.tag in ("divisions", "key", "time", "staves"):
                if self.single.get(child.tag) == _signature(child):
                    attributes.remove(child)

    def update(self, attributes: ET.Element) -> None:
        for child in attributes:
            if child.tag == "clef":
                self.clefs[child.get("number", "1")] = _signature(child)
            elif child.tag in ("divisions", "key", "time", "staves"):
                self.single[child.tag] = _signature(child)


def join_parts(parts: Sequence[ET.Element | None], breaks: Sequence[str]) -> ET.Element:
    """One <part> from system parts in reading order.

    ``breaks[i]`` says what precedes system i: BREAK_SYSTEM, BREAK_PAGE or BREAK_NONE
    (ignored for the first system). Missing (None) or empty parts are skipped.
    Measures are renumbered from 1.
    """
    if len(parts) != len(breaks):
        raise ValueError(f"{len(parts)} parts but {len(breaks)} breaks")
    joined = ET.Element("part", id="P1")
    state = _InForce()
    pending_break = BREAK_NONE
    for part, brk in zip(parts, breaks):
        if brk == BREAK_PAGE or (brk == BREAK_SYSTEM and pending_break != BREAK_PAGE):
            pending_break = brk
        measures = [m for m in (part if part is not None else []) if m.tag == "measure"]
        if not measures:
            continue
        first = True
        for measure in measures:
            measure = copy.deepcopy(measure)
            if first and len(joined):
                for attributes in measure.findall("attributes")[:1]:
                    state.drop_redundant(attributes)
                    if len(attributes) == 0:
                        measure.remove(attributes)
                if pending_break in (BREAK_SYSTEM, BREAK_PAGE):
                    for old in measure.findall("print"):
                        measure.remove(old)
                    flag = "new-page" if pending_break == BREAK_PAGE else "new-system"
                    measure.insert(0, ET.Element("print", {flag: "yes"}))
            first = False
            for attributes in measure.iter("attributes"):
                state.update(attributes)
            measure.set("number", str(len(joined) + 1))
            joined.append(measure)
        pending_break = BREAK_NONE
    return joined


def assemble_score(parts: Sequence[ET.Element | None], breaks: Sequence[str], title: str = "") -> str:
    """The joined MusicXML document (score-partwise, one piano part)."""
    score = part_to_score(join_parts(parts, breaks), part_id="P1", name="Piano")
    if title:
        work = ET.Element("work")
        ET.SubElement(work, "work-title").text = title
        score.insert(0, work)
    return score_to_string(score)
