"""SER: token Levenshtein distance, per-sample counts, micro-averaged corpus value, SERnotuplets."""

from __future__ import annotations

import random

import pytest

from acai_omr.metrics.ser import corpus_ser, drop_tuplets, ser, token_edit_distance


def python_levenshtein(a: list[str], b: list[str]) -> int:
    previous = list(range(len(b) + 1))
    for x, token_a in enumerate(a, 1):
        current = [x]
        for y, token_b in enumerate(b, 1):
            current.append(min(previous[y] + 1, current[y - 1] + 1, previous[y - 1] + (token_a != token_b)))
        previous = current
    return previous[-1]


def test_token_edit_distance_basic_cases():
    assert token_edit_distance("measure C4 voice:1 quarter", "measure C4 voice:1 quarter") == 0
    assert token_edit_distance("measure C4 voice:1 quarter", "measure D4 voice:1 quarter") == 1
    assert token_edit_distance("measure C4 quarter", "measure C4 voice:1 quarter") == 1
    assert token_edit_distance("", "a b c") == 3
    assert token_edit_distance(["a", "b"], []) == 2
    # tokens, not characters: "C4" vs "C5" is one substitution however similar the strings are
    assert token_edit_distance("C4 C4", "C5 C5") == 2


def test_token_edit_distance_matches_a_plain_dynamic_programme():
    rng = random.Random(3)
    alphabet = ["measure", "C4", "D4", "quarter", "eighth", "voice:1", "beam:begin"]
    for _ in range(300):
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 25))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 25))]
        assert token_edit_distance(a, b) == python_levenshtein(a, b)


def test_long_sequences_are_fast_enough():
    rng = random.Random(4)
    a = [str(rng.randint(0, 50)) for _ in range(700)]
    b = [str(rng.randint(0, 50)) for _ in range(700)]
    assert 0 < token_edit_distance(a, b) <= 700


def test_ser_returns_edits_and_gold_length():
    assert ser("measure C4 voice:1 quarter", "measure C4 quarter") == (1, 4)
    assert ser(["measure"], "") == (1, 1)


def test_sernotuplets_drops_tuplet_brackets_and_time_modifications():
    gold = "measure C4 voice:1 eighth 3in2 tuplet:start D4 eighth 3in2 E4 eighth 3in2 tuplet:stop"
    pred = "measure C4 voice:1 eighth D4 eighth E4 eighth"
    assert drop_tuplets(gold.split()) == pred.split()
    assert ser(gold, pred) == (5, 13)
    assert ser(gold, pred, notuplets=True) == (0, 8)


def test_corpus_ser_is_micro_averaged_over_either_counts_or_token_pairs():
    assert corpus_ser([(0, 1), (10, 100)]) == pytest.approx(100 * 10 / 101)
    pairs = [("a b c d", "a b c d"), ("a b", "a x y")]
    assert corpus_ser(pairs) == pytest.approx(100 * 2 / 6)
    assert corpus_ser([("a 3in2", "a")], notuplets=True) == 0.0
    assert corpus_ser([]) == 0.0
