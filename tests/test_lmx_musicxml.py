"""Reading scores (.musicxml/.mxl, DOCTYPE), choosing the piano part, and cutting systems."""

import xml.etree.ElementTree as ET
import zipfile

import pytest

from acai_omr.lmx import (
    MusicXMLError, find_piano_part, linearize_part, parse_score_string, part_to_score, read_score,
    score_to_string, split_part_into_systems,
)
from lmx_support import FIXTURE_DIR


def test_read_musicxml_with_doctype():
    root = read_score(FIXTURE_DIR / "grandstaff.xml")
    assert root.tag == "score-partwise" and len(root.findall("part")) == 1


def test_doctype_internal_subset_is_dropped_not_expanded():
    text = ('<?xml version="1.0"?><!DOCTYPE score-partwise [<!ENTITY a "x>y"> <!ELEMENT b ANY>]>'
            '<score-partwise version="3.1"><part id="P1"/></score-partwise>')
    assert parse_score_string(text).find("part").get("id") == "P1"


def test_read_mxl_through_container(tmp_path):
    path = tmp_path / "score.mxl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("META-INF/container.xml",
                         '<container><rootfiles><rootfile full-path="music/s.musicxml"/></rootfiles></container>')
        archive.write(FIXTURE_DIR / "note_types.xml", "music/s.musicxml")
    from_mxl = linearize_part(find_piano_part(read_score(path)))
    assert from_mxl == linearize_part(find_piano_part(read_score(FIXTURE_DIR / "note_types.xml")))


@pytest.mark.parametrize("content, message", [
    (b"<score-partwise><part>", "not well-formed"),
    (b"<score-timewise/>", "score-timewise"),
    (b"<html/>", "expected <score-partwise>"),
])
def test_unusable_files_raise_musicxml_error(tmp_path, content, message):
    path = tmp_path / "bad.musicxml"
    path.write_bytes(content)
    with pytest.raises(MusicXMLError, match=message):
        read_score(path)


def test_missing_and_corrupt_mxl_raise_musicxml_error(tmp_path):
    with pytest.raises(MusicXMLError, match="no such file"):
        read_score(tmp_path / "absent.musicxml")
    corrupt = tmp_path / "bad.mxl"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(MusicXMLError, match="mxl"):
        read_score(corrupt)
    assert issubclass(MusicXMLError, ValueError)


def _score(parts):
    """parts: list of (id, name, staves)."""
    score = ET.Element("score-partwise")
    part_list = ET.SubElement(score, "part-list")
    for part_id, name, staves in parts:
        score_part = ET.SubElement(part_list, "score-part", id=part_id)
        ET.SubElement(score_part, "part-name").text = name
        part = ET.SubElement(score, "part", id=part_id)
        attributes = ET.SubElement(ET.SubElement(part, "measure"), "attributes")
        ET.SubElement(attributes, "staves").text = str(staves)
    return score


def test_piano_part_found_by_name():
    score = _score([("P1", "Voice", 1), ("P2", "Piano", 2), ("P3", "Cello", 2)])
    assert find_piano_part(score).get("id") == "P2"
    score = _score([("P1", "Voice", 1), ("P2", "Pianoforte", 2)])
    assert find_piano_part(score).get("id") == "P2"


def test_piano_part_falls_back_to_last_two_staff_part():
    score = _score([("P1", "Organ", 2), ("P2", "Voice", 1), ("P3", "Klavier", 2), ("P4", "Flute", 1)])
    assert find_piano_part(score).get("id") == "P3"
    with pytest.raises(MusicXMLError, match="no piano part"):
        find_piano_part(_score([("P1", "Voice", 1)]))


def test_part_to_score_and_string_round_trip():
    part = find_piano_part(read_score(FIXTURE_DIR / "grandstaff.xml"))
    score = part_to_score(part, part_id="P2", name="Piano")
    assert score.get("version") == "3.1"
    assert score.find("part-list/score-part").get("id") == "P2" and score.find("part").get("id") == "P2"
    assert part.get("id") == "P1"  # the input is not modified
    text = score_to_string(score)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE score-partwise')
    assert linearize_part(parse_score_string(text).find("part")) == linearize_part(part)


SPLIT_PART = """
<part id="P1">
  <measure number="1">
    <attributes><divisions>2</divisions><key><fifths>-1</fifths><mode>major</mode></key>
      <time><beats>3</beats><beat-type>4</beat-type></time><staves>2</staves>
      <clef number="1"><sign>G</sign><line>2</line></clef><clef number="2"><sign>F</sign><line>4</line></clef>
    </attributes>
    <note><rest measure="yes"/><duration>6</duration><voice>1</voice><staff>1</staff></note>
    <attributes><clef number="2"><sign>G</sign><line>2</line></clef></attributes>
  </measure>
  <measure number="2">
    <print new-system="yes"/>
    <note><rest measure="yes"/><duration>6</duration><voice>1</voice><staff>1</staff></note>
  </measure>
  <measure number="3">
    <note><rest measure="yes"/><duration>6</duration><voice>1</voice><staff>1</staff></note>
  </measure>
  <measure number="4">
    <print new-page="yes" page-number="2"><system-layout/></print>
    <attributes><key><fifths>2</fifths></key><clef number="1"><sign>F</sign><line>4</line></clef></attributes>
    <note><rest measure="yes"/><duration>6</duration><voice>1</voice><staff>1</staff></note>
  </measure>
</part>
"""


def test_split_cuts_at_breaks_and_restates_headers():
    part = ET.fromstring(SPLIT_PART)
    systems = split_part_into_systems(part)
    assert [[m.get("number") for m in s] for s in systems] == [["1"], ["2", "3"], ["4"]]
    assert [s.get("id") for s in systems] == ["P1"] * 3
    assert len(part) == 4 and part[1].find("print") is not None  # input untouched
    assert [" ".join(linearize_part(s)) for s in systems] == [
        "measure key:fifths:-1 time beats:3 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
        "rest voice:1 rest:measure staff:1 clef:G2 staff:2",
        # restated: key and every staff's clef (staff 2 after its mid-measure change), never time
        "measure key:fifths:-1 clef:G2 staff:1 clef:G2 staff:2 rest voice:1 rest:measure staff:1 "
        "measure rest voice:1 rest:measure staff:1",
        # the system's own key and clef win; the other staff's clef is added
        "measure key:fifths:2 clef:F4 staff:1 clef:G2 staff:2 rest voice:1 rest:measure staff:1",
    ]


def test_split_removes_break_attributes_and_empty_prints():
    systems = split_part_into_systems(ET.fromstring(SPLIT_PART))
    second = systems[1][0]
    assert second.find("print") is None
    head = second.find("attributes")
    assert [child.tag for child in head] == ["divisions", "key", "staves", "clef", "clef"]
    assert head.find("key/mode").text == "major"
    page_print = systems[2][0].find("print")
    assert page_print is not None and page_print.attrib == {"page-number": "2"}
    # the restated header comes right after the print, before the notes
    assert [child.tag for child in systems[2][0]][:2] == ["print", "attributes"]


def test_split_leaves_a_part_without_breaks_whole():
    part = find_piano_part(read_score(FIXTURE_DIR / "simple_2345.xml"))
    systems = split_part_into_systems(part)
    assert len(systems) == 1
    assert [ET.tostring(m) for m in systems[0]] == [ET.tostring(m) for m in part]
