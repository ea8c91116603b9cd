"""A decoder that loops inside a measure is closed early, and only then.

`lmx.clock.MeasureClock` follows the time position of a measure token by token; the greedy decoder's
`RunawayLimits` close a piece whose measure overruns every real measure. These tests pin that the
clock agrees with the delinearizer on real music (so real measures never trip the limits) and that a
looping row is closed with a grammatical ending while its batch neighbours go on untouched.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from acai_omr.inference.decode import EOS_ID, RunawayGuard, RunawayLimits, decode_steps
from acai_omr.inference.grammar import lmx_grammar
from acai_omr.lmx import load_lmx_file
from acai_omr.lmx.clock import MeasureClock, measure_extents
from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.vocab import VOCAB
from lmx_support import CONFORMANCE_DIR, FIXTURE_DIR, FIXTURE_NAMES, conformance_params


def _measure_peaks_from_musicxml(tokens: list[str]) -> list[tuple[Fraction, bool]]:
    """The furthest any voice gets in each measure, read off the delinearized MusicXML's durations,
    and whether the measure holds a whole-measure rest."""
    part = delinearize(tokens, fractional_durations=True).part
    peaks = []
    for measure in part.iter("measure"):
        position = peak = Fraction(0)
        measure_rest = False
        for element in measure:
            duration = Fraction(element.findtext("duration") or "0")
            if element.tag == "backup":
                position -= duration
            elif element.tag == "forward":
                position += duration
            elif element.tag == "note" and element.find("chord") is None and element.find("grace") is None:
                position += duration
                measure_rest |= element.find("rest") is not None and element.find("rest").get("measure") == "yes"
            peak = max(peak, position)
        peaks.append((peak, measure_rest))
    return peaks


def _clock_agrees_with_delinearizer(tokens: list[str]) -> None:
    """Equal measure lengths, except where a whole-measure rest stands: its length is the time
    signature's, which neither the clock nor (in a piece that states none) the delinearizer knows."""
    clock_peaks = [peak for peak, _ in measure_extents(tokens)]
    truth = _measure_peaks_from_musicxml(tokens)
    assert len(clock_peaks) == len(truth)
    compared = [(clock_peak, peak) for clock_peak, (peak, measure_rest) in zip(clock_peaks, truth) if not measure_rest]
    assert [c for c, _ in compared] == [t for _, t in compared]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_clock_finds_each_fixture_measures_length_as_the_delinearizer_does(name):
    for system in load_lmx_file(FIXTURE_DIR / f"{name}.lmx").systems:
        _clock_agrees_with_delinearizer(system)


@pytest.mark.parametrize("name", conformance_params())
def test_the_clock_finds_each_conformance_measures_length_as_the_delinearizer_does(name):
    tokens = (CONFORMANCE_DIR / f"{name}.lmx").read_text().split()
    _clock_agrees_with_delinearizer(tokens)
    for peak, _ in measure_extents(tokens):  # real music never trips the stop
        assert peak <= RunawayLimits().quarters
    guard = RunawayGuard(1, RunawayLimits())  # nor the tighter bound on voices after the first
    tripped = [guard.update([VOCAB.token_to_id[token]], [False]) for token in tokens]
    assert not any(tripped)


def test_the_clock_follows_dots_tuplets_chords_graces_and_backups():
    clock = MeasureClock()
    for token in "measure A4 voice:1 quarter dot stem:up staff:1 chord C5 quarter dot".split():
        clock.feed(token)
    assert clock.position == Fraction(3, 2)
    for token in "grace D5 voice:1 eighth E5 voice:1 eighth 3in2 backup quarter".split():
        clock.feed(token)
    assert clock.position == Fraction(3, 2) + Fraction(1, 3) - 1
    assert clock.peak == Fraction(3, 2) + Fraction(1, 3)
    clock.feed("backup")
    clock.feed("whole")
    assert clock.position == 0  # never before the barline
    clock.feed("measure")
    assert (clock.position, clock.peak, clock.tokens) == (0, 0, 0)


LOOP = "D5 voice:1 eighth stem:up staff:1".split()
MEASURE = "measure key:fifths:0 clef:G2 staff:1 clef:F4 staff:2".split()
REAL = (MEASURE + "A4 voice:1 half staff:1 B4 voice:1 half staff:1".split()) * 2


def _scripted_pick(scripts: list[list[str]], grammar):
    """A stand-in decoder: row r wants scripts[r] (the last part repeated for ever); where the grammar
    forbids the wanted token it takes the allowed token that ends the sequence soonest."""
    wanted_ids = [VOCAB.encode(script) for script in scripts]
    steps = [0] * len(scripts)
    to_end = grammar.steps_to_end

    def pick(last, finished, states, remaining):
        allowed = grammar.allowed(states, remaining)
        tokens = []
        for row in range(len(scripts)):
            script = wanted_ids[row]
            want = script[steps[row]] if steps[row] < len(script) else EOS_ID
            steps[row] += 1
            if not bool(allowed[row, want]):
                nxt = grammar.table[states[row]]
                cost = torch.where(allowed[row], to_end[nxt.clamp(min=0)], 10**6)
                want = int(cost.argmin())
            tokens.append(want)
        return torch.tensor(tokens), torch.zeros(len(scripts))

    return pick


def test_a_row_looping_in_one_measure_is_closed_early_and_stays_grammatical():
    grammar = lmx_grammar()
    looping = MEASURE + LOOP * 200  # 200 eighths = 100 quarters in one measure
    pick = _scripted_pick([looping, REAL], grammar)
    ids, _, finished, tripped = decode_steps(2, torch.device("cpu"), 700, grammar, pick, runaway=RunawayLimits())
    assert tripped.tolist() == [True, False]
    assert finished.tolist() == [True, True]
    rows = [[t for t in row if t > EOS_ID] for row in ids.tolist()]
    limits = RunawayLimits()
    # closed within a note or two of passing the limit: 2 eighths a quarter, 5 tokens an eighth
    assert len(rows[0]) < len(MEASURE) + 5 * (2 * limits.quarters + 3)
    assert VOCAB.decode(rows[1]) == REAL  # the neighbour is untouched
    for row in rows:
        ok, why = grammar.accepts(VOCAB.decode(row))
        assert ok, why


def test_the_clock_notes_where_the_first_voice_ended():
    clock = MeasureClock()
    for token in "measure E5 voice:1 quarter dot E5 voice:1 quarter dot backup half".split():
        clock.feed(token)
    assert clock.first_voice == 3
    for token in "dot backup quarter E3 voice:5 half".split():
        clock.feed(token)
    assert clock.first_voice == 3  # the first backup's, not a later one's
    clock.feed("measure")
    assert clock.first_voice is None


LEFT_HAND_LOOP = "E2 voice:5 16th 3in2 staff:2".split()  # a sixth of a quarter each


def test_a_loop_in_a_later_voice_is_closed_at_twice_the_first_voices_length():
    """A 6/8 measure: the right hand ends at 3 quarters, then the left hand loops through triplet 16ths.
    The measure-wide bound (16 quarters) would let it run to its 97th note; 2 * 3 + 2 = 8 is passed at
    its 49th."""
    grammar = lmx_grammar()
    right_hand = "E5 voice:1 quarter dot staff:1 E5 voice:1 quarter dot staff:1 backup half backup quarter".split()
    looping = MEASURE + right_hand + LEFT_HAND_LOOP * 200
    pick = _scripted_pick([looping], grammar)
    ids, _, finished, tripped = decode_steps(1, torch.device("cpu"), 900, grammar, pick, runaway=RunawayLimits())
    assert tripped.tolist() == [True] and finished.tolist() == [True]
    row = VOCAB.decode([t for t in ids[0].tolist() if t > EOS_ID])
    loop_notes = row.count("E2")
    assert 48 <= loop_notes <= 50
    ok, why = grammar.accepts(row)
    assert ok, why


def test_without_the_stop_the_same_loop_runs_to_the_cap():
    grammar = lmx_grammar()
    pick = _scripted_pick([MEASURE + LOOP * 200], grammar)
    ids, _, finished, tripped = decode_steps(1, torch.device("cpu"), 300, grammar, pick)
    assert not tripped.any()
    assert int((ids > EOS_ID).sum()) >= 299


def test_without_a_grammar_a_tripped_row_ends_at_once():
    steps = {"n": 0}
    loop_ids = VOCAB.encode(MEASURE + LOOP * 200)

    def pick(last, finished, states, remaining):
        token = loop_ids[steps["n"]]
        steps["n"] += 1
        return torch.tensor([token]), torch.zeros(1)

    ids, _, finished, tripped = decode_steps(1, torch.device("cpu"), 700, None, pick, runaway=RunawayLimits())
    assert tripped.tolist() == [True] and finished.tolist() == [True]
    assert ids[0, -1].item() == EOS_ID
    assert ids.shape[1] < len(MEASURE) + 5 * (2 * RunawayLimits().quarters + 2)
