"""MusicXML -> LMX: the vendored fixtures, the 198 conformance systems, and the spec's rules."""

import xml.etree.ElementTree as ET

import pytest

from acai_omr.lmx import (
    LinearizeError, find_piano_part, linearize_part, linearize_score, read_score, split_part_into_systems,
)
from lmx_support import (
    CONFORMANCE_DIR, FIXTURE_DIR, FIXTURE_NAMES, conformance_gold, conformance_params, fixture_gold,
)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_linearizes_to_its_lmx(name):
    systems = split_part_into_systems(find_piano_part(read_score(FIXTURE_DIR / f"{name}.xml")))
    assert len(systems) == 1
    assert linearize_part(systems[0]) == fixture_gold(name)


@pytest.mark.parametrize("name", conformance_params())
def test_conformance_system_linearizes_to_gold(name):
    assert linearize_score(CONFORMANCE_DIR / f"{name}.musicxml") == conformance_gold(name)


def part(measures_xml: str, divisions: int = 4, staves: int | None = None) -> ET.Element:
    """A <part> whose first measure starts with divisions (and staves), then `measures_xml`."""
    staves_xml = f"<staves>{staves}</staves>" if staves else ""
    xml = measures_xml.replace("<M>", "<measure>", 1).replace(
        "<measure>", f"<measure><attributes><divisions>{divisions}</divisions>{staves_xml}</attributes>", 1)
    return ET.fromstring(f"<part>{xml.replace('<M>', '<measure>').replace('</M>', '</measure>')}</part>")


def note(pitch="C4", type_="quarter", extra="", voice="1", stem=None, staff=None, duration=4):
    step, octave = pitch[0], pitch[1:]
    body = f"<pitch><step>{step}</step><octave>{octave}</octave></pitch>" if pitch != "rest" else "<rest/>"
    body += f"<duration>{duration}</duration>"
    body += f"<voice>{voice}</voice>" if voice else ""
    body += f"<type>{type_}</type>" + extra
    body += f"<stem>{stem}</stem>" if stem else ""
    body += f"<staff>{staff}</staff>" if staff else ""
    return f"<note>{body}</note>"


def lmx(element: ET.Element, **kwargs) -> str:
    return " ".join(linearize_part(element, **kwargs))


def test_voice_stem_staff_only_on_change_and_reset_at_measure_and_backup():
    measure = (note("C4", stem="up", staff=1) + note("D4", stem="up", staff=1) + note("E4", stem="down", staff=1)
               + "<forward><duration>4</duration></forward>" + note("F4", stem="down", staff=1)
               + "<backup><duration>16</duration></backup>" + note("C3", voice="5", stem="down", staff=2))
    tokens = lmx(part(f"<M>{measure}</M><M>{note('G4', stem='up', staff=1)}</M>", staves=2))
    assert tokens == ("measure C4 voice:1 quarter stem:up staff:1 D4 quarter E4 quarter stem:down "
                      "forward quarter F4 quarter backup whole C3 voice:5 quarter stem:down staff:2 "
                      "measure G4 voice:1 quarter stem:up staff:1")


def test_notes_without_stem_do_not_change_the_current_stem():
    measure = note("C4", stem="up") + note("D4", "whole") + note("E4", stem="up") + note("F4", stem="down")
    assert lmx(part(f"<M>{measure}</M>")) == "measure C4 voice:1 quarter stem:up D4 whole E4 quarter F4 quarter stem:down"


def test_full_note_token_order():
    extra = ('<time-modification><actual-notes>3</actual-notes><normal-notes>2</normal-notes></time-modification>'
             '<dot/><accidental>sharp</accidental>')
    tail = ('<beam number="1">begin</beam><beam number="2">forward hook</beam><beam number="3">continue</beam>'
            '<notations><slur type="start"/><tuplet type="start"/><tied type="stop"/><tied type="start"/>'
            '<articulations><tenuto/><staccato/></articulations><fermata/><arpeggiate/>'
            '<ornaments><trill-mark/><tremolo type="start">2</tremolo></ornaments></notations>')
    xml = (f'<note print-object="no"><grace slash="yes"/><chord/><pitch><step>B</step><octave>3</octave></pitch>'
           f'<voice>2</voice><type>eighth</type>{extra}<stem>down</stem><staff>2</staff>{tail}</note>')
    assert lmx(part(f"<M>{xml}</M>", staves=2)) == (
        "measure print-object:no grace grace:slash chord B3 voice:2 eighth 3in2 dot sharp stem:down staff:2 "
        "beam:begin beam:forward-hook tied:stop tied:start tuplet:start slur:start fermata arpeggiate "
        "staccato tenuto tremolo:start tremolo:2 trill-mark")


def test_attributes_order_and_mid_measure_clef():
    head = ('<attributes><divisions>1</divisions><clef number="2"><sign>F</sign><line>4</line></clef>'
            '<clef number="1"><sign>G</sign><line>2</line></clef><time><beats>6</beats><beat-type>8</beat-type>'
            '</time><key><fifths>-3</fifths><mode>minor</mode></key><staves>2</staves></attributes>')
    middle = '<attributes><clef number="2"><sign>G</sign><line>2</line></clef></attributes>'
    xml = f"<part><measure>{head}{note('C4', staff=1, duration=1)}{middle}{note('D4', staff=1, duration=1)}</measure></part>"
    assert lmx(ET.fromstring(xml)) == ("measure key:fifths:-3 time beats:6 beat-type:8 clef:G2 staff:1 clef:F4 staff:2 "
                                       "C4 voice:1 quarter staff:1 clef:G2 staff:2 D4 quarter")


def test_single_staff_clef_has_no_staff_token_and_ignored_children_are_silent():
    xml = ('<part><measure><print/><attributes><divisions>1</divisions><clef><sign>F</sign><line>4</line></clef>'
           '<staff-details/></attributes><direction/><harmony/><barline/>'
           f'{note("rest", "whole", duration=4)}</measure></part>')
    warnings = []
    assert lmx(ET.fromstring(xml), warnings=warnings) == "measure clef:F4 rest voice:1 whole"
    assert warnings == []


def test_measure_rest_and_rest_tokens():
    xml = '<note><rest measure="yes"/><duration>16</duration><voice>1</voice></note>'
    assert lmx(part(f"<M>{xml}</M>")) == "measure rest voice:1 rest:measure"


@pytest.mark.parametrize("divisions, duration, expected", [
    (4, 12, "backup half backup quarter"),
    (4, 32, "backup breve"),
    (4, 60, "backup breve backup whole backup half backup quarter"),
    (480, 160, "backup 16th backup 64th backup 256th backup 512th"),  # the integer-halving quirk (§1.6)
])
def test_backup_greedy_decomposition(divisions, duration, expected):
    xml = f"<M>{note(duration=divisions)}<backup><duration>{duration}</duration></backup></M>"
    assert lmx(part(xml, divisions=divisions)) == "measure C4 voice:1 quarter " + expected


def test_multiple_beams_and_slur_continue():
    xml = note("C5", "16th", extra='<beam number="1">begin</beam><beam number="2">begin</beam>'
               '<notations><slur type="continue"/></notations>')
    assert lmx(part(f"<M>{xml}</M>")) == "measure C5 voice:1 16th beam:begin beam:begin"


@pytest.mark.parametrize("body, message", [
    (note("C4", staff=2), "staves"),
    (note("C4", "quarterish"), "type"),
    ("<backup><duration>0</duration></backup>", "non-positive"),
    ('<note><unpitched><display-step>C</display-step><display-octave>4</display-octave></unpitched>'
     '<duration>4</duration><type>quarter</type></note>', "neither"),
    (note("C4", extra='<notations><tied type="continue"/></notations>'), "tied"),
    (note("C4", extra='<beam number="1">sideways</beam>'), "beam"),
    (note("C4", extra='<notations><ornaments><tremolo>5</tremolo></ornaments></notations>'), "tremolo"),
    ("<attributes><time><senza-misura/></time></attributes>", "beats"),
])
def test_hard_failures_raise_linearize_error(body, message):
    with pytest.raises(LinearizeError, match=message):
        linearize_part(part(f"<M>{body}</M>"))


def test_time_before_divisions_raises():
    xml = "<part><measure><attributes><time><beats>4</beats><beat-type>4</beat-type></time></attributes></measure></part>"
    with pytest.raises(LinearizeError, match="divisions"):
        linearize_part(ET.fromstring(xml))


def test_non_measure_child_raises():
    with pytest.raises(LinearizeError, match="not a <measure>"):
        linearize_part(ET.fromstring("<part><note/></part>"))


def test_unknown_tokens_fail_or_are_dropped():
    xml = part(f"<M>{note('C4', voice='13')}{note('D4', extra='<accidental>quarter-flat</accidental>')}</M>")
    with pytest.raises(LinearizeError, match="voice:13"):
        linearize_part(xml)
    warnings = []
    assert lmx(xml, fail_on_unknown=False, warnings=warnings) == "measure C4 quarter D4 voice:1 quarter"
    assert len(warnings) == 2 and "voice:13" in warnings[0]


def test_unsupported_measure_child_is_only_a_warning():
    warnings = []
    assert lmx(part(f"<M><figure-out/>{note()}</M>"), warnings=warnings) == "measure C4 voice:1 quarter"
    assert "figure-out" in warnings[0]


def test_descending_chord_is_linearized_as_is_with_a_warning():
    chord = note("E4") + note("C4", extra="").replace("<pitch>", "<chord/><pitch>")
    warnings = []
    assert lmx(part(f"<M>{chord}</M>"), warnings=warnings) == "measure E4 voice:1 quarter chord C4 quarter"
    assert len(warnings) == 1 and "below" in warnings[0]
