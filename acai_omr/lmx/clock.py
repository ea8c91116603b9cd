"""Where a token stream stands in its measure, one token at a time.

The delinearizer needs a whole sequence; a decoder that wants to notice a runaway (a measure that
keeps filling with notes long after any real measure would have ended) needs the same bookkeeping
incrementally and cheaply. `MeasureClock.feed(token)` follows the time position of the current
measure: a note or rest advances it by its length (its type, dots and time modification, which
arrive after the type), chord members and grace notes do not, `backup`/`forward` move it back or
on. `peak` is the furthest any voice has got in the measure, `tokens` how many tokens it has taken,
`first_voice` how far the measure had got when its first `backup` came (the length the other voices
should fill), or None before one.

A whole-measure rest (`rest:measure`) advances by nothing: its length is the time signature's,
which a piece read from the middle of a system does not state, and counting it as zero can only
delay a stop, never cause one.
"""

from __future__ import annotations

from fractions import Fraction

from acai_omr.lmx import vocab as V
from acai_omr.lmx.delinearize import note_length

# The furthest any voice of a real measure gets, in quarters: four whole notes, room for a 4/2 or 6/2
# measure (no voice of the 68,753 measures of the Lieder training systems passes 10). A measure past it
# is a loop when a decoder writes it, and an unmeasured passage (a cadenza, unbarred music) in a corpus.
LONGEST_MEASURE_QUARTERS = 16

_TYPES = frozenset(V.NOTE_TYPE_TOKENS)
_MODIFICATIONS = {token: tuple(int(n) for n in token.split("in")) for token in V.TIME_MODIFICATION_TOKENS}
_NOTE_STARTS = frozenset(V.PITCH_TOKENS) | {V.REST}


class MeasureClock:
    """Time position (in quarters) and token count of the current measure of an LMX stream."""

    __slots__ = ("position", "_peak", "tokens", "first_voice", "_start", "_type", "_dots", "_modification",
                 "_sign", "_chord", "_grace", "_pending", "_headed")

    def __init__(self) -> None:
        self.position = Fraction(0)
        self._peak = Fraction(0)  # the furthest any finished item reached
        self.tokens = 0
        self.first_voice: Fraction | None = None
        self._reset_item()

    @property
    def peak(self) -> Fraction:
        """The furthest any voice has got in this measure (the open item counted as it stands:
        a time modification or dot still to come can only shorten or lengthen its last note)."""
        return max(self._peak, self.position)

    def _reset_item(self) -> None:
        self._peak = max(self._peak, self.position)
        self._chord = self._grace = False
        self._headed = False  # the item's pitch, rest, backup or forward has come
        self._pending = False  # an item whose length still moves the clock (note, rest, backup, forward)
        self._sign = 1
        self._type = None
        self._dots = 0
        self._modification = None
        self._start = self.position

    def _settle(self) -> None:
        """Put the pending item's current length on the clock (called after each of its tokens)."""
        if self._pending and self._type is not None:
            self.position = self._start + self._sign * note_length(self._type, self._dots, self._modification)
            self.position = max(self.position, Fraction(0))

    def feed(self, token: str) -> None:
        if token == V.MEASURE:
            self.position = self._peak = Fraction(0)
            self.tokens = 0
            self.first_voice = None
            self._reset_item()
            return
        self.tokens += 1
        if token in (V.CHORD, V.GRACE, V.GRACE_SLASH, V.PRINT_OBJECT_NO) or token in _NOTE_STARTS \
                or token in (V.BACKUP, V.FORWARD):
            if self._headed:
                self._reset_item()  # a new item begins
            if token == V.CHORD:
                self._chord = True
            elif token in (V.GRACE, V.GRACE_SLASH):
                self._grace = True
            elif token in _NOTE_STARTS:
                self._headed = True
                self._pending = not (self._chord or self._grace)
            elif token in (V.BACKUP, V.FORWARD):
                if token == V.BACKUP and self.first_voice is None:
                    self.first_voice = self.peak
                self._headed = self._pending = True
                self._sign = -1 if token == V.BACKUP else 1
            return
        if token in _TYPES and self._type is None and self._pending:
            self._type = token
        elif token == V.DOT and self._type is not None:
            self._dots += 1
        elif token in _MODIFICATIONS and self._type is not None:
            self._modification = _MODIFICATIONS[token]
        else:
            return
        self._settle()


def measure_extents(tokens: list[str]) -> list[tuple[Fraction, int]]:
    """(peak position in quarters, tokens) of every measure of a sequence, for calibrating limits."""
    clock, out, started = MeasureClock(), [], False
    for token in tokens:
        if token == V.MEASURE:
            if started:
                out.append((clock.peak, clock.tokens))
            started = True
        clock.feed(token)
    if started:
        out.append((clock.peak, clock.tokens))
    return out
