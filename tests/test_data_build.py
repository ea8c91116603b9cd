"""The data engine on real scores: image and gold agree, builds resume, splits stay apart.

Uses short OpenScore Lieder dev pieces from the shared corpora and the real
engravers (Verovio always; MuseScore 3 when installed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from acai_omr.data.build import SplitWriter, Unit, run_unit
from acai_omr.data.ingest import NormalizedCache, Source, chopin_work, list_sources, piano_only_score
from acai_omr.data.layout import measures_of
from acai_omr.lmx import delinearize, linearize_part, read_score, score_to_string
from acai_omr.lmx.clock import measure_extents
from acai_omr.paths import shared_dir
from acai_omr.render.musescore import find_mscore

CORPORA = shared_dir() / "corpora"
SHORT_PIECES = ["lc5100073", "lc6177220"]  # the two smallest Lieder dev files

pytestmark = pytest.mark.skipif(not (CORPORA / "lieder" / "dev").exists(), reason="shared corpora missing")


def _score(piece: str):
    return piano_only_score(read_score(CORPORA / "lieder" / "dev" / f"{piece}.mxl"))


def _assert_gold_agrees(part, image: np.ndarray, drawn_measures: int) -> None:
    """Measures drawn = measures in the gold; gold delinearizes cleanly and round-trips; image sane."""
    assert len(measures_of(part)) == drawn_measures
    tokens = linearize_part(part, fail_on_unknown=False)
    assert tokens.count("measure") == drawn_measures
    assert tokens[1].startswith("key:") and any(t.startswith("clef:") for t in tokens[:8])
    result = delinearize(tokens)
    assert result.errors == []
    assert linearize_part(result.part, fail_on_unknown=False) == tokens
    assert 120 <= image.shape[0] <= 600 and image.shape[1] >= 300
    assert 0.01 < (image < 128).mean() < 0.5  # ink, but not a black page
    assert (image[0] == 255).all() and (image[-1] == 255).all()  # white margin kept


def test_verovio_systems_match_their_gold():
    from acai_omr.data.verovio_render import VerovioEngraver, sample_options

    engraver = VerovioEngraver()
    rng = random.Random(1)
    score = _score(SHORT_PIECES[0])
    total = len(measures_of(score.find("part")))
    systems = engraver.render_systems(score, sample_options(rng), rng, 10.0)
    assert len(systems) >= 2
    assert sum(len(measures_of(s.part)) for s in systems) == total
    for system in systems:
        _assert_gold_agrees(system.part, system.image, system.options["measures_drawn"])
    assert systems[0].time_shown and not any(s.time_shown for s in systems[1:])


def test_verovio_time_restatement_is_in_image_and_gold():
    from acai_omr.data.verovio_render import VerovioEngraver, sample_options

    rng = random.Random(3)
    systems = VerovioEngraver().render_systems(_score(SHORT_PIECES[0]), sample_options(rng), rng, 10.0,
                                               time_probability=1.0)
    for system in systems:
        tokens = linearize_part(system.part, fail_on_unknown=False)
        assert system.time_shown == ("time" in tokens[:6])
        assert system.time_shown  # restated on every system
        _assert_gold_agrees(system.part, system.image, system.options["measures_drawn"])


@pytest.mark.skipif(find_mscore() is None, reason="MuseScore 3 not installed")
def test_musescore_batch_systems_match_their_gold():
    from acai_omr.data.musescore_render import render_batch

    results = render_batch([_score(p) for p in SHORT_PIECES], random.Random(2))
    for piece, systems in zip(SHORT_PIECES, results):
        assert not isinstance(systems, str), f"{piece}: {systems}"
        assert systems
        for system in systems:
            _assert_gold_agrees(system.part, system.image, system.options["measures_drawn"])


def test_systems_broken_by_the_build_restate_the_time_signature_in_force():
    """Breaks every 3-5 measures; at each, the signature in force (a change included) restated once."""
    import xml.etree.ElementTree as ET

    from acai_omr.data.musescore_render import _broken_by_us

    score = _score(SHORT_PIECES[0])
    bars = measures_of(score.find("part"))
    changed = ET.fromstring("<time><beats>3</beats><beat-type>4</beat-type></time>")
    attributes = bars[4].find("attributes")
    if attributes is None:
        attributes = ET.Element("attributes")
        bars[4].insert(0, attributes)
    for old in attributes.findall("time"):
        attributes.remove(old)
    attributes.append(changed)
    broken = _broken_by_us(score, random.Random(0), time_probability=1.0)
    assert measures_of(score.find("part"))[0].find("print[@new-system]") is None  # the input is left alone
    bars = measures_of(broken.find("part"))
    starts = [i for i, bar in enumerate(bars) if bar.find("print[@new-system='yes']") is not None]
    assert starts and all(3 <= b - a <= 5 for a, b in zip([0] + starts, starts))
    for i in starts:
        times = bars[i].findall("attributes/time")
        assert len(times) == 1
        assert times[0].findtext("beats") == ("3" if i > 4 else bars[0].find("attributes/time").findtext("beats"))


@pytest.mark.skipif(find_mscore() is None, reason="MuseScore 3 not installed")
def test_musescore_systems_broken_by_the_build_show_their_time_signature_in_gold_and_image():
    from acai_omr.data.musescore_render import render_batch

    # the first piece: the second's left-hand clef changes are lost by MuseScore's export in most
    # systems this cut gives, and the build drops those
    plain, = render_batch([_score(SHORT_PIECES[0])], random.Random(4))
    restated, = render_batch([_score(SHORT_PIECES[0])], random.Random(4), time_probability=1.0)
    assert not isinstance(restated, str), restated
    assert len(restated) >= 2 and sum(s.time_shown for s in plain) == 1
    for system in restated:
        assert system.time_shown
        assert all(t.get("print-object") != "no" for t in system.part.iter("time"))
        assert len(measures_of(system.part)) <= 5
        _assert_gold_agrees(system.part, system.image, system.options["measures_drawn"])


def test_build_writes_manifest_and_resumes(tmp_path):
    cache = NormalizedCache(tmp_path / "cache")
    source = Source("lieder", SHORT_PIECES[0], Path(), "dev")
    cache.path(source).parent.mkdir(parents=True)
    cache.path(source).write_text(score_to_string(_score(SHORT_PIECES[0])))
    unit = Unit("verovio", (("lieder", SHORT_PIECES[0]),), 0)
    writer = SplitWriter(tmp_path / "dev")
    result = run_unit(unit, str(cache.root))
    assert result.records and not result.errors
    writer.write(result)
    rows = [json.loads(line) for line in (tmp_path / "dev" / "manifest.jsonl").open()]
    assert len(rows) == len(result.records)
    for row in rows:
        assert set(row) >= {"id", "image", "lmx", "musicxml", "source", "corpus", "engraver", "options",
                            "width", "height"}
        assert (tmp_path / "dev" / row["image"]).exists() and row["image"].startswith("shards/00000/")
        gold = linearize_part(read_score(tmp_path / "dev" / row["musicxml"]).find("part"), fail_on_unknown=False)
        assert " ".join(gold) == row["lmx"]
    # a kill mid-line leaves a partial line: reopening drops it and knows the unit is done
    with (tmp_path / "dev" / "manifest.jsonl").open("a") as handle:
        handle.write('{"id": "cut-off')
    reopened = SplitWriter(tmp_path / "dev")
    assert reopened.count == len(rows) and unit.key in reopened.done
    assert (tmp_path / "dev" / "manifest.jsonl").read_text().endswith("\n")

    from acai_omr.data.stats import split_stats

    stats = split_stats(tmp_path / "dev")
    assert stats["systems"] == len(rows) and stats["systems_per_engraver"] == {"verovio": len(rows)}
    assert 0 < stats["vocabulary"]["used"] < 224


def _overfill_first_measure(score, whole_notes: int) -> None:
    """Append whole notes to the first measure's upper staff: a measure no time signature holds."""
    import xml.etree.ElementTree as ET

    measure = score.find("part").find("measure")
    divisions = int(measure.find("attributes").findtext("divisions"))
    for _ in range(whole_notes):
        note = ET.SubElement(measure, "note")
        pitch = ET.SubElement(note, "pitch")
        ET.SubElement(pitch, "step").text = "C"
        ET.SubElement(pitch, "octave").text = "5"
        ET.SubElement(note, "duration").text = str(4 * divisions)
        ET.SubElement(note, "voice").text = "1"
        ET.SubElement(note, "type").text = "whole"
        ET.SubElement(note, "staff").text = "1"


def test_a_system_with_an_unmeasured_passage_is_left_out_and_the_rest_kept(tmp_path):
    """A measure past 16 quarters (a cadenza, unbarred music) would teach the decoder to loop."""
    score = _score(SHORT_PIECES[0])
    _overfill_first_measure(score, 5)
    cache = NormalizedCache(tmp_path / "cache")
    source = Source("lieder", SHORT_PIECES[0], Path(), "dev")
    cache.path(source).parent.mkdir(parents=True)
    cache.path(source).write_text(score_to_string(score))
    result = run_unit(Unit("verovio", (("lieder", SHORT_PIECES[0]),), 0), str(cache.root))
    # the first measure: a one-quarter upbeat and the five whole notes
    assert result.left_out == ["lieder/lc5100073 system 0: an unmeasured passage (21 quarters in one measure)"]
    assert result.records and not result.errors  # the piece's other systems are kept
    assert [record["id"][-3:] for record in result.records] == [f"{i:03d}" for i in range(1, len(result.records) + 1)]
    for record in result.records:
        assert max(peak for peak, _ in measure_extents(record["lmx"].split())) <= 16


@pytest.mark.skipif(find_mscore() is None, reason="MuseScore 3 not installed")
def test_musescore_systems_whose_gold_lost_a_drawn_clef_are_left_out_with_their_reason(tmp_path):
    """lc5098732 moves the left hand to the treble clef inside a measure and back at the next; MuseScore
    draws both, its MusicXML keeps one, so later systems' golds disagree with their noteheads. The
    unit logs each such system with why, and the build's summary counts it under that reason."""
    from acai_omr.data.build import _left_out_kind

    piece = "lc5098732"
    cache = NormalizedCache(tmp_path / "cache")
    source = Source("lieder", piece, Path(), "dev")
    cache.path(source).parent.mkdir(parents=True)
    cache.path(source).write_text(score_to_string(_score(piece)))
    result = run_unit(Unit("musescore", (("lieder", piece),), 0), str(cache.root))
    assert result.records and not result.errors  # the systems before the lost change are kept
    assert result.left_out and all(why.startswith(f"lieder/{piece} system ") for why in result.left_out)
    assert {_left_out_kind(why) for why in result.left_out} == {"notes drawn unlike the gold"}


def test_merged_splits_train_on_both_roots_images_without_copying_them(tmp_path):
    """`data merge` mixes built splits (Lieder and piano solo): one manifest, paths into each root, the
    roots' cached barlines kept so the mix is not scanned again; an id in two roots is refused."""
    from acai_omr.data.build import merge_splits
    from acai_omr.data.dataset import SystemDataset
    from acai_omr.data.measures import BOUNDS_FILE, load_measure_bounds

    cache = NormalizedCache(tmp_path / "cache")
    for piece, root in zip(SHORT_PIECES, ("lieder", "piano")):
        source = Source("lieder", piece, Path(), "dev")
        cache.path(source).parent.mkdir(parents=True, exist_ok=True)
        cache.path(source).write_text(score_to_string(_score(piece)))
        SplitWriter(tmp_path / root / "train").write(run_unit(Unit("verovio", (("lieder", piece),), 0),
                                                              str(cache.root)))
    first = [json.loads(line) for line in (tmp_path / "lieder" / "train" / "manifest.jsonl").open()]
    load_measure_bounds(tmp_path / "lieder" / "train", first, workers=1)  # as a first training run caches them

    counts = merge_splits([tmp_path / "lieder", tmp_path / "piano"], tmp_path / "mix")
    assert list(counts.values()) == [len(first), len((tmp_path / "piano" / "train" / "manifest.jsonl")
                                                     .read_text().splitlines())]
    assert not list((tmp_path / "mix").rglob("*.png"))  # nothing copied
    cached = (tmp_path / "mix" / "train" / BOUNDS_FILE).read_text().splitlines()
    assert len(cached) == len(first)
    data = SystemDataset(tmp_path / "mix", "train", height=128, augment=False, seed=0, max_tokens=None)
    assert len(data) == sum(counts.values())
    assert {data.records[i]["source"] for i in range(len(data))} == {f"lieder/{p}" for p in SHORT_PIECES}
    assert data[0]["image"].shape[1] == 128 and data[len(data) - 1]["image"].shape[1] == 128

    with pytest.raises(ValueError, match="more than one"):
        merge_splits([tmp_path / "lieder", tmp_path / "lieder"], tmp_path / "twice")


def test_splits_are_by_piece_and_by_chopin_work():
    assert chopin_work("028_1-12-1a-C-001.krn") == "028" and chopin_work("001-1-BRZ.krn") == "001"
    train = list_sources(CORPORA, "train")
    dev = list_sources(CORPORA, "dev")
    assert not {(s.corpus, s.piece_id) for s in train} & {(s.corpus, s.piece_id) for s in dev}
    train_works = {chopin_work(s.path.name) for s in train if s.corpus == "chopin"}
    dev_works = {chopin_work(s.path.name) for s in dev if s.corpus == "chopin"}
    assert dev_works and not train_works & dev_works
    assert sum(s.corpus == "lieder" for s in dev) == len(list((CORPORA / "lieder" / "dev").glob("*.mxl")))
    polish = [s for s in train + dev if s.corpus.startswith("polish")]
    assert 0.02 < sum(s.split == "dev" for s in polish) / len(polish) < 0.1


def test_render_page_boxes_cover_each_system():
    from acai_omr.data.pages import render_page

    image, boxes = render_page(CORPORA / "lieder" / "dev" / f"{SHORT_PIECES[1]}.mxl", seed=0, page=0,
                               staff_space_px=10.0)
    assert image.mode == "L" and boxes
    pixels = np.asarray(image)
    for (x0, y0, x1, y1), below in zip(boxes, boxes[1:] + [None]):
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        assert 80 <= y1 - y0 <= 450  # two staves of 4 spaces plus what sticks out
        if below is not None:
            assert y1 <= below[1]  # top to bottom, not overlapping
    inside = np.zeros(pixels.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    ink = pixels < 128
    assert ink[inside].sum() / max(1, ink.sum()) > 0.9  # most ink is inside a system box


def test_voice_plus_piano_pages_box_the_piano_staves():
    # keep_all_parts engraves the voice too; each system's box is then its piano pair's ink alone: the
    # same bottom as the whole system's, its top well under the voice staff (4 spaces and the gap)
    import random

    from acai_omr.data.pages import _engrave, page_and_boxes, piano_staff_numbers, sample_page_options
    from acai_omr.data.verovio_render import STAFF_SPACE_SVG_PX

    path = CORPORA / "lieder" / "dev" / f"{SHORT_PIECES[1]}.mxl"
    options = sample_page_options(random.Random(0))
    space = 10.0
    zoom = space / STAFF_SPACE_SVG_PX * 100 / options["scale"]
    svg = _engrave(path, options, keep_all_parts=True)[0]
    piano = piano_staff_numbers(path)
    assert len(piano) == 2
    _, whole = page_and_boxes(svg, zoom)
    _, boxes = page_and_boxes(svg, zoom, piano=piano)
    assert whole and len(boxes) == len(whole)
    for (x0, y0, x1, y1), (wx0, wy0, wx1, wy1) in zip(boxes, whole):
        assert wx0 <= x0 and wx1 >= x1 and abs(y1 - wy1) <= 1
        assert y0 - wy0 >= 8 * space
