"""Gold LMX delinearized and scored against its own MusicXML gives TEDn 0 (spec §6 golden values)."""

import pytest

from acai_omr.lmx import find_piano_part, part_to_score, read_score, split_part_into_systems
from acai_omr.metrics import tedn
from lmx_support import CONFORMANCE_DIR, FIXTURE_DIR, conformance_gold, conformance_params, fixture_gold

# spec §6: (gold_cost lmx flavour, gold_cost full flavour); a perfect prediction costs 0 and 2
GOLDEN = {"grandstaff": (43, 45), "note_types": (72, 74), "one_empty_measure": (16, 18),
          "simple_2345": (165, 167), "simple_67": (150, 152), "simple_89": (162, 164)}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_fixture_gold_lmx_scores_tedn_zero(name):
    system = split_part_into_systems(find_piano_part(read_score(FIXTURE_DIR / f"{name}.xml")))[0]
    gold_score = part_to_score(system, part_id="P2")
    lmx_result = tedn.tedn_lmx(fixture_gold(name), gold_score, flavor="lmx")
    full_result = tedn.tedn_lmx(fixture_gold(name), gold_score, flavor="full")
    assert (lmx_result.edit_cost, lmx_result.gold_cost) == (0, GOLDEN[name][0])
    assert (full_result.edit_cost, full_result.gold_cost) == (2, GOLDEN[name][1])


@pytest.mark.parametrize("name", conformance_params())
def test_conformance_gold_lmx_scores_tedn_zero(name):
    result = tedn.tedn_lmx(conformance_gold(name), CONFORMANCE_DIR / f"{name}.musicxml", flavor="lmx")
    assert result.edit_cost == 0 and result.gold_cost > 0
