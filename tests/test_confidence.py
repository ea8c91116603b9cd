"""The per-system confidence the product shows: the mean probability of the pitches written, in words."""

import math

from acai_omr.inference.confidence import CONFIDENCE_WORDS, confidence_words, system_confidence


def test_confidence_is_the_mean_probability_of_the_pitches():
    tokens = ["measure", "key:fifths:0", "C4", "quarter", "E4", "quarter"]
    logprobs = [math.log(p) for p in (0.99, 0.99, 0.5, 0.99, 0.3, 0.99)]
    assert abs(system_confidence(tokens, logprobs) - 0.4) < 1e-9  # sure structure does not hide unsure pitches
    rests = ["measure", "rest", "whole"]
    assert abs(system_confidence(rests, [math.log(0.5)] * 3) - 0.5) < 1e-9  # no pitch: every token counts


def test_confidence_words_cover_every_value_and_get_more_cautious_downwards():
    assert confidence_words(None) == ""
    assert confidence_words(0.95) == CONFIDENCE_WORDS[0][1]
    assert confidence_words(0.75) == CONFIDENCE_WORDS[1][1]
    assert confidence_words(0.1) == confidence_words(0.0) == "likely many errors: check every note"
