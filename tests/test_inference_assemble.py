"""Joining per-system parts into one score: reading order, breaks, no repeated signatures."""

import xml.etree.ElementTree as ET

from acai_omr.inference.assemble import BREAK_PAGE, BREAK_SYSTEM, assemble_score, join_parts
from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.musicxml import parse_score_string, split_part_into_systems

SYSTEM_A = "measure key:fifths:-1 time beats:3 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 C4 half staff:1 C4 quarter"
SYSTEM_B = "measure key:fifths:-1 clef:G2 staff:1 clef:F4 staff:2 D4 half staff:1 D4 quarter"
SYSTEM_C = "measure key:fifths:2 clef:G2 staff:1 clef:F4 staff:2 E4 half staff:1 E4 quarter measure F4 half staff:1 F4 quarter"


def part(lmx: str) -> ET.Element:
    result = delinearize(lmx)
    assert result.part is not None and not result.unparseable
    return result.part


def test_measures_are_joined_in_order_and_renumbered():
    joined = join_parts([part(SYSTEM_A), part(SYSTEM_B), part(SYSTEM_C)], [BREAK_SYSTEM] * 3)
    measures = joined.findall("measure")
    assert [m.get("number") for m in measures] == ["1", "2", "3", "4"]
    steps = [m.find("note/pitch/step").text for m in measures]
    assert steps == ["C", "D", "E", "F"]


def test_later_systems_start_with_a_system_break_and_page_changes_with_a_page_break():
    joined = join_parts([part(SYSTEM_A), part(SYSTEM_B), part(SYSTEM_C)], [BREAK_SYSTEM, BREAK_SYSTEM, BREAK_PAGE])
    measures = joined.findall("measure")
    assert measures[0].find("print") is None
    assert measures[1].find("print").get("new-system") == "yes"
    assert measures[2].find("print").get("new-page") == "yes"
    assert measures[3].find("print") is None  # second measure of the last system: no break
    assert list(measures[1])[0].tag == "print"  # a print comes before the measure's music


def test_restated_clefs_and_key_are_dropped_but_changes_are_kept():
    joined = join_parts([part(SYSTEM_A), part(SYSTEM_B), part(SYSTEM_C)], [BREAK_SYSTEM] * 3)
    second, third = joined.findall("measure")[1:3]
    second_attributes = second.find("attributes")
    # same key and clefs as before: nothing but (possibly) divisions remains
    assert second_attributes is None or not second_attributes.findall("key") and not second_attributes.findall("clef")
    assert third.find("attributes/key/fifths").text == "2"  # a real key change survives
    assert joined.findall("measure")[0].find("attributes/time/beats").text == "3"


def test_joining_inverts_splitting_into_systems(tmp_path):
    """split_part_into_systems then join_parts gives back the same notes and the same system starts."""
    from shared_data import LIEDER_DEV, require

    fixture = next(require(LIEDER_DEV).glob("*.musicxml"))
    root = parse_score_string(fixture.read_bytes())
    original = root.find("part")
    systems = split_part_into_systems(original)
    joined = join_parts(systems, [BREAK_SYSTEM] * len(systems))
    assert len(joined.findall("measure")) == len(original.findall("measure"))
    original_notes = [ET.tostring(n) for n in original.iter("note")]
    joined_notes = [ET.tostring(n) for n in joined.iter("note")]
    assert joined_notes == original_notes
    starts = [i for i, m in enumerate(joined.findall("measure")) if m.find("print[@new-system='yes']") is not None]
    assert len(starts) == len(systems) - 1


def test_missing_and_empty_parts_are_skipped_and_their_break_carries_over():
    joined = join_parts([part(SYSTEM_A), None, part(SYSTEM_B)], [BREAK_SYSTEM, BREAK_PAGE, BREAK_SYSTEM])
    measures = joined.findall("measure")
    assert len(measures) == 2
    assert measures[1].find("print").get("new-page") == "yes"


def test_assembled_score_is_valid_musicxml_with_one_piano_part():
    text = assemble_score([part(SYSTEM_A), part(SYSTEM_B)], [BREAK_SYSTEM, BREAK_SYSTEM], title="Test")
    root = parse_score_string(text)
    assert root.tag == "score-partwise"
    assert root.find("work/work-title").text == "Test"
    assert [p.get("id") for p in root.findall("part")] == ["P1"]
    assert root.find("part-list/score-part/part-name").text == "Piano"


def test_breaks_must_match_parts():
    import pytest

    with pytest.raises(ValueError, match="breaks"):
        join_parts([part(SYSTEM_A)], [])


# ---------------------------------------------------------------- a coherent score


def staff_lengths(measure: ET.Element, divisions: int) -> dict[str, float]:
    """Staff -> where its last note (hidden ones included) ends, in quarters; no note starts before the bar."""
    from acai_omr.inference.assemble import note_spans, staff_ends

    assert all(start >= 0 for _, start, _ in note_spans(measure)[0])
    return {staff: end / divisions for staff, end in staff_ends(measure).items()}


def test_one_key_for_the_page_and_key_changes_inside_a_system_kept():
    from acai_omr.inference.assemble import cohere_parts

    systems = [part(SYSTEM_A), part(SYSTEM_C), part(SYSTEM_B),
               part(SYSTEM_B + " measure key:fifths:3 F4 half staff:1 F4 quarter")]
    coherent, repairs = cohere_parts(systems)
    assert [m.findtext("attributes/key/fifths") for p in coherent for m in p.findall("measure")[:1]] == ["-1"] * 4
    assert repairs[1] and "key 2 -> -1" in repairs[1][0] and not any("key" in r for r in repairs[0] + repairs[2])
    assert coherent[3].findall("measure")[1].findtext("attributes/key/fifths") == "3"  # a change the model read
    joined = join_parts(coherent, [BREAK_SYSTEM] * 4)
    assert [k.findtext("fifths") for k in joined.iter("key")] == ["-1", "3"]
    assert systems[1].findall("measure")[0].findtext("attributes/key/fifths") == "2"  # the input is not changed


def test_a_time_signature_is_read_or_inferred_and_carried_on():
    from acai_omr.inference.assemble import cohere_parts

    no_time = [part(SYSTEM_B), part(SYSTEM_C)]  # 3-quarter measures, no time signature anywhere
    coherent, repairs = cohere_parts(no_time)
    time = coherent[0].find("measure/attributes/time")
    assert (time.findtext("beats"), time.findtext("beat-type")) == ("3", "4")
    assert "inferred" in repairs[0][0]
    read = [part(SYSTEM_B), part(SYSTEM_A.replace("beats:3", "beats:6").replace("beat-type:4", "beat-type:8"))]
    coherent, _ = cohere_parts(read)  # printed by a later system only: it is the one read, moved to the start
    assert coherent[0].find("measure/attributes/time/beats").text == "6"
    text = assemble_score(read, [BREAK_SYSTEM] * 2)
    assert text.count("<time>") == 1


def test_measures_are_filled_in_both_staves_and_overflow_is_cut():
    from acai_omr.inference.assemble import cohere_parts

    lmx = ("measure key:fifths:0 time beats:4 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
           "C4 quarter staff:1 D4 quarter staff:1 "  # a pickup of two quarters: left as it is
           "measure E4 whole staff:1 F4 quarter staff:1 backup whole G2 voice:5 half staff:2 "  # 5/4 over 2/4
           "measure A4 whole staff:1 "  # no left hand at all
           "measure B4 whole staff:1 backup whole C3 voice:5 whole staff:2")
    (coherent,), (repairs,) = cohere_parts([part(lmx)])
    measures = coherent.findall("measure")
    divisions = int(measures[0].findtext("attributes/divisions"))
    assert staff_lengths(measures[0], divisions) == {"1": 2.0}  # the pickup: not padded
    assert staff_lengths(measures[1], divisions) == {"1": 4.0, "2": 4.0}
    assert "acai-omr: 1 note(s) the model wrote past this barline were cut" in ET.tostring(measures[1], "unicode")
    left = [n for n in measures[1].findall("note") if n.findtext("staff") == "2"]
    assert left[0].find("pitch/step").text == "G" and left[-1].get("print-object") == "no"
    assert staff_lengths(measures[2], divisions) == {"1": 4.0, "2": 4.0}
    assert measures[2].find("note[@print-object='no']/staff").text == "2"
    assert staff_lengths(measures[3], divisions) == {"1": 4.0, "2": 4.0}  # the last measure, already full
    assert any("cut 1 note" in r for r in repairs) and any("empty staff" in r for r in repairs)
    assert not any(r.startswith("measure 4") for r in repairs)
