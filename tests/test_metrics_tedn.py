"""TEDn: golden values from the spec (§4.3, §6), gold preparation, pruning, note codes, zss cross-checks."""

from __future__ import annotations

import copy
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.lmxfile import load_lmx_file
from acai_omr.lmx.vocab import LMX_TOKEN_SET
from acai_omr.metrics.tedn import (
    PITCH_ALPHABET,
    TednResult,
    _NoteCoder,
    corpus_tedn,
    prepare_gold,
    prune,
    tedn,
    tedn_lmx,
    well_formedness,
)
from acai_omr.metrics.zss_reference import tedn_zss
from acai_omr.paths import shared_dir

FIXTURES = Path(__file__).parent / "fixtures" / "olimpic-lmx"

# spec §6: gold LMX vs its own system MusicXML, (edit, gold) for the lmx and full flavours.
GOLDEN = {
    "grandstaff": ((0, 43), (2, 45)),
    "note_types": ((0, 72), (2, 74)),
    "one_empty_measure": ((0, 16), (2, 18)),
    "simple_2345": ((0, 165), (2, 167)),
    "simple_67": ((0, 150), (2, 152)),
    "simple_89": ((0, 162), (2, 164)),
}


def fixture_tokens(name: str) -> list[str]:
    return load_lmx_file(FIXTURES / f"{name}.lmx").systems[0]


def as_pair(result: TednResult) -> tuple[int, int]:
    return (result.edit_cost, result.gold_cost)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_gold_lmx_against_its_musicxml_gives_the_spec_values(name):
    lmx_expected, full_expected = GOLDEN[name]
    tokens = fixture_tokens(name)
    assert as_pair(tedn_lmx(tokens, FIXTURES / f"{name}.xml", flavor="lmx")) == lmx_expected
    assert as_pair(tedn_lmx(tokens, FIXTURES / f"{name}.xml", flavor="full")) == full_expected


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_gold_against_itself_is_zero_and_gold_cost_matches_the_spec(name):
    gold = prepare_gold(FIXTURES / f"{name}.xml")
    (_, lmx_gold_cost), (_, full_gold_cost) = GOLDEN[name]
    assert as_pair(tedn(gold, gold, "lmx")) == (0, lmx_gold_cost)
    assert as_pair(tedn(gold, gold, "full")) == (0, full_gold_cost)


def test_full_flavour_counts_what_lmx_pruning_removes():
    """The grandstaff gold has <barline><bar-style>: 2 nodes LMX cannot express."""
    gold = prepare_gold(FIXTURES / "grandstaff.xml")
    pruned = copy.deepcopy(gold)
    prune(pruned)
    assert as_pair(tedn(pruned, gold, "full")) == (2, 45)
    assert as_pair(tedn(pruned, gold, "lmx")) == (0, 43)


NOTE_TYPES = " ".join(fixture_tokens("note_types"))

# spec §4.3, measured on note_types (gold_cost 72, flavour lmx).
PERTURBATIONS = {
    "exact": (NOTE_TYPES, 0),
    "one 16th note missing": (NOTE_TYPES.replace(" E5 16th", ""), 5),
    "one extra 16th note": (NOTE_TYPES + " F5 16th", 1),
    "wrong pitch": (NOTE_TYPES.replace("D5 16th", "F5 16th"), 1),
    "wrong type": (NOTE_TYPES.replace("C5 eighth", "C5 16th"), 1),
    "extra accidental": (NOTE_TYPES.replace("C5 eighth", "C5 eighth sharp"), 2),
    "all stem tokens removed": (NOTE_TYPES.replace(" stem:up", "").replace(" stem:down", ""), 5),
    "empty string": ("", 72),
    "crash (token before measure)": ("C4 " + NOTE_TYPES, 72),
}


@pytest.mark.parametrize("case", sorted(PERTURBATIONS))
def test_perturbation_table_on_note_types(case):
    lmx, expected_edit = PERTURBATIONS[case]
    assert as_pair(tedn_lmx(lmx, FIXTURES / "note_types.xml")) == (expected_edit, 72)


def test_perturbations_agree_with_zss():
    gold = prepare_gold(FIXTURES / "note_types.xml")
    for lmx, _ in PERTURBATIONS.values():
        part = delinearize(lmx, fractional_durations=True).part
        if part is None:
            continue
        for flavor in ("lmx", "full"):
            assert tedn(part, gold, flavor) == tedn_zss(part, gold, flavor)


def test_random_token_perturbations_of_the_fixtures_agree_with_zss():
    """Arbitrary (often nonsensical) predictions, small enough for zss to be quick."""
    rng = random.Random(5)
    vocabulary = sorted(LMX_TOKEN_SET)
    for name in ("grandstaff", "note_types", "simple_67"):
        gold = prepare_gold(FIXTURES / f"{name}.xml")
        tokens = fixture_tokens(name)
        for _ in range(4):
            noisy = [tokens[0]] + [
                rng.choice(vocabulary) if rng.random() < 0.15 else token for token in tokens[1:] if rng.random() > 0.1
            ]
            part = delinearize(noisy, fractional_durations=True).part
            if part is not None:
                assert tedn(part, gold) == tedn_zss(part, gold)


def test_tedn_lmx_accepts_a_token_list_a_string_and_every_gold_form():
    tokens = fixture_tokens("grandstaff")
    path = FIXTURES / "grandstaff.xml"
    text = path.read_text(encoding="utf-8")
    expected = (0, 43)
    assert as_pair(tedn_lmx(" ".join(tokens), str(path))) == expected
    assert as_pair(tedn_lmx(tokens, text)) == expected
    assert as_pair(tedn_lmx(tokens, ET.fromstring(text.split("?>", 1)[1].split("dtd\">", 1)[1]))) == expected
    assert as_pair(tedn_lmx(tokens, prepare_gold(path))) == expected  # an already prepared part


def test_unparseable_prediction_scores_as_empty_part():
    result = tedn_lmx("clef:G2 measure C4 voice:1 quarter", FIXTURES / "grandstaff.xml")
    assert result.edit_cost == result.gold_cost == 43
    assert result.value == 1.0
    assert well_formedness("clef:G2 measure C4 voice:1 quarter")[0] is True


@pytest.mark.parametrize(
    "lmx, expected",
    [
        ("measure C4 D4 voice:1 quarter", (False, 1)),
        ("measure C4 voice:1 quarter foo", (False, 1)),
        ("measure C4 voice:1", (False, 2)),
        ("measure rest C4 voice:1 quarter", (False, 0)),
        ("C4 measure C4 voice:1 quarter", (True, 1)),
    ],
)
def test_well_formedness_counts_delinearizer_errors(lmx, expected):
    assert well_formedness(lmx) == expected


# ---------------------------------------------------------------- gold preparation

SCORE = """<score-partwise version="3.1">
  <identification><creator>x</creator></identification>
  <part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions> 480 </divisions><key><fifths>0</fifths></key></attributes>
      <note><pitch><step> C </step><octave>4</octave></pitch><duration>240</duration><voice>1</voice><type>eighth</type></note>
      <backup><duration>240</duration></backup>
      <attributes><divisions>2</divisions></attributes>
      <forward><duration>3</duration></forward>
    </measure>
  </part>
</score-partwise>"""


def test_prepare_gold_converts_durations_by_the_divisions_in_force_and_drops_divisions():
    part = prepare_gold(SCORE)
    measure = part.find("measure")
    assert measure.find(".//divisions") is None
    assert [d.text for d in measure.iter("duration")] == ["1/2", "1/2", "3/2"]
    assert measure.find("note/pitch/step").text == "C"  # text stripped
    assert measure.find("attributes").tail is None


def test_prepare_gold_is_idempotent_and_leaves_its_input_alone():
    root = ET.fromstring(SCORE)
    before = ET.tostring(root)
    once = prepare_gold(root)
    assert ET.tostring(root) == before
    assert ET.tostring(prepare_gold(once)) == ET.tostring(once)


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<score-partwise><part/><part/></score-partwise>", "exactly one <part>"),
        ("<score-partwise></score-partwise>", "exactly one <part>"),
        ("<score-partwise><part><measure><note><duration>1</duration></note><attributes><divisions>1</divisions>"
         "</attributes></measure></part></score-partwise>", "before any <divisions>"),
        ("<part/>", "expected <score-partwise>"),
        ("<score-partwise><part><measure><attributes><divisions>x</divisions></attributes></measure></part>"
         "</score-partwise>", "not an integer"),
        ("<score-partwise><part", "well-formed"),
    ],
)
def test_prepare_gold_rejects_bad_gold_with_a_clear_error(xml, message):
    with pytest.raises(ValueError, match=message):
        prepare_gold(xml)


def test_prepare_gold_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        prepare_gold(tmp_path / "missing.musicxml")


def test_bad_flavor_and_mismatched_roots_are_rejected():
    part = ET.fromstring("<part/>")
    with pytest.raises(ValueError, match="flavor"):
        tedn(part, part, flavor="medium")
    with pytest.raises(ValueError, match="cannot compare"):
        tedn(ET.fromstring("<measure/>"), part)


# ---------------------------------------------------------------- tree, codes, costs


def note_xml(step="A", octave=4, voice="1", type_="quarter", stem="up", extra=""):
    stem_xml = f"<stem>{stem}</stem>" if stem else ""
    return (f"<note><pitch><step>{step}</step><octave>{octave}</octave></pitch><duration>1</duration>"
            f"<voice>{voice}</voice><type>{type_}</type>{stem_xml}{extra}</note>")


def part_of(*notes: str) -> ET.Element:
    return ET.fromstring("<part><measure>" + "".join(notes) + "</measure></part>")


def test_note_codes_follow_the_spec():
    coder = _NoteCoder()
    assert coder.code(ET.fromstring(note_xml())) == "015U"
    assert coder.code(ET.fromstring(note_xml(step="B", voice="11", type_="16th", stem="down"))) == "1113D"
    assert coder.code(ET.fromstring(note_xml())) == "015U"  # same pitch, same symbol
    assert coder.code(ET.fromstring("<note><rest measure='yes'/><duration>4</duration></note>")) == "R17-"
    assert coder.code(ET.fromstring("<note><type>128th</type><stem>none</stem></note>")) == "~10N"


def test_pitch_alphabet_skips_r_and_has_169_symbols():
    assert len(PITCH_ALPHABET) == len(set(PITCH_ALPHABET)) == 169
    assert "R" not in PITCH_ALPHABET
    assert PITCH_ALPHABET.index("~") == 89  # the 90th pitch collides with the missing-pitch code


def test_gold_notes_get_pitch_symbols_first():
    """Symbols are compared inside Levenshtein, so coding order changes values: gold D4 gets
    '0' ("054U"); coding the prediction first would give gold "254U", one edit from pred "125U"."""
    gold = part_of(note_xml("D", 4, "5", "eighth", "up"))
    pred = part_of(note_xml("E", 4, "5", "half", "down"), note_xml("E", 5, "2", "quarter", "up"))
    assert as_pair(tedn(pred, gold)) == (4, 6)
    assert tedn(pred, gold) == tedn_zss(pred, gold)


def test_costs_are_asymmetric_missing_note_costs_its_code_extra_note_costs_one():
    one = part_of(note_xml())
    two = part_of(note_xml(), note_xml("B"))
    assert as_pair(tedn(one, two)) == (5, 11)
    assert as_pair(tedn(two, one)) == (1, 6)


def test_xml_attributes_and_note_durations_are_ignored_but_forward_durations_count():
    gold = part_of(note_xml(), "<forward><duration>1/2</duration></forward>")
    pred = ET.fromstring(ET.tostring(gold).decode().replace("<duration>1</duration>", "<duration>7</duration>")
                         .replace("<measure>", '<measure number="9">'))
    assert tedn(pred, gold).edit_cost == 0
    pred.find("measure/forward/duration").text = "1"
    assert tedn(pred, gold).edit_cost == 1


def test_whitespace_in_prediction_text_does_not_count():
    gold = prepare_gold(FIXTURES / "simple_67.xml")
    pretty = copy.deepcopy(gold)
    ET.indent(pretty)
    for element in pretty.iter("step"):
        element.text = f"  {element.text}\n"
    assert tedn(pretty, gold).edit_cost == 0


def test_lmx_pruning_ignores_what_lmx_cannot_express():
    gold = part_of(note_xml())
    decorated = part_of(note_xml(extra=(
        "<notehead>x</notehead><lyric><text>la</text></lyric>"
        "<notations><technical><fingering>1</fingering></technical>"
        "<articulations><staccato placement='above'/><breath-mark/></articulations></notations>")))
    decorated.find("measure").insert(0, ET.fromstring("<direction><direction-type><words>p</words></direction-type></direction>"))
    plain_staccato = part_of(note_xml(extra="<notations><articulations><staccato/></articulations></notations>"))
    assert tedn(decorated, plain_staccato, "lmx").edit_cost == 0
    assert tedn(decorated, plain_staccato, "full").edit_cost > 0
    assert tedn(gold, plain_staccato, "lmx").edit_cost == 3  # notations, articulations, staccato


def test_corpus_tedn_is_micro_averaged():
    results = [TednResult(0, 1), TednResult(10, 100)]
    assert corpus_tedn(results) == pytest.approx(100 * 10 / 101)
    assert corpus_tedn([]) == 0.0
    assert TednResult(3, 0).value == float("inf")


# ---------------------------------------------------------------- real-size systems


@pytest.mark.slow
def test_real_size_lieder_systems_agree_with_zss():
    folder = shared_dir() / "conformance" / "lieder-dev"
    rng = random.Random(11)
    vocabulary = sorted(LMX_TOKEN_SET)
    systems = sorted(folder.glob("*.lmx"))[:40]
    checked = 0
    for lmx in systems:
        tokens = lmx.read_text(encoding="utf-8").split()
        if not 150 <= len(tokens) <= 260:
            continue
        gold = prepare_gold(lmx.with_suffix(".musicxml"))
        noisy = [tokens[0]] + [rng.choice(vocabulary) if rng.random() < 0.05 else t for t in tokens[1:]]
        part = delinearize(noisy, fractional_durations=True).part
        assert part is not None
        assert tedn(part, gold) == tedn_zss(part, gold)
        checked += 1
        if checked == 3:
            break
    assert checked == 3
