"""MuseScore 3 bench pages: one true box per system MuseScore drew, disjoint, in reading order, around
the staff lines of its own system (of its piano pair on voice + piano pages) (acai_omr.data.musescore_pages)."""

from __future__ import annotations

import numpy as np
import pytest

from acai_omr.data import musescore_pages
from acai_omr.data.musescore_pages import PageRequest, SvgElement, assign_systems, engrave_pages, split_piano
from acai_omr.render.musescore import find_mscore
from acai_omr.render.raster import available_backend

from shared_data import CORPORA, require


def _line(y: float, x0: float = 0.0, x1: float = 1000.0) -> SvgElement:
    return SvgElement("", "StaffLines", x0, y - 0.5, x1, y + 0.5)


def _staff(top: float, space: float = 10.0) -> list[SvgElement]:
    return [_line(top + i * space) for i in range(5)]


def test_gap_elements_go_to_the_system_they_stack_onto():
    # two piano systems: staves at 0-40 and 100-140, then 300-340 and 400-440; in the gap, under the
    # upper system, a chain of elements reaches down to 230 (ledger-line notes, a dynamic, a pedal
    # mark), nearer to the lower system's staff than to the upper one's; a tempo mark sits above the
    # lower system
    elements = _staff(0) + _staff(100) + _staff(300) + _staff(400)
    chain = [SvgElement("", "LedgerLine", 500, 150, 520, 190), SvgElement("", "Dynamic", 495, 195, 525, 212),
             SvgElement("", "PedalSegment", 480, 216, 560, 232)]
    tempo = SvgElement("", "Tempo", 20, 270, 120, 288)
    title = SvgElement("", "Text", 300, -80, 700, -50)
    systems, unknown = assign_systems(elements + chain + [tempo, title], staves_per_system=2)
    assert len(systems) == 2 and not unknown
    upper, lower = ({e.kind for e in s.elements} for s in systems)
    assert {"LedgerLine", "Dynamic", "PedalSegment"} <= upper
    assert "Tempo" in lower and "PedalSegment" not in lower
    assert all(e.kind != "Text" for s in systems for e in s.elements)  # the title frame is the page's


def test_notes_in_a_gap_stack_onto_their_own_staff_before_the_other_systems_slurs_reach_them():
    # systems at 0-140 and 300-440; under the upper one a slur reaches down to 185; above the lower
    # one a beamed run of notes sits on ledger lines (heads 240-250, 55 units over the lower staff,
    # 100 under the upper one), its beam (200-208) 15 units under the upper system's slur
    elements = _staff(0) + _staff(100) + _staff(300) + _staff(400)
    slur = SvgElement("", "SlurSegment", 450, 145, 720, 185)
    run = [SvgElement("", "Beam", 560, 200, 700, 208)]
    for x in (560, 620, 680):
        run += [SvgElement("", "Stem", x + 18, 205, x + 19, 245), SvgElement("", "Note", x, 240, x + 20, 250)]
        run += [SvgElement("", "LedgerLine", x - 4, y, x + 24, y) for y in (260, 280)]
    systems, _ = assign_systems(elements + [slur] + run, staves_per_system=2)
    upper, lower = ({(e.kind, e.x0) for e in s.elements} for s in systems)
    assert ("SlurSegment", 450) in upper
    assert {(e.kind, e.x0) for e in run} <= lower


def test_a_voice_plus_piano_system_is_its_piano_pair():
    # voice staff 0-40 with lyrics under it and a dynamic between them; piano 110-150 and 210-250 under
    # a brace; in the gap a ledger-line note of the piano reaches up to 85; the system start line is
    # drawn staff by staff (voice top -> piano top, then down the piano)
    elements = _staff(0) + _staff(110) + _staff(210)
    lyrics = [SvgElement("", "Lyrics", x, 66, x + 40, 78) for x in (100, 300, 500)]
    voice_dynamic = SvgElement("", "Dynamic", 300, 48, 315, 58)
    piano_note = [SvgElement("", "LedgerLine", 600, 95, 620, 96), SvgElement("", "Note", 604, 85, 616, 93)]
    brace = SvgElement("", "Bracket", -20, 110, -5, 250)
    start = [SvgElement("", "BarLine", 0, 0, 2, 110), SvgElement("", "BarLine", 0, 110, 2, 250)]
    systems, _ = assign_systems(elements + lyrics + [voice_dynamic, brace] + piano_note + start, staves_per_system=3)
    assert len(systems) == 1
    piano, left_out = split_piano(systems[0])
    assert piano.staff_box == (0.0, 110.0, 1000.0, 250.0) and len(piano.staves) == 2
    kept = {(e.kind, e.y0) for e in piano.elements}
    assert {("Bracket", 110), ("LedgerLine", 95), ("Note", 85), ("BarLine", 110)} <= kept
    assert all(e.y0 >= 85 for e in piano.elements)  # nothing of the voice
    gone = {(e.kind, e.y0) for e in left_out}
    assert {("Lyrics", 66), ("Dynamic", 48), ("BarLine", 0)} <= gone
    assert sum(e.kind == "StaffLines" for e in left_out) == 5


def test_a_musescore_page_has_one_disjoint_box_per_system(tmp_path, monkeypatch):
    if find_mscore() is None:
        pytest.skip("MuseScore 3 is not installed (apt-get install musescore3, or set ACAI_MSCORE)")
    if available_backend() is None:
        pytest.skip("no SVG rasterizer installed (skia-python, resvg-py or cairosvg)")
    lieder = sorted(require(CORPORA / "lieder" / "dev").glob("*.mxl"))
    requests = [PageRequest(lieder[0], "voice+piano", "Bravura", 2), PageRequest(lieder[1], "piano", "Gonville", 4)]
    pages = engrave_pages(requests, root=tmp_path)
    for request, page in zip(requests, pages):
        assert not isinstance(page, str), page
        assert page.kind == request.kind and page.font == request.font
        assert len(page.boxes) == page.musescore_systems == len(page.staff_boxes) >= 1
        for box, staff in zip(page.boxes, page.staff_boxes):
            # the box holds its system's staff lines (and the brace left of them), to a unit (1/360 inch)
            assert box[0] < staff[0] and box[1] <= staff[1] + 1 and box[2] >= staff[2] - 1 and box[3] >= staff[3] - 1
        for above, below in zip(page.boxes, page.boxes[1:]):
            assert above[3] <= below[1]  # disjoint, top to bottom
        gray, boxes = page.render(100)
        assert gray.dtype == np.uint8 and len(boxes) == len(page.boxes)
        h, w = gray.shape
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert (gray[y0:y1, x0:x1] < 128).mean() > 0.01  # ink inside
        # from the cache the second time, unchanged
        again = engrave_pages([request], root=tmp_path)[0]
        assert again.boxes == page.boxes
    # a page an earlier cache version engraved gets its truth derived again from the SVG it kept, not
    # engraved again
    for request in requests:
        folder = tmp_path / "musescore" / request.key
        folder.rename(folder.with_name(request.key.rsplit("-v", 1)[0] + "-v2"))

    def engraving(*args, **kwargs):
        raise AssertionError("the page was engraved again")

    monkeypatch.setattr(musescore_pages, "convert_batch", engraving)
    anew = engrave_pages(requests, root=tmp_path)
    assert [(p.name, p.boxes, p.staff_boxes) for p in anew] == [(p.name, p.boxes, p.staff_boxes) for p in pages]
