"""Join per-system parts (one per transcribed crop) into one coherent score in reading order.

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
from fractions import Fraction
from typing import Sequence

from acai_omr.lmx.musicxml import part_to_score, score_to_string, sort_attributes

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


def assemble_score(parts: Sequence[ET.Element | None], breaks: Sequence[str], title: str = "",
                   repairs: list | None = None) -> str:
    """The joined MusicXML document (score-partwise, one piano part), made coherent (`cohere_parts`: one
    key, a time signature, full measures); the repairs made to each system are appended to `repairs`."""
    coherent, made = cohere_parts(parts)
    if repairs is not None:
        repairs.extend(made)
    score = part_to_score(join_parts(coherent, breaks), part_id="P1", name="Piano")
    if title:
        work = ET.Element("work")
        ET.SubElement(work, "work-title").text = title
        score.insert(0, work)
    return score_to_string(score)


# ---------------------------------------------------------------- a coherent score from separately read systems

def cohere_parts(parts: Sequence[ET.Element | None]) -> tuple[list[ET.Element | None], list[list[str]]]:
    """Copies of the systems' parts made into one coherent score, and the repairs made to each system.

    The model reads each system on its own, so systems disagree where a score must not:
    - **One key for the page**: the key most systems open with (the earliest of a tie) replaces a
      system header's other key; key changes inside a system are kept.
    - **A time signature in the first measure**: the first one a system header prints (the model
      read it), else the common one most measures fill (`_infer_time`).
    - **Full measures in both staves**: where a voice or a staff ends before the bar's length it is
      padded with a hidden rest (`print-object="no"`), and notes the model wrote past the barline
      are cut, with a comment in the MusicXML saying so. The first measure (a pickup may be short)
      is only cut, never padded, and so is the last.
    """
    parts = [copy.deepcopy(part) if part is not None else None for part in parts]
    repairs: list[list[str]] = [[] for _ in parts]
    headers = [_header(part) for part in parts]
    keys = [_signature(header.find("key")) for header in headers if header is not None and header.find("key") is not None]
    if keys:
        page_key = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
        for index, header in enumerate(headers):
            key = header.find("key") if header is not None else None
            if key is not None and _signature(key) != page_key:
                repairs[index].append(f"key {_fifths(key)} -> {_fifths(ET.fromstring(page_key))} (the page's key)")
                header.remove(key)
                header.append(ET.fromstring(page_key))
                sort_attributes(header)
    first = next((i for i, part in enumerate(parts) if _measures(part)), None)
    if first is None:
        return parts, repairs
    time = next((h.find("time") for h in headers if h is not None and h.find("time") is not None), None)
    if time is None:
        inferred = _infer_time(parts)
        if inferred is not None:
            time = ET.Element("time")
            ET.SubElement(time, "beats").text, ET.SubElement(time, "beat-type").text = map(str, inferred)
            repairs[first].append(f"time {inferred[0]}/{inferred[1]} inferred from the measures' lengths")
    if time is not None and headers[first] is not None and headers[first].find("time") is None:
        headers[first].append(copy.deepcopy(time))
        sort_attributes(headers[first])
    bar = None
    last = max(i for i, part in enumerate(parts) if _measures(part))
    for index, part in enumerate(parts):
        divisions = None
        measures = _measures(part)
        for number, measure in enumerate(measures, start=1):
            for attributes in measure.findall("attributes"):
                if attributes.find("divisions") is not None:
                    divisions = int(attributes.findtext("divisions"))
                if attributes.find("time") is not None:
                    bar = _bar_length(attributes.find("time"))
            if bar is None or divisions is None:
                continue
            edge = (index == first and number == 1) or (index == last and number == len(measures))
            for change in _fill_measure(measure, bar * divisions, pad=not edge):
                repairs[index].append(f"measure {number}: {change}")
    return parts, repairs


def _measures(part: ET.Element | None) -> list[ET.Element]:
    return [m for m in part if m.tag == "measure"] if part is not None else []


def _header(part: ET.Element | None) -> ET.Element | None:
    """The <attributes> a system opens with (its first measure's), or None."""
    measures = _measures(part)
    return measures[0].find("attributes") if measures else None


def _fifths(key: ET.Element) -> str:
    return (key.findtext("fifths") or "0").strip()


def _bar_length(time: ET.Element) -> Fraction | None:
    """A bar's length in quarter notes, or None for a time signature that is not N/M."""
    try:
        return Fraction(int(time.findtext("beats")) * 4, int(time.findtext("beat-type")))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def note_spans(measure: ET.Element) -> tuple[list[tuple[ET.Element, int, int]], int]:
    """([(note, start, duration)] of each timed note of a measure, in divisions; the cursor where the
    measure ends), as MusicXML reads them: <backup>/<forward> move the cursor, a chord note starts with
    the note before it, grace notes take no time (left out)."""
    cursor, spans = 0, []
    for element in measure:
        duration = int(element.findtext("duration") or 0)
        if element.tag == "backup":
            cursor -= duration
        elif element.tag == "forward":
            cursor += duration
        elif element.tag == "note" and element.find("grace") is None:
            chord = element.find("chord") is not None
            spans.append((element, cursor - duration if chord else cursor, duration))
            cursor += 0 if chord else duration
    return spans, cursor


def staff_ends(measure: ET.Element) -> dict[str, int]:
    """Staff number -> where its last note ends, in divisions (hidden rests included)."""
    ends: dict[str, int] = {}
    for note, start, duration in note_spans(measure)[0]:
        staff = note.findtext("staff") or "1"
        ends[staff] = max(ends.get(staff, 0), start + duration)
    return ends


def _voice_ends(measure: ET.Element) -> tuple[dict[tuple[str, str], int], int]:
    """(voice, staff) -> where the voice's last note ends, in divisions; and the cursor at the end."""
    spans, cursor = note_spans(measure)
    ends: dict[tuple[str, str], int] = {}
    for note, start, duration in spans:
        voice = (note.findtext("voice") or "1", note.findtext("staff") or "1")
        ends[voice] = max(ends.get(voice, 0), start + duration)
    return ends, cursor


def _fill_measure(measure: ET.Element, bar: Fraction, pad: bool) -> list[str]:
    """Cut what runs past the barline and (with `pad`) pad short voices and empty staves with hidden rests.

    Every element's position is worked out as written; the measure is then laid out again with new
    <backup>/<forward> moves, so cutting a note never shifts the voices written after it."""
    if bar.denominator != 1:
        return []  # the system's divisions cannot express this bar; leave it
    bar = int(bar)
    placed, cursor, cut = [], 0, 0
    for element in list(measure):
        measure.remove(element)
        duration = int(element.findtext("duration") or 0) if element.tag in ("note", "backup", "forward") else 0
        if element.tag in ("backup", "forward"):
            cursor = max(0, cursor - duration if element.tag == "backup" else cursor + duration)
            continue
        is_note = element.tag == "note" and element.find("grace") is None
        chord = is_note and element.find("chord") is not None
        start = cursor - duration if chord else cursor
        if is_note and not chord:
            cursor += duration
        if is_note and start >= bar:
            cut += 1
            continue
        if is_note and start + duration > bar:
            element.find("duration").text = str(bar - start)
            cut += 1
        placed.append((element, min(start, bar), is_note and not chord))
    cursor = 0
    for element, start, advances in placed:
        if element.tag in ("note", "direction", "harmony", "figured-bass") and start != cursor and \
                (advances or element.tag != "note"):
            _move(measure, cursor, start)
            cursor = start
        measure.append(element)
        if advances:
            cursor += int(element.findtext("duration") or 0)
    changes = []
    if cut:
        changes.append(f"cut {cut} note(s) past the barline")
        measure.append(ET.Comment(f" acai-omr: {cut} note(s) the model wrote past this barline were cut "))
    if not pad:
        return changes
    ends, cursor = _voice_ends(measure)
    for staff, voice in (("1", "1"), ("2", "5")):
        if not any(s == staff for _, s in ends):
            ends[(voice, staff)] = 0
    for (voice, staff), end in sorted(ends.items(), key=lambda item: (item[0][1], item[0][0])):
        if end >= bar:
            continue
        _move(measure, cursor, end)
        rest = ET.SubElement(measure, "note", {"print-object": "no"})
        ET.SubElement(rest, "rest")
        ET.SubElement(rest, "duration").text = str(bar - end)
        ET.SubElement(rest, "voice").text = voice
        ET.SubElement(rest, "staff").text = staff
        cursor = bar
        changes.append(f"{'empty staff' if end == 0 else 'voice ' + voice} on staff {staff} padded with a "
                       f"hidden rest of {bar - end} division(s)")
    return changes


def _move(measure: ET.Element, cursor: int, to: int) -> None:
    """Append the <backup> or <forward> that takes the cursor from `cursor` to `to`."""
    if to != cursor:
        move = ET.SubElement(measure, "backup" if to < cursor else "forward")
        ET.SubElement(move, "duration").text = str(abs(to - cursor))


# time signatures an inferred one is chosen from, commonest first (ties go to the earlier)
COMMON_TIMES = ((4, 4), (3, 4), (2, 4), (6, 8), (2, 2), (3, 8), (9, 8), (12, 8), (6, 4), (3, 2), (5, 4))


def _infer_time(parts: Sequence[ET.Element | None]) -> tuple[int, int] | None:
    """The common time signature that most measures fill exactly (their longest voice); when none
    does, the one nearest the median measure length. None when no measure has notes."""
    lengths = []
    for part in parts:
        divisions = None
        for measure in _measures(part):
            for attributes in measure.findall("attributes"):
                if attributes.find("divisions") is not None:
                    divisions = int(attributes.findtext("divisions"))
            ends, _ = _voice_ends(measure)
            if divisions and ends:
                lengths.append(Fraction(max(ends.values()), divisions))
    if not lengths:
        return None
    bars = [Fraction(4 * beats, beat_type) for beats, beat_type in COMMON_TIMES]
    fits = [sum(length == bar for length in lengths) for bar in bars]
    if max(fits) > 0:
        return COMMON_TIMES[fits.index(max(fits))]
    median = sorted(lengths)[len(lengths) // 2]
    distances = [abs(bar - median) for bar in bars]
    return COMMON_TIMES[distances.index(min(distances))]
