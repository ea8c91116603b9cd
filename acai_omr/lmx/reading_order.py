"""The drawn notes of an LMX sequence in the order they stand on the page.

LMX lists a measure voice by voice, jumping back to the barline at every
`backup`, so its order is not the image's. The encoder's auxiliary CTC loss
(`acai_omr.model.heads.ReadingOrderCTCHead`) needs labels that follow the
picture: by measure, by onset (left to right), by staff (top to bottom), then
from the highest pitch down, which is how the patch grid reads column by column,
top to bottom. Rests count (their symbol is drawn); invisible rests do not.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from acai_omr.lmx.delinearize import delinearize

STEP_INDEX = {"C": 0, "D": 1, "E": 2, "F": 3, "G": 4, "A": 5, "B": 6}
REST = "rest"
# every label a drawn note can have: the LMX pitch tokens (C0 ... B9) and "rest"
NOTE_LABELS = tuple(f"{step}{octave}" for octave in range(10) for step in STEP_INDEX) + (REST,)
NOTE_LABEL_INDEX = {label: index for index, label in enumerate(NOTE_LABELS)}
# a rest sorts as if it stood on its staff's middle line (B4 in treble, D3 in bass)
_REST_HEIGHT = {1: 4 * 7 + 6, 2: 3 * 7 + 1}


def _duration(element) -> Fraction:
    text = element.findtext("duration")
    return Fraction(text) if text else Fraction(0)


def drawn_events(tokens: str | Sequence[str]) -> list[tuple[int, Fraction, int, int, str]]:
    """LMX tokens -> (measure index, onset, staff, -height, label) of every visible note, in reading order.

    Height counts diatonic steps from C0 (E4 = 30); a rest stands on its staff's middle line.
    Unparseable sequences give []; soft errors are ignored (the onsets of what parses are still
    where the notes are drawn).
    """
    part = delinearize(tokens, fractional_durations=True).part
    if part is None:
        return []
    events = []
    for measure_index, measure in enumerate(part.iter("measure")):
        time = onset = Fraction(0)
        for child in measure:
            if child.tag in ("backup", "forward"):
                time += _duration(child) * (-1 if child.tag == "backup" else 1)
                continue
            if child.tag != "note":
                continue
            if child.find("chord") is None:
                onset = time
                time += _duration(child)  # grace notes have none
            if child.get("print-object") == "no":
                continue
            staff = int(child.findtext("staff") or 1)
            pitch = child.find("pitch")
            if pitch is not None:
                step, octave = pitch.findtext("step"), pitch.findtext("octave")
                label, height = f"{step}{octave}", int(octave) * 7 + STEP_INDEX[step]
            else:
                label, height = REST, _REST_HEIGHT.get(staff, _REST_HEIGHT[1])
            events.append((measure_index, onset, staff, -height, label))
    events.sort(key=lambda event: event[:4])
    return events


def reading_order(tokens: str | Sequence[str]) -> list[str]:
    """LMX tokens -> pitch tokens ("E4") and "rest" of every visible note, in reading order."""
    return [event[4] for event in drawn_events(tokens)]
