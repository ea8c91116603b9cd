"""MusicXML -> LMX tokens (spec §1.4-1.6, §2.2-2.3).

The linearizer keeps MusicXML document order and only translates: one
`measure` per <measure>, one token group per note, attributes as key -> time
-> clefs, and forward/backup as greedy `forward TYPE` / `backup TYPE` pairs.
Voice, stem and staff are written only when they change; they are forgotten at
every measure and every backup.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET

from .musicxml import find_piano_part, read_score
from .vocab import LMX_TOKEN_SET, NOTE_TYPE_TOKENS, PITCH_TOKENS

PITCH_INDEX = {token: index for index, token in enumerate(PITCH_TOKENS)}

logger = logging.getLogger(__name__)

IGNORED_MEASURE_CHILDREN = frozenset(
    {"direction", "harmony", "figured-bass", "print", "sound", "listening", "grouping", "link", "bookmark", "barline"}
)
IGNORED_ATTRIBUTES_CHILDREN = frozenset(
    {"footnote", "level", "part-symbol", "instruments", "staff-details", "directive", "measure-style"}
)
BEAM_VALUES = {"begin": "beam:begin", "end": "beam:end", "forward hook": "beam:forward-hook",
               "backward hook": "beam:backward-hook"}
ARTICULATIONS = ("staccato", "accent", "strong-accent", "tenuto")


class LinearizeError(ValueError):
    """MusicXML that LMX cannot represent (the reference implementation's hard failures)."""


def _text(element: ET.Element | None, default: str | None = None) -> str | None:
    if element is None or element.text is None:
        return default
    return element.text.strip()


def _int(element: ET.Element | None, what: str) -> int:
    text = _text(element)
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LinearizeError(f"{what}: expected an integer, got {text!r}") from None


class _Linearizer:
    def __init__(self, fail_on_unknown: bool, warnings: list[str] | None) -> None:
        self.fail_on_unknown = fail_on_unknown
        self.warnings = warnings if warnings is not None else []
        self.tokens: list[str] = []
        self.divisions: int | None = None
        self.staves: int | None = None
        self.measure_label = "?"
        self.previous_pitch: str | None = None  # for the chord-order check
        self._forget_note_state()

    def _forget_note_state(self) -> None:
        self.voice: str | None = None
        self.stem: str | None = None
        self.staff: str | None = None

    def warn(self, message: str) -> None:
        message = f"measure {self.measure_label}: {message}"
        self.warnings.append(message)
        logger.debug(message)

    def fail(self, message: str) -> LinearizeError:
        return LinearizeError(f"measure {self.measure_label}: {message}")

    def emit(self, token: str) -> None:
        if token in LMX_TOKEN_SET:
            self.tokens.append(token)
        elif self.fail_on_unknown:
            raise self.fail(f"token {token!r} is not in the LMX vocabulary")
        else:
            self.warn(f"dropped out-of-vocabulary token {token!r}")

    # ------------------------------------------------------------ structure

    def part(self, part: ET.Element) -> list[str]:
        for measure in part:
            if not isinstance(measure.tag, str):  # comments, processing instructions
                continue
            if measure.tag != "measure":
                raise LinearizeError(f"<part> child <{measure.tag}> is not a <measure>")
            self.measure(measure)
        return self.tokens

    def measure(self, measure: ET.Element) -> None:
        self.measure_label = measure.get("number", "?")
        self.emit("measure")
        self._forget_note_state()
        for child in measure:
            tag = child.tag
            if not isinstance(tag, str) or tag in IGNORED_MEASURE_CHILDREN:
                continue
            if tag == "note":
                self.note(child)
            elif tag == "attributes":
                self.attributes(child)
            elif tag in ("backup", "forward"):
                self.forward_or_backup(child)
            else:
                self.warn(f"unsupported measure child <{tag}> ignored")

    # ------------------------------------------------------------ attributes

    def attributes(self, attributes: ET.Element) -> None:
        keys, times, clefs = [], [], []
        for child in attributes:
            tag = child.tag
            if tag == "divisions":
                self.divisions = _int(child, "<divisions>")
                if self.divisions <= 0:
                    raise self.fail(f"<divisions> must be positive, got {self.divisions}")
            elif tag == "staves":
                self.staves = _int(child, "<staves>")
            elif tag == "key":
                keys.append(child)
            elif tag == "time":
                times.append(child)
            elif tag == "clef":
                clefs.append(child)
            elif isinstance(tag, str) and tag not in IGNORED_ATTRIBUTES_CHILDREN:
                self.warn(f"unsupported attributes child <{tag}> ignored")
        for key in keys:
            fifths = _text(key.find("fifths"))
            if fifths is None:
                raise self.fail("<key> without <fifths> (non-traditional keys are not supported)")
            self.emit(f"key:fifths:{fifths}")
        for time in times:
            if self.divisions is None:
                raise self.fail("<time> before any <divisions>")
            beats, beat_type = _text(time.find("beats")), _text(time.find("beat-type"))
            if beats is None or beat_type is None:
                raise self.fail("<time> without <beats> or <beat-type>")
            self.emit("time")
            self.emit(f"beats:{beats}")
            self.emit(f"beat-type:{beat_type}")

        def staff_number(clef: ET.Element) -> int:
            try:
                return int(clef.get("number", "1"))
            except ValueError:
                raise self.fail(f"clef number {clef.get('number')!r} is not an integer") from None

        for clef in sorted(clefs, key=staff_number):
            self.emit(f"clef:{_text(clef.find('sign'), '')}{_text(clef.find('line'), '')}")
            if self.staves is not None:
                self.emit(f"staff:{staff_number(clef)}")

    # ------------------------------------------------------------ forward/backup

    def forward_or_backup(self, element: ET.Element) -> None:
        kind = element.tag
        duration = _int(element.find("duration"), f"<{kind}><duration>")
        if duration <= 0:
            raise self.fail(f"<{kind}> with non-positive duration {duration}")
        if self.divisions is None:
            raise self.fail(f"<{kind}> before any <divisions>")
        # Greedy, longest type first; the step is halved with integer division, so
        # divisions that are not powers of two can leave a remainder (spec §1.6).
        remaining, step = duration, 32 * self.divisions
        for type_name in reversed(NOTE_TYPE_TOKENS):
            if 0 < step <= remaining:
                self.emit(kind)
                self.emit(type_name)
                remaining -= step
            step //= 2
        if remaining:
            self.warn(f"<{kind}> of {duration} divisions leaves {remaining} unexpressed")
        if kind == "backup":
            self._forget_note_state()

    # ------------------------------------------------------------ notes

    def note(self, note: ET.Element) -> None:
        if note.get("print-object") == "no":
            self.emit("print-object:no")
        grace = note.find("grace")
        if grace is not None:
            self.emit("grace")
            if grace.get("slash") == "yes":
                self.emit("grace:slash")
        if note.find("chord") is not None:
            self.emit("chord")

        rest, pitch = note.find("rest"), note.find("pitch")
        if rest is not None:
            self.emit("rest")
            self.previous_pitch = None
        elif pitch is not None:
            step, octave = _text(pitch.find("step"), ""), _text(pitch.find("octave"), "")
            pitch_token = f"{step}{octave}"
            if pitch_token not in PITCH_INDEX:
                raise self.fail(f"pitch {pitch_token} is outside C0-B9")
            if (note.find("chord") is not None and self.previous_pitch is not None
                    and PITCH_INDEX[pitch_token] < PITCH_INDEX[self.previous_pitch]):
                self.warn(f"chord note {pitch_token} is below the previous chord note {self.previous_pitch}")
            self.previous_pitch = pitch_token
            self.emit(pitch_token)
        else:
            raise self.fail("<note> with neither <pitch> nor <rest> (unpitched notes are not supported)")

        voice = _text(note.find("voice"))
        if voice is not None and voice != self.voice:
            self.emit(f"voice:{voice}")
            self.voice = voice

        note_type = _text(note.find("type"))
        if rest is not None and (rest.get("measure") == "yes" or note_type is None):
            self.emit("rest:measure")
        elif note_type in NOTE_TYPE_TOKENS:
            self.emit(note_type)
        else:
            raise self.fail(f"note type {note_type!r} is not a known <type>")

        modification = note.find("time-modification")
        if modification is not None:
            actual = _text(modification.find("actual-notes"))
            normal = _text(modification.find("normal-notes"))
            self.emit(f"{actual}in{normal}")
        for _ in note.findall("dot"):
            self.emit("dot")
        accidental = _text(note.find("accidental"))
        if accidental is not None:
            self.emit(accidental)

        stem = _text(note.find("stem"))
        if stem is not None and stem != self.stem:
            self.emit(f"stem:{stem}")
            self.stem = stem
        staff = _text(note.find("staff"))
        if staff is not None:
            if self.staves is None or self.staves < 2:
                raise self.fail("<staff> on a note of a part without <staves> of 2 or more")
            if staff != self.staff:
                self.emit(f"staff:{staff}")
                self.staff = staff

        for beam in note.findall("beam"):
            value = _text(beam, "")
            if value == "continue":
                continue
            if value not in BEAM_VALUES:
                raise self.fail(f"beam value {value!r} is not begin/continue/end/forward hook/backward hook")
            self.emit(BEAM_VALUES[value])

        self.notations(note.findall("notations"))

    def notations(self, notations_list: list[ET.Element]) -> None:
        if not notations_list:
            return
        for tag, allowed in (("tied", ("start", "stop")), ("tuplet", ("start", "stop")),
                             ("slur", ("start", "stop", "continue"))):
            for notations in notations_list:
                for element in notations.findall(tag):
                    kind = element.get("type")
                    if kind not in allowed:
                        raise self.fail(f"<{tag}> type {kind!r} is not one of {'/'.join(allowed)}")
                    if kind != "continue":
                        self.emit(f"{tag}:{kind}")

        def present(path: str) -> bool:
            return any(notations.find(path) is not None for notations in notations_list)

        if present("fermata"):
            self.emit("fermata")
        if present("arpeggiate"):
            self.emit("arpeggiate")
        for articulation in ARTICULATIONS:
            if present(f"articulations/{articulation}"):
                self.emit(articulation)
        for notations in notations_list:
            for tremolo in notations.findall("ornaments/tremolo"):
                self.emit(f"tremolo:{tremolo.get('type', 'single')}")
                marks = _text(tremolo)
                if marks not in ("1", "2", "3", "4"):
                    raise self.fail(f"tremolo marks {marks!r} outside 1-4")
                self.emit(f"tremolo:{marks}")
        if present("ornaments/trill-mark"):
            self.emit("trill-mark")


def linearize_part(part: ET.Element, *, fail_on_unknown: bool = True,
                   warnings: list[str] | None = None) -> list[str]:
    """LMX tokens of one MusicXML <part> (usually one system, see split_part_into_systems).

    Raises LinearizeError for what LMX cannot express; with ``fail_on_unknown``
    False, out-of-vocabulary tokens (e.g. ``voice:13``) are dropped instead.
    Non-fatal oddities are appended to ``warnings`` when a list is given.
    """
    if part.tag != "part":
        raise LinearizeError(f"expected a <part> element, got <{part.tag}>")
    return _Linearizer(fail_on_unknown, warnings).part(part)


def linearize_score(root_or_path: ET.Element | str | os.PathLike, *, fail_on_unknown: bool = True,
                    warnings: list[str] | None = None) -> list[str]:
    """LMX tokens of a score's piano part (a path, a score-partwise root or a <part>)."""
    if isinstance(root_or_path, ET.Element):
        root = root_or_path
    else:
        root = read_score(root_or_path)
    part = root if root.tag == "part" else find_piano_part(root)
    return linearize_part(part, fail_on_unknown=fail_on_unknown, warnings=warnings)
