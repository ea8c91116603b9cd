"""LMX tokens -> MusicXML <part> (spec §3), tolerant of any token sequence.

`delinearize` never raises. Malformed input yields soft errors (one per
offending token, with the counts of spec §3.4/§6) and the best part it can
build.

Pipeline: lex -> cut into measures -> group tokens into items around roots
(prefixes attach to the next root, suffixes to the previous one) -> build
<attributes>/<note>/<forward>/<backup> -> per measure, infer <alter> from key,
accidentals and ties -> add <staves> and durations.

Decisions where the reference crashes or the spec leaves room (§3.5):
- Input whose first vocabulary token is not `measure` is `unparseable=True`
  with one error (and one per OOV token before it); TEDn scores it as an empty
  part, as the reference's crash handler does. Empty input (or only `measure`)
  is parseable: an empty part, no error.
- A forward/backup rooted on `rest:measure` is 1 error and is dropped; the
  forwards/backups around it still merge.
- Integer durations with no duration at all: <divisions>1</divisions>.
- Leading/trailing <pad>/<bos>/<eos> are stripped silently (model output);
  anywhere else they are OOV tokens, 1 error each.
- Measure-level state (voice, stem, staff, open beams) starts empty in every
  measure; a tie stop takes the alter of the latest matching tie start in this
  or the previous measure; a note's own accidental beats its tie.
- A stray `slur:stop` with no open slur gets number 1 (never 0 or negative).
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

from .musicxml import part_to_score, score_to_string, sort_attributes
from .vocab import (
    ACCEPTED_GROUPS, LMX_TOKEN_SET, MEASURE, MULTI_VALUED_GROUPS, PREFIX_TOKENS, REST_MEASURE, ROOT_TOKENS,
    SPECIAL_TOKENS, SUFFIX_TOKENS, TOKEN_GROUP, TYPE_DURATION, root_kind,
)

ACCIDENTAL_ALTER = {"sharp": 1, "natural-sharp": 1, "flat": -1, "natural-flat": -1,
                    "double-sharp": 2, "flat-flat": -2, "natural": 0}
SHARP_ORDER = "FCGDAEB"


def key_alter(fifths: int, step: str) -> int:
    """The alteration the key signature gives to a step."""
    if fifths > 0:
        return 1 if step in SHARP_ORDER[:fifths] else 0
    if fifths < 0:
        return -1 if step in SHARP_ORDER[::-1][:-fifths] else 0
    return 0


@dataclass
class DelinearizeResult:
    """The rebuilt part (None if unparseable) and the soft errors, one line each."""

    part: ET.Element | None
    errors: list[str] = field(default_factory=list)
    unparseable: bool = False

    def to_score(self) -> ET.Element:
        """A score-partwise with one piano part (an empty part when unparseable, as TEDn scores it)."""
        part = self.part if self.part is not None else ET.Element("part")
        return part_to_score(part, part_id="P1", name="Piano")

    def to_musicxml(self) -> str:
        return score_to_string(self.to_score(), in_place=True)  # to_score already copied


@dataclass
class _Item:
    """A root token with the prefixes before it and the suffixes after it."""

    root: str
    position: int
    prefixes: list[tuple[str, int]]
    suffixes: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _NoteRecord:
    """What the alteration pass needs to know about one built note (or a key change)."""

    element: ET.Element | None
    onset: Fraction = Fraction(0)
    staff: str = "1"
    step: str = ""
    octave: str = ""
    accidental: str | None = None
    tie_start: bool = False
    tie_stop: bool = False
    key_fifths: int | None = None  # set for key-change records
    alter: int | None = None  # filled in by the alteration pass


@lru_cache(maxsize=4096)
def note_length(note_type: str, dots: int = 0, modification: tuple[int, int] | None = None) -> Fraction:
    """Length in quarters of a note type with dots and a time modification (actual, normal)."""
    length = TYPE_DURATION[note_type] * (2 - Fraction(1, 2 ** dots))
    if modification:
        length = length * modification[1] / modification[0]
    return length


def _error_line(token: str, position: int, message: str) -> str:
    return f"[ERROR][Token '{token}' at position {position}]: {message}"


class _Delinearizer:
    def __init__(self, fractional_durations: bool) -> None:
        self.fractional = fractional_durations
        self.errors: list[str] = []
        self.durations: dict[ET.Element, Fraction] = {}  # <duration> element -> length in quarters
        self.measure_length: Fraction | None = None
        self.slur_counter = 0
        self.key_fifths = 0
        self.max_clef_number = 0
        self.previous_records: list[_NoteRecord] = []
        self._start_measure()

    def _start_measure(self) -> None:
        """Forget the measure-level state: voice, stem, staff, open beams, time cursor, notes."""
        self.voice: str | None = None
        self.stem: str | None = None
        self.staff: str | None = None
        self.open_beams = {False: 0, True: 0}  # keyed by "is a grace note"
        self.cursor = Fraction(0)
        self.last_onset = Fraction(0)
        self.records: list[_NoteRecord] = []

    def error(self, token: str, position: int, message: str) -> None:
        self.errors.append(_error_line(token, position, message))

    # ------------------------------------------------------------ lexing

    def run(self, tokens: Sequence[str]) -> DelinearizeResult:
        start, end = 0, len(tokens)
        while start < end and tokens[start] in SPECIAL_TOKENS:
            start += 1
        while end > start and tokens[end - 1] in SPECIAL_TOKENS:
            end -= 1
        lexed = [(tokens[i], i + 1) for i in range(start, end)]
        known = []
        for token, position in lexed:
            if token in LMX_TOKEN_SET:
                known.append((token, position))
            else:
                self.error(token, position, "token is not present in the vocabulary")
        if known and known[0][0] != MEASURE:
            token, position = known[0]
            self.error(token, position, "the sequence does not start with 'measure'; it cannot be parsed")
            return DelinearizeResult(None, self.errors, True)

        measures: list[list[tuple[str, int]]] = []
        for token, position in known:
            if token == MEASURE:
                measures.append([])
            else:
                measures[-1].append((token, position))
        if measures and not measures[-1]:
            measures.pop()  # a trailing `measure` with nothing after it

        part = ET.Element("part")
        for number, measure_tokens in enumerate(measures, start=1):
            part.append(self.measure(measure_tokens, number))
        self.finish(part)
        return DelinearizeResult(part, self.errors, False)

    # ------------------------------------------------------------ items

    def items(self, measure_tokens: list[tuple[str, int]]) -> list[_Item]:
        items: list[_Item] = []
        pending: list[tuple[str, int]] = []
        for token, position in measure_tokens:
            if token in ROOT_TOKENS:
                items.append(_Item(token, position, pending))
                pending = []
            elif token in PREFIX_TOKENS:
                pending.append((token, position))
            elif token in SUFFIX_TOKENS:
                if items:
                    items[-1].suffixes.append((token, position))
                else:
                    self.error(token, position, "dangling suffix: no root before it in this measure")
        for token, position in pending:
            self.error(token, position, "dangling prefix: no root after it in this measure")
        return items

    def extract(self, item: _Item, kind: str) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Singleton values and multi-valued lists of an item, with errors for extras and misfits."""
        accepted_prefixes, accepted_suffixes = ACCEPTED_GROUPS[kind]
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for tokens, accepted, side in ((item.prefixes, accepted_prefixes, "prefix"),
                                       (item.suffixes, accepted_suffixes, "suffix")):
            for token, position in tokens:
                group = TOKEN_GROUP[token]
                if group not in accepted:
                    self.error(token, position, f"unexpected {side} token for the root '{item.root}'")
                elif group in MULTI_VALUED_GROUPS:
                    multi.setdefault(group, []).append(token)
                elif group in single:
                    self.error(token, position, f"additional {side} token of kind '{group}'")
                    if side == "prefix":  # the last prefix wins, the first suffix wins
                        single[group] = token
                else:
                    single[group] = token
        return single, multi

    # ------------------------------------------------------------ measures

    def measure(self, measure_tokens: list[tuple[str, int]], number: int) -> ET.Element:
        measure = ET.Element("measure", number=str(number))
        self._start_measure()
        for item in self.items(measure_tokens):
            kind = root_kind(item.root)
            if kind == "note" and any(t in ("forward", "backup") for t, _ in item.prefixes):
                kind = "forward/backup"
            single, multi = self.extract(item, kind)
            if kind == "note":
                self.note(measure, item, single, multi)
            elif kind == "forward/backup":
                self.forward_or_backup(measure, item, single)
            else:
                self.attribute(measure, item, kind, single)
        self.infer_alterations()
        self.previous_records = self.records
        return measure

    def attribute(self, measure: ET.Element, item: _Item, kind: str, single: dict[str, str]) -> None:
        if len(measure) and measure[-1].tag == "attributes":
            attributes = measure[-1]  # consecutive attribute items share one <attributes>
        else:
            attributes = ET.SubElement(measure, "attributes")
        if kind == "key":
            fifths = int(item.root.rsplit(":", 1)[1])
            ET.SubElement(ET.SubElement(attributes, "key"), "fifths").text = str(fifths)
            self.records.append(_NoteRecord(None, key_fifths=fifths))
        elif kind == "time":
            beats, beat_type = 4, 4
            if "beats" in single:
                beats = int(single["beats"].split(":")[1])
            else:
                self.error(item.root, item.position, "time signature is missing its beats; 4 assumed")
            if "beat-type" in single:
                beat_type = int(single["beat-type"].split(":")[1])
            else:
                self.error(item.root, item.position, "time signature is missing its beat type; 4 assumed")
            time = ET.SubElement(attributes, "time")
            ET.SubElement(time, "beats").text = str(beats)
            ET.SubElement(time, "beat-type").text = str(beat_type)
            self.measure_length = Fraction(4 * beats, beat_type)
        else:  # clef
            clef = ET.SubElement(attributes, "clef")
            if "staff" in single:
                staff_number = int(single["staff"].split(":")[1])
                clef.set("number", str(staff_number))
                self.max_clef_number = max(self.max_clef_number, staff_number)
            sign_line = item.root.split(":")[1]
            ET.SubElement(clef, "sign").text = sign_line[0]
            ET.SubElement(clef, "line").text = sign_line[1:]

    def _set_duration(self, element: ET.Element, duration: Fraction) -> None:
        duration_element = ET.SubElement(element, "duration")
        self.durations[duration_element] = duration

    @staticmethod
    def _time_modification(single: dict[str, str]) -> tuple[int, int] | None:
        token = single.get("time-modification")
        if token is None:
            return None
        actual, normal = token.split("in")
        return int(actual), int(normal)

    def forward_or_backup(self, measure: ET.Element, item: _Item, single: dict[str, str]) -> None:
        tag = "backup" if "backup" in single else "forward"
        self.open_beams = {False: 0, True: 0}
        if item.root == REST_MEASURE:
            self.error(item.root, item.position, f"rest:measure cannot be the root of a {tag}; it is dropped")
            return
        duration = note_length(item.root, 0, self._time_modification(single))
        self.cursor += -duration if tag == "backup" else duration
        if len(measure) and measure[-1].tag == tag:
            # Consecutive forwards (backups) are one element split greedily by the linearizer.
            duration_element = measure[-1].find("duration")
            self.durations[duration_element] += duration
            return
        self._set_duration(ET.SubElement(measure, tag), duration)

    # ------------------------------------------------------------ notes

    def note(self, measure: ET.Element, item: _Item, single: dict[str, str], multi: dict[str, list[str]]) -> None:
        note = ET.SubElement(measure, "note")
        if "print-object" in single:
            note.set("print-object", "no")
        is_grace = "grace" in single
        if is_grace:
            grace = ET.SubElement(note, "grace")
            if "grace-slash" in single:
                grace.set("slash", "yes")
        is_chord = "chord" in single
        if is_chord:
            ET.SubElement(note, "chord")

        is_measure_rest = item.root == REST_MEASURE
        is_rest = "rest" in single or is_measure_rest
        pitch_token = None
        if is_rest:
            rest = ET.SubElement(note, "rest")
            if is_measure_rest:
                rest.set("measure", "yes")
        elif "pitch" in single:
            pitch_token = single["pitch"]
            pitch = ET.SubElement(note, "pitch")
            ET.SubElement(pitch, "step").text = pitch_token[0]
            ET.SubElement(pitch, "octave").text = pitch_token[1:]

        dots = len(multi.get("dot", []))
        modification = self._time_modification(single)
        duration: Fraction | None = None
        if is_measure_rest:
            duration = self.measure_length
        elif not is_grace:
            duration = note_length(item.root, dots, modification)
        if duration is not None and not is_grace:
            self._set_duration(note, duration)

        if "tied:stop" in single:
            ET.SubElement(note, "tie", type="stop")
        if "tied:start" in single:
            ET.SubElement(note, "tie", type="start")
        if "voice" in single:
            self.voice = single["voice"].split(":")[1]
        if self.voice is not None:
            ET.SubElement(note, "voice").text = self.voice
        if not is_measure_rest:
            ET.SubElement(note, "type").text = item.root
        for _ in range(dots):
            ET.SubElement(note, "dot")
        if "accidental" in single:
            ET.SubElement(note, "accidental").text = single["accidental"]
        if modification:
            time_modification = ET.SubElement(note, "time-modification")
            ET.SubElement(time_modification, "actual-notes").text = str(modification[0])
            ET.SubElement(time_modification, "normal-notes").text = str(modification[1])
        if "stem" in single:
            self.stem = single["stem"].split(":")[1]
        if not is_rest and item.root != "whole" and self.stem is not None:
            ET.SubElement(note, "stem").text = self.stem
        if "staff" in single:
            self.staff = single["staff"].split(":")[1]
        if self.staff is not None:
            ET.SubElement(note, "staff").text = self.staff
        if not is_rest and not is_chord:
            self.beams(note, multi.get("beam", []), is_grace)
        self.notations(note, single, multi.get("slur", []))

        onset = self.last_onset if is_chord else self.cursor
        self.last_onset = onset
        if not is_chord and not is_grace and duration is not None:
            self.cursor += duration
        if pitch_token is not None:
            self.records.append(_NoteRecord(
                note, onset=onset, staff=self.staff or "1", step=pitch_token[0], octave=pitch_token[1:],
                accidental=single.get("accidental"), tie_start="tied:start" in single,
                tie_stop="tied:stop" in single))

    def beams(self, note: ET.Element, tokens: list[str], is_grace: bool) -> None:
        """Rebuild numbered beams from begin/end counts and the beams already open."""
        begins = tokens.count("beam:begin")
        ends = tokens.count("beam:end")
        delta = begins - ends
        open_beams = max(self.open_beams[is_grace], -delta)
        new_open = open_beams + delta
        values = ["continue"] * min(open_beams, new_open)
        values += ["begin"] * (new_open - open_beams) + ["end"] * (open_beams - new_open)
        values += [t.split(":")[1].replace("-", " ") for t in tokens if t.endswith("-hook")]
        for number, value in enumerate(values, start=1):
            ET.SubElement(note, "beam", number=str(number)).text = value
        self.open_beams[is_grace] = new_open

    def notations(self, note: ET.Element, single: dict[str, str], slurs: list[str]) -> None:
        notations = ET.Element("notations")
        for name in ("tied", "tuplet"):
            for kind in ("stop", "start"):
                if f"{name}:{kind}" in single:
                    ET.SubElement(notations, name, type=kind)
        stops, starts = [], []
        for _ in range(slurs.count("slur:stop")):
            stops.append(max(self.slur_counter, 1))
            self.slur_counter = max(self.slur_counter - 1, 0)
        for _ in range(slurs.count("slur:start")):
            self.slur_counter += 1
            starts.append(self.slur_counter)
        for kind, numbers in (("stop", stops), ("start", starts)):
            for number in sorted(numbers):
                ET.SubElement(notations, "slur", type=kind, number=str(number))
        if "fermata" in single:
            ET.SubElement(notations, "fermata")
        articulations = [name for name in ("accent", "strong-accent", "tenuto", "staccato") if name in single]
        if articulations:
            container = ET.SubElement(notations, "articulations")
            for name in articulations:
                ET.SubElement(container, name)
        has_tremolo = "tremolo-type" in single
        if "trill-mark" in single or has_tremolo:
            ornaments = ET.SubElement(notations, "ornaments")
            if "trill-mark" in single:
                ET.SubElement(ornaments, "trill-mark")
            if has_tremolo:
                tremolo = ET.SubElement(ornaments, "tremolo", type=single["tremolo-type"].split(":")[1])
                tremolo.text = single.get("tremolo-marks", "tremolo:3").split(":")[1]
        if "arpeggiate" in single:
            ET.SubElement(notations, "arpeggiate")
        if len(notations):
            note.append(notations)

    # ------------------------------------------------------------ alterations

    def infer_alterations(self) -> None:
        """Set <alter> from the note's accidental, its tie, earlier accidentals in the measure, or the key.

        Linear in the measure's length (bar a log factor): a measure of thousands of notes on one
        line must not take quadratic time, since the CLI and API accept user LMX.
        """
        accidentals: dict[tuple[str, str, str], list[tuple[Fraction, int, int]]] = {}
        for order, record in enumerate(self.records):
            if record.element is not None and record.accidental is not None:
                visual = (record.staff, record.step, record.octave)
                accidentals.setdefault(visual, []).append(
                    (record.onset, order, ACCIDENTAL_ALTER[record.accidental]))
        for entries in accidentals.values():
            entries.sort()
        # the latest tie start on each line, from the previous measure on, updated as we go
        tie_starts: dict[tuple[str, str], _NoteRecord] = {}
        for other in self.previous_records:
            if other.element is not None and other.tie_start:
                tie_starts[(other.step, other.octave)] = other
        for record in self.records:
            if record.element is None:
                self.key_fifths = record.key_fifths  # type: ignore[assignment]
                continue
            alter = None
            if record.accidental is not None:
                alter = ACCIDENTAL_ALTER[record.accidental]
            elif record.tie_stop:
                tied = tie_starts.get((record.step, record.octave))
                alter = tied.alter if tied is not None else None
            if alter is None:
                # the accidental that sounds here: the latest one on this line at or before this onset
                entries = accidentals.get((record.staff, record.step, record.octave), [])
                before = bisect.bisect_right(entries, (record.onset, math.inf, math.inf))
                alter = entries[before - 1][2] if before else key_alter(self.key_fifths, record.step)
            record.alter = alter
            if record.tie_start:
                tie_starts[(record.step, record.octave)] = record
            if alter:
                pitch = record.element.find("pitch")
                alter_element = ET.Element("alter")
                alter_element.text = str(alter)
                pitch.insert(1, alter_element)

    # ------------------------------------------------------------ part-level

    def finish(self, part: ET.Element) -> None:
        """Add <staves> and the durations (fractions, or integers over a common <divisions>)."""
        if len(part) == 0:
            return
        first_measure = part[0]
        head = None
        if len(first_measure) and first_measure[0].tag == "attributes":
            head = first_measure[0]
        needs_head = self.max_clef_number > 1 or not self.fractional
        if head is None and needs_head:
            head = ET.Element("attributes")
            first_measure.insert(0, head)
        if self.max_clef_number > 1:
            ET.SubElement(head, "staves").text = str(self.max_clef_number)
        if self.fractional:
            for element, duration in self.durations.items():
                element.text = str(duration)
        else:
            divisions = 1
            for duration in self.durations.values():
                divisions = math.lcm(divisions, duration.denominator)
            ET.SubElement(head, "divisions").text = str(divisions)
            for element, duration in self.durations.items():
                element.text = str(int(duration * divisions))
        if head is not None:
            sort_attributes(head)


def delinearize(tokens: str | Sequence[str], *, fractional_durations: bool = False) -> DelinearizeResult:
    """Rebuild a MusicXML <part> from LMX tokens; never raises.

    ``tokens`` is a whitespace-separated string or a token sequence. Leading and
    trailing ``<pad>``/``<bos>``/``<eos>`` are stripped silently; anywhere else
    they count as out-of-vocabulary tokens (1 error each). With
    ``fractional_durations`` every <duration> is a fraction of a quarter ("3/2")
    and no <divisions> is written (the TEDn path); otherwise durations are
    integers over divisions = LCM of the denominators (1 when there are none).
    """
    delinearizer = _Delinearizer(fractional_durations)
    if tokens is None:
        return DelinearizeResult(None, ["[ERROR] no token sequence given (None)"], True)
    try:
        if isinstance(tokens, str):
            token_list = tokens.split()
        else:
            token_list = [token if isinstance(token, str) else str(token) for token in tokens]
        return delinearizer.run(token_list)
    except Exception as error:  # last resort: no known input reaches this
        errors = delinearizer.errors + [f"[ERROR] internal delinearizer failure: {type(error).__name__}: {error}"]
        return DelinearizeResult(None, errors, True)
