"""The GRPO reward's components at their anchor points, the combination, and the never-raising scorer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.lmxfile import parse_lmx_text
from acai_omr.train.reward import (RewardComponents, RewardParams, RewardScorer, RewardWeights, combine,
                                   count_consecutive_repeats, length_penalty, repeat_penalty, score_sample,
                                   tedn_score, token_f1, well_formedness)

FIXTURES = Path(__file__).parent / "fixtures" / "olimpic-lmx"


def fixture_tokens(name: str) -> list[str]:
    return parse_lmx_text((FIXTURES / f"{name}.lmx").read_text()).systems[0]


# ---------------------------------------------------------------- components


def test_tedn_score_is_half_at_tedn_70_and_one_when_perfect():
    assert tedn_score(0.0) == 1.0
    assert tedn_score(70.0) == pytest.approx(0.5, abs=0.005)
    assert tedn_score(math.log(2) / 0.01) == pytest.approx(0.5)
    assert tedn_score(1e6) == pytest.approx(0.0)
    assert tedn_score(10.0) > tedn_score(20.0)


def test_well_formedness_anchor_points_and_unparseable_floor():
    assert well_formedness(False, 0) == 1.0
    assert well_formedness(False, 3) == pytest.approx(0.55, abs=0.005)  # exp(-0.6) = 0.5488
    assert well_formedness(True, 0) == -3.0
    assert well_formedness(True, 5, gamma=2.0) == -2.0


def test_token_f1_is_multiset_overlap():
    assert token_f1(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert token_f1(["a", "b"], ["c", "d"]) == 0.0
    # sample a a b vs gold a b b: overlap = min counts = a:1 + b:1 = 2; P = R = 2/3
    assert token_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)
    # P = 1/1, R = 1/4 -> F1 = 2 * 0.25 / 1.25 = 0.4
    assert token_f1(["a"], ["a", "b", "c", "d"]) == pytest.approx(0.4)
    assert token_f1([], []) == 1.0
    assert token_f1([], ["a"]) == 0.0


def test_consecutive_repeats_count_positions_followed_by_the_same_ngram():
    assert count_consecutive_repeats(list("abab"), 2) == 1
    assert count_consecutive_repeats(list("ababab"), 2) == 3  # at 0 (ab|ab), 1 (ba|ba), 2 (ab|ab)
    assert count_consecutive_repeats(list("abcabc"), 3) == 1
    assert count_consecutive_repeats(list("abcd"), 2) == 0
    assert count_consecutive_repeats(list("aaaa"), 2) == 1  # aa|aa only at position 0


def test_repeat_penalty_normalisation_and_clipping():
    assert repeat_penalty(list("abcdefgh")) == 0.0
    assert repeat_penalty([]) == 0.0 and repeat_penalty(["a"]) == 0.0
    # "abab": one 2-gram repeat, no 3-/4-gram repeats; 1 / (4 * 3)
    assert repeat_penalty(list("abab")) == pytest.approx(1 / 12)
    # a decoding loop of one token: 2-, 3-, 4-gram repeats everywhere, still at most 1
    loop = ["x"] * 200
    assert 0.5 < repeat_penalty(loop) <= 1.0


def test_length_penalty_dead_zone_and_reaches_one_at_tau():
    assert length_penalty(100, 100) == 0.0
    assert length_penalty(110, 100) == 0.0  # |x| = delta
    assert length_penalty(90, 100) == 0.0
    assert length_penalty(111, 100) == pytest.approx(math.exp(math.log(2) / 100 * 11) - 1)
    assert length_penalty(200, 100) == pytest.approx(1.0)  # x = tau
    assert length_penalty(0, 100) == pytest.approx(1.0)
    assert length_penalty(1000, 100) == 1.0  # clipped
    assert length_penalty(150, 100) < length_penalty(160, 100)


# ---------------------------------------------------------------- one sample, end to end


def test_identical_sample_gets_full_reward_and_no_penalties():
    gold = fixture_tokens("grandstaff")
    assert repeat_penalty(gold) == 0.0  # this fixture has no consecutive repeats
    c = score_sample(gold, gold, delinearize(gold).to_musicxml())
    assert not c.error
    assert c.tedn == 0 and c.tedn_score == 1.0
    assert c.f1 == 1.0 and c.repeat_penalty == 0.0 and c.len_penalty == 0.0
    assert c.well_formedness == 1.0 and not c.unparseable
    assert combine(c, RewardWeights()) == pytest.approx(0.35 + 0.10 + 0.25)


def test_gold_file_path_works_and_a_worse_sample_scores_lower():
    gold = fixture_tokens("simple_2345")
    gold_path = str(FIXTURES / "simple_2345.xml")
    perfect = score_sample(gold, gold, gold_path)
    truncated = score_sample(gold[: len(gold) // 2], gold, gold_path)
    assert perfect.tedn == 0
    assert truncated.tedn > 0 and truncated.tedn_score < 1.0 and truncated.f1 < 1.0
    w = RewardWeights()
    assert combine(truncated, w) < combine(perfect, w)


def test_percent_mode_normalises_by_the_gold_cost():
    gold = fixture_tokens("simple_2345")
    xml = delinearize(gold).to_musicxml()
    half = gold[: len(gold) // 2]
    cost = score_sample(half, gold, xml, RewardParams(tedn_mode="cost"))
    percent = score_sample(half, gold, xml, RewardParams(tedn_mode="percent"))
    assert cost.tedn > 0 and 0 < percent.tedn <= 100
    assert cost.tedn != percent.tedn
    with pytest.raises(ValueError, match="tedn_mode"):
        RewardParams(tedn_mode="ratio")


def test_unparseable_sample_gets_the_floor_and_is_compared_as_empty():
    gold = fixture_tokens("grandstaff")
    xml = delinearize(gold).to_musicxml()
    bad = gold[1:]  # the first token is no longer `measure`: the delinearizer cannot start
    assert bad[0] != "measure"
    c = score_sample(bad, gold, xml)
    assert c.unparseable and not c.error
    assert c.well_formedness == -3.0
    empty = score_sample([], gold, xml)  # an empty part: TEDn = the cost of building the gold
    assert c.tedn == empty.tedn > 0
    assert combine(c, RewardWeights()) < combine(empty, RewardWeights())  # the floor makes it worse still


def test_a_crash_in_scoring_scores_as_unparseable_and_never_raises():
    gold = fixture_tokens("grandstaff")
    c = score_sample(gold, gold, "<score-partwise><part-list/></score-partwise>")  # gold without a <part>
    assert c.error and c.unparseable
    assert c.well_formedness == -3.0 and c.tedn_score == 0.0
    assert c.f1 == 1.0  # token-level components still measured
    bad = score_sample(None, gold, "not xml")  # type: ignore[arg-type]
    assert bad.error and bad.unparseable and bad.repeat_penalty == 1.0


def test_scorer_in_process_and_in_a_pool_agree_and_survive_bad_jobs():
    gold = fixture_tokens("simple_67")
    xml = delinearize(gold).to_musicxml()
    preds = [gold, gold[:20], gold + gold[-8:], []]
    golds = [gold] * 4
    inline = RewardScorer(RewardParams(), workers=0).score(preds, golds, [xml] * 4)
    with RewardScorer(RewardParams(), workers=1) as scorer:
        pooled = scorer.score(preds + [gold], golds + [gold], [xml] * 4 + ["<broken"])
    assert [c.to_dict() for c in inline] == [c.to_dict() for c in pooled[:4]]
    assert pooled[4].error and pooled[4].unparseable
    assert isinstance(pooled[0], RewardComponents) and pooled[0].tedn == 0
