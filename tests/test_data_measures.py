"""Measure crops: barlines found on clean two-staff systems, and each crop paired with its measures' LMX."""

from __future__ import annotations

import random

import numpy as np
import pytest

from acai_omr.data.measures import barlines, crop_measures, split_measures, staff_lines

TWO_MEASURES = ("measure key:fifths:0 clef:G2 staff:1 clef:F4 staff:2 C4 voice:1 whole staff:1 "
                "measure D4 voice:1 whole staff:1")


def drawn_system(stem_through_both: bool = True) -> np.ndarray:
    """A white 160x400 system: staves at rows 20-60 and 100-140, system line x=10, barlines x=200 and 390."""
    image = np.full((160, 400), 255, np.uint8)
    for top in (20, 100):
        for k in range(5):
            image[top + 10 * k, 10:391] = 0
    for x in (10, 200, 390):
        image[20:141, x] = 0
    if stem_through_both:  # chord stems crossing each whole staff at one x, running past it
        image[12:66, 100] = 0
        image[96:148, 100] = 0
    return image


def test_staff_lines_are_two_staves_of_five_even_with_extra_long_beams():
    image = drawn_system()
    image[80, 10:391] = 0  # a beam as long as the staff lines, between the staves
    assert staff_lines(image < 200) == [20, 30, 40, 50, 60, 100, 110, 120, 130, 140]


def test_barlines_skip_stems_that_run_past_the_staves():
    assert barlines(drawn_system()) == [10, 200, 390]


def test_barlines_drawn_staff_by_staff_still_count():
    image = drawn_system()
    image[61:100, 200] = 255  # vocal-score style: no barline between the staves
    assert barlines(image) == [10, 200, 390]


def test_no_staves_no_barlines():
    assert barlines(np.full((100, 300), 255, np.uint8)) is None


def test_split_measures_cuts_before_each_measure_token():
    assert split_measures(TWO_MEASURES.split()) == [TWO_MEASURES.split()[:10], TWO_MEASURES.split()[10:]]


def test_crop_pairs_the_second_measure_with_its_tokens():
    image = drawn_system()
    rng = np.random.default_rng(0)
    crops = {}
    for _ in range(40):
        crop = crop_measures(image, TWO_MEASURES, rng, max_measures=2)
        crops[crop[1]] = crop[0].shape
    second = "measure D4 voice:1 whole staff:1"
    assert crops[second] == (160, 394 - 197)  # 3 px before the barline at 200 to 4 px past the one at 390
    assert crops[TWO_MEASURES] == (160, 394)
    assert crops[TWO_MEASURES.split(" measure ")[0]] == (160, 204)  # first measure keeps the clefs


def test_crop_refuses_when_barlines_and_measures_disagree():
    three = TWO_MEASURES + " measure E4 voice:1 whole staff:1"
    assert crop_measures(drawn_system(), three, np.random.default_rng(0)) is None


CORPORA_PIECE = "lc5100073"


def test_verovio_renders_have_one_barline_per_measure():
    """On real engraving (Verovio, several fonts and spacings) most systems give an exact match."""
    from acai_omr.data.ingest import piano_only_score
    from acai_omr.data.layout import measures_of
    from acai_omr.data.verovio_render import VerovioEngraver, sample_options
    from acai_omr.lmx import read_score
    from acai_omr.paths import shared_dir

    path = shared_dir() / "corpora" / "lieder" / "dev" / f"{CORPORA_PIECE}.mxl"
    if not path.exists():
        pytest.skip("shared corpora missing")
    engraver, matched, total = VerovioEngraver(), 0, 0
    for seed in range(3):
        rng = random.Random(seed)
        for system in engraver.render_systems(piano_only_score(read_score(path)), sample_options(rng), rng, 10.0):
            found = barlines(system.image)
            total += 1
            matched += found is not None and len(found) == len(measures_of(system.part)) + 1
    assert total >= 6 and matched >= 0.7 * total, (matched, total)
