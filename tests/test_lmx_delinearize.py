"""LMX -> MusicXML: soft-error counts (spec §3.4, §6), the former reference crashes (§3.5),
the rebuilt elements, and the gold round trip LMX -> MusicXML -> LMX."""

import xml.etree.ElementTree as ET

import pytest

from acai_omr.lmx import (
    DelinearizeResult, delinearize, find_piano_part, linearize_part, parse_score_string,
)
from lmx_support import FIXTURE_NAMES, conformance_gold, conformance_params, fixture_gold


def errors(lmx: str) -> int:
    result = delinearize(lmx)
    assert not result.unparseable
    return len(result.errors)


@pytest.mark.parametrize("lmx, count", [
    ("measure C4 D4 voice:1 quarter", 1),          # additional prefix (the last pitch wins)
    ("measure time beat-type:4", 1),               # missing beats
    ("measure time", 2),                           # missing beats and beat type
    ("measure C4 voice:1 quarter foo", 1),         # out of vocabulary
    ("measure beats:3 C4 voice:1 quarter", 1),     # dangling suffix
    ("measure C4 voice:1", 2),                     # two dangling prefixes
    ("measure quarter", 0),
    ("measure rest C4 voice:1 quarter", 0),        # rest wins over pitch, silently
    ("measure C4 voice:1 eighth beam:end", 0),     # closing an unopened beam is tolerated
    ("measure C4 quarter sharp flat stem:up stem:down", 2),  # additional suffixes
    ("measure key:fifths:1 dot", 1),               # unexpected suffix on a key
    ("measure time beats:3 beat-type:4 staff:1", 1),
    ("measure C4 forward quarter", 1),             # pitch on a forward
    ("measure forward backup quarter", 0),         # backup wins, forward dropped silently
    ("measure C4 quarter beats:3", 1),             # beats on a note
    ("measure C4 quarter dot dot beam:begin beam:begin slur:start slur:start", 0),  # multi-valued
    ("measure measure C4 quarter", 0),
])
def test_soft_error_counts(lmx, count):
    assert errors(lmx) == count


def test_error_lines_name_token_and_position():
    result = delinearize("measure C4 D4 voice:1 quarter")
    assert result.errors == ["[ERROR][Token 'D4' at position 3]: additional prefix token of kind 'pitch'"]
    assert result.part.find("measure/note/pitch/step").text == "D"


def test_leading_token_that_is_not_measure_is_unparseable():
    """Reference crash 1 (§3.5): classified as unparseable on purpose, as TEDn scores it."""
    result = delinearize("C4 measure C4 voice:1 quarter")
    assert result.unparseable and result.part is None and len(result.errors) == 1
    assert delinearize("foo C4 measure").unparseable
    score = result.to_score()  # an empty part, what TEDn evaluates for a crash
    assert score.find("part") is not None and len(score.find("part")) == 0


def test_forward_rooted_on_measure_rest_is_an_error_not_a_crash():
    """Reference crash 2 (§3.5)."""
    result = delinearize("measure forward quarter forward rest:measure")
    assert not result.unparseable and len(result.errors) == 1
    forwards = result.part.findall("measure/forward")
    assert len(forwards) == 1 and forwards[0].findtext("duration") == "1"
    realistic = delinearize("measure C4 voice:1 half backup half backup print-object:no rest voice:5 rest:measure")
    assert not realistic.unparseable and realistic.part.find("measure/backup") is not None


@pytest.mark.parametrize("lmx", ["measure C4 voice:1", "measure key:fifths:1 dot"])
def test_integer_mode_without_durations_writes_divisions_1(lmx):
    """Reference crash 3 (§3.5)."""
    result = delinearize(lmx)
    assert not result.unparseable
    assert result.part.findtext("measure/attributes/divisions") == "1"
    ET.fromstring(result.to_musicxml().split("\n", 2)[2])


def test_specials_stripped_at_the_ends_only():
    assert delinearize("<bos> measure C4 voice:1 quarter <eos> <pad> <pad>").errors == []
    assert len(delinearize(["<bos>", "measure", "<pad>", "C4", "quarter", "<eos>"]).errors) == 1


def test_empty_input_gives_an_empty_part():
    for lmx in ("", "measure", []):
        result = delinearize(lmx)
        assert not result.unparseable and result.errors == [] and len(result.part) == 0


def test_measures_keep_inner_empty_and_drop_trailing_empty():
    part = delinearize("measure C4 quarter measure measure D4 quarter measure").part
    assert [len(m) for m in part] == [2, 0, 1]  # divisions head + note, empty, note
    assert [m.get("number") for m in part] == ["1", "2", "3"]


def test_durations_fractional_and_integer():
    lmx = "measure C4 voice:1 eighth 3in2 D4 quarter dot E4 16th backup half backup 16th"
    fractional = delinearize(lmx, fractional_durations=True).part
    assert [d.text for d in fractional.iter("duration")] == ["1/3", "3/2", "1/4", "9/4"]
    assert fractional.find(".//divisions") is None
    integer = delinearize(lmx).part
    assert integer.findtext("measure/attributes/divisions") == "12"
    assert [d.text for d in integer.iter("duration")] == ["4", "18", "3", "27"]


def test_consecutive_forwards_merge_but_not_across_items():
    part = delinearize("measure forward half forward quarter C4 voice:2 quarter forward eighth "
                       "key:fifths:0 forward eighth", fractional_durations=True).part
    assert [(e.tag, e.findtext("duration")) for e in part[0] if e.tag != "note"] == [
        ("forward", "3"), ("forward", "1/2"), ("attributes", None), ("forward", "1/2")]


def test_measure_rest_takes_the_time_signature_length():
    part = delinearize("measure time beats:3 beat-type:4 rest voice:1 rest:measure "
                       "measure rest rest:measure", fractional_durations=True).part
    rests = part.findall("measure/note")
    assert [r.findtext("duration") for r in rests] == ["3", "3"]
    assert rests[0].find("rest").get("measure") == "yes" and rests[0].find("type") is None
    no_time = delinearize("measure rest voice:1 rest:measure").part
    assert no_time.find("measure/note/duration") is None


def test_note_children_in_schema_order():
    lmx = ("measure key:fifths:0 clef:G2 staff:1 clef:F4 staff:2 grace:slash grace chord G4 voice:3 eighth "
           "print-object:no D5 eighth 3in2 dot sharp stem:down staff:2 beam:begin tied:start tied:stop "
           "tuplet:start slur:start fermata staccato accent trill-mark tremolo:single arpeggiate")
    notes = delinearize(lmx).part.findall("measure/note")
    assert [c.tag for c in notes[0]] == ["grace", "chord", "pitch", "voice", "type"]
    assert notes[0].find("grace").get("slash") == "yes"
    second = notes[1]
    assert second.get("print-object") == "no"
    assert [c.tag for c in second] == ["pitch", "duration", "tie", "tie", "voice", "type", "dot", "accidental",
                                       "time-modification", "stem", "staff", "beam", "notations"]
    assert [t.get("type") for t in second.findall("tie")] == ["stop", "start"]
    assert [c.tag for c in second.find("notations")] == ["tied", "tied", "tuplet", "slur", "fermata",
                                                         "articulations", "ornaments", "arpeggiate"]
    assert [c.tag for c in second.find("notations/articulations")] == ["accent", "staccato"]
    assert second.findtext("notations/ornaments/tremolo") == "3"  # marks default to 3
    head = delinearize(lmx).part.find("measure/attributes")
    assert [c.tag for c in head] == ["divisions", "key", "staves", "clef", "clef"]
    assert head.findtext("staves") == "2"


def test_voice_stem_staff_state_carries_within_a_measure():
    notes = delinearize("measure C4 voice:2 quarter stem:up staff:1 rest quarter D4 whole E4 quarter "
                        "backup half F4 quarter measure G4 quarter").part.findall("measure/note")
    assert [(n.findtext("voice"), n.findtext("stem"), n.findtext("staff")) for n in notes] == [
        ("2", "up", "1"), ("2", None, "1"), ("2", None, "1"), ("2", "up", "1"), ("2", "up", "1"),
        (None, None, None)]


def test_beams_are_numbered_from_open_counts():
    lmx = ("measure C4 eighth beam:begin D4 16th beam:begin E4 16th beam:end F4 eighth "
           "G4 16th beam:forward-hook A4 eighth beam:end chord C5 eighth rest eighth")
    notes = delinearize(lmx).part.findall("measure/note")
    beams = [[(b.get("number"), b.text) for b in n.findall("beam")] for n in notes]
    assert beams == [
        [("1", "begin")], [("1", "continue"), ("2", "begin")], [("1", "continue"), ("2", "end")],
        [("1", "continue")], [("1", "continue"), ("2", "forward hook")], [("1", "end")], [], []]


def test_grace_beams_are_counted_separately():
    notes = delinearize("measure C4 eighth beam:begin grace D5 16th beam:begin grace E5 16th beam:end "
                        "E4 eighth beam:end").part.findall("measure/note")
    assert [[b.text for b in n.findall("beam")] for n in notes] == [["begin"], ["begin"], ["end"], ["end"]]


def test_slur_numbers_follow_a_part_wide_counter():
    notes = delinearize("measure C4 quarter slur:start D4 quarter slur:start E4 quarter slur:stop "
                        "measure F4 quarter slur:stop slur:start G4 quarter slur:stop").part.iter("note")
    slurs = [[(s.get("type"), s.get("number")) for s in n.iter("slur")] for n in notes]
    assert slurs == [[("start", "1")], [("start", "2")], [("stop", "2")], [("stop", "1"), ("start", "1")],
                     [("stop", "1")]]


def alters(lmx: str) -> list[str | None]:
    return [p.findtext("alter") for p in delinearize(lmx).part.iter("pitch")]


def test_alter_from_key_accidentals_and_ties():
    assert alters("measure key:fifths:2 F4 quarter C5 quarter G4 quarter B4 quarter natural") == ["1", "1", None, None]
    assert alters("measure key:fifths:-3 B4 quarter E4 quarter A4 quarter D4 quarter") == ["-1", "-1", "-1", None]
    # an accidental holds for the same staff, step and octave for the rest of the measure
    assert alters("measure G4 voice:1 quarter sharp G4 quarter G5 quarter measure G4 quarter") == ["1", "1", None, None]
    assert alters("measure C4 quarter double-sharp D4 quarter flat-flat E4 quarter natural-flat") == ["2", "-2", "-1"]
    # a tie stop copies the pitch of its start, also across the bar line
    assert alters("measure F4 quarter sharp tied:start measure F4 quarter tied:stop F4 quarter") == ["1", "1", None]
    # a later voice's accidental applies from its onset on (not before)
    assert alters("measure C4 voice:1 quarter C4 quarter backup half forward quarter "
                  "C4 voice:2 quarter sharp") == [None, "1", "1"]
    # a key change mid-part applies from there on
    assert alters("measure F4 quarter measure key:fifths:1 F4 quarter") == [None, "1"]
    pitch = delinearize("measure key:fifths:1 F4 quarter").part.find(".//pitch")
    assert [c.tag for c in pitch] == ["step", "alter", "octave"]


def test_sequence_input_and_non_string_items_never_raise():
    assert delinearize(["measure", "C4", "quarter"]).errors == []
    assert len(delinearize(["measure", 42, None]).errors) == 2
    assert isinstance(delinearize(None), DelinearizeResult)


def round_trip(gold: list[str]) -> list[str]:
    result = delinearize(gold)
    assert result.errors == [] and not result.unparseable
    return linearize_part(find_piano_part(parse_score_string(result.to_musicxml())))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_round_trip(name):
    assert round_trip(fixture_gold(name)) == fixture_gold(name)


@pytest.mark.parametrize("name", conformance_params())
def test_conformance_round_trip(name):
    assert round_trip(conformance_gold(name)) == conformance_gold(name)


def test_a_very_long_measure_takes_linear_time():
    """Bound: a 40,000-token measure of one repeated line with accidentals under 5 s (it took
    107 s when every note searched the measure's earlier accidentals; 0.6 s now, 2 cores)."""
    import time

    pattern = "C4 quarter sharp C4 quarter D4 quarter tied:start D4 quarter tied:stop "
    lmx = "measure " + pattern * (40000 // len(pattern.split()))
    started = time.perf_counter()
    result = delinearize(lmx, fractional_durations=True)
    assert time.perf_counter() - started < 5.0
    alters = [n.findtext("pitch/alter") for n in result.part.iter("note")]
    assert alters[:4] == ["1", "1", None, None]  # the sharp holds for the rest of the measure; D stays natural
