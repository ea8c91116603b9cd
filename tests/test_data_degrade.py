"""Scan/photo degradation: reproducible, sane geometry, clean target stays aligned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from acai_omr.config import DegradeConfig
from acai_omr.data.degrade import degrade, degrade_pair, sample_plan


def synthetic_system(width: int = 800, height: int = 200, seed: int = 0) -> np.ndarray:
    """A white image with two 5-line staves, noteheads and stems: enough structure to register."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 255, np.uint8)
    for top in (height * 0.2, height * 0.6):
        for line in range(5):
            y = int(top + line * height * 0.04)
            cv2.line(image, (10, y), (width - 10, y), 0, 2)
    for x in rng.integers(40, width - 40, size=width // 25):
        y = int(rng.integers(height * 0.15, height * 0.85))
        cv2.ellipse(image, (int(x), y), (7, 5), -20, 0, 360, 0, -1)
        cv2.line(image, (int(x) + 6, y), (int(x) + 6, y - 35), 0, 2)
    return image


def test_same_seed_gives_identical_pixels():
    image = synthetic_system()
    for seed in range(12):
        first = degrade(image, np.random.default_rng(seed))
        second = degrade(image, np.random.default_rng(seed))
        assert np.array_equal(first, second), f"seed {seed} not reproducible"


def test_different_seeds_give_different_images():
    image = synthetic_system()
    outputs = [degrade(image, np.random.default_rng(seed)) for seed in range(8)]
    for a in range(len(outputs)):
        for b in range(a + 1, len(outputs)):
            same_shape = outputs[a].shape == outputs[b].shape
            assert not (same_shape and np.array_equal(outputs[a], outputs[b])), (a, b)


def test_pair_degraded_equals_single_degrade_for_same_seed():
    """Asking for the clean target must not change the degraded image a seed gives."""
    image = synthetic_system()
    for seed in range(6):
        degraded, _ = degrade_pair(image, np.random.default_rng(seed))
        assert np.array_equal(degraded, degrade(image, np.random.default_rng(seed)))


def test_output_is_grayscale_uint8_of_sane_size():
    height, width = 200, 800
    image = synthetic_system(width, height)
    for seed in range(40):
        out = degrade(image, np.random.default_rng(seed), DegradeConfig.preset("strong"))
        assert out.dtype == np.uint8 and out.ndim == 2
        assert 0.9 * height <= out.shape[0] <= 1.9 * height, out.shape
        assert 0.8 * width <= out.shape[1] <= 1.3 * width, out.shape
        # still mostly paper, still some ink
        assert 60 < out.mean() < 250


def test_clean_preset_changes_nothing():
    image = synthetic_system()
    cfg = DegradeConfig.preset("clean")
    assert not cfg.enabled
    out = degrade(image, np.random.default_rng(3), cfg)
    assert np.array_equal(out, image) and out is not image
    degraded, clean = degrade_pair(image, np.random.default_rng(3), cfg)
    assert np.array_equal(degraded, image) and np.array_equal(clean, image)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown degradation preset"):
        DegradeConfig.preset("medium")


def test_clean_target_stays_aligned_with_degraded():
    """Geometry goes to both images: the best shift between them is (0, 0)."""
    image = synthetic_system()
    moved = 0
    for seed in range(12):
        degraded, clean = degrade_pair(image, np.random.default_rng(seed))
        assert degraded.shape == clean.shape
        if clean.shape != image.shape or not np.array_equal(clean, image):
            moved += 1
        ink_degraded = 255.0 - cv2.GaussianBlur(degraded, (0, 0), 2).astype(np.float64)
        ink_clean = 255.0 - cv2.GaussianBlur(clean, (0, 0), 2).astype(np.float64)
        (dx, dy), _ = cv2.phaseCorrelate(ink_clean, ink_degraded)
        assert abs(dx) < 1.5 and abs(dy) < 1.5, (seed, dx, dy)
    assert moved >= 8, "geometry should change the clean target for most seeds"


def test_clean_target_has_no_photometric_damage():
    image = synthetic_system()
    for seed in range(8):
        _, clean = degrade_pair(image, np.random.default_rng(seed))
        # geometry interpolates edges, but paper stays pure white and nothing is noisy
        assert np.median(clean) == 255


def test_every_effect_runs_at_full_probability():
    always = {name: 1.0 for name in DegradeConfig.__dataclass_fields__ if name.startswith("p_")}
    always["p_clean"] = 0.0
    image = synthetic_system(600, 160)
    names = set()
    for photo in (0.0, 1.0):
        for binarize in (0.0, 1.0):
            cfg = DegradeConfig(**{**always, "p_photo": photo, "p_binarize": binarize})
            for seed in range(3):
                rng = np.random.default_rng(seed)
                plan = sample_plan(rng, cfg, *image.shape)
                names |= {name for name, _ in plan.geometry + plan.appearance}
                out = degrade(image, rng, cfg, plan=plan)
                assert out.dtype == np.uint8 and out.ndim == 2
    expected = {"crop", "neighbours", "warp", "curl", "ink", "bleed", "paper", "lighting", "shadow",
                "blur", "defocus", "motion", "lowres", "noise", "gamma", "binarize", "jpeg"}
    assert expected <= names, expected - names


def test_p_clean_leaves_that_share_of_images_exactly_as_rendered():
    image = synthetic_system()
    untouched = [np.array_equal(degrade(image, np.random.default_rng(seed), DegradeConfig(p_clean=0.3)), image)
                 for seed in range(200)]
    assert 40 <= sum(untouched) <= 80  # 30% of 200, give or take sampling noise
    assert not any(np.array_equal(degrade(image, np.random.default_rng(seed), DegradeConfig(p_clean=0.0)), image)
                   for seed in range(50))


def test_binarized_scans_are_black_and_white():
    cfg = DegradeConfig(p_photo=0.0, p_binarize=1.0)
    out = degrade(synthetic_system(), np.random.default_rng(1), cfg)
    assert set(np.unique(out)) <= {0, 255}


def test_color_input_is_converted_and_bad_input_rejected():
    image = synthetic_system()
    color = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    assert np.array_equal(degrade(color, np.random.default_rng(0)), degrade(image, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="uint8"):
        degrade(image.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        degrade(image[0], np.random.default_rng(0))
    with pytest.raises(TypeError):
        degrade([[255]], np.random.default_rng(0))


def test_a_system_wider_than_opencv_can_warp_is_shrunk_and_degraded_not_an_error():
    """A 40,000 px wide render (long **kern measures make them) crashed a training run in cv2.remap."""
    from acai_omr.config import DegradeConfig
    from acai_omr.data.degrade import MAX_SIDE, degrade_pair

    wide = np.full((120, 40000), 255, np.uint8)
    wide[30:90:12, :] = 0  # staff lines
    photo = DegradeConfig(p_photo=1.0, p_curl=1.0, p_perspective=1.0, p_clean=0.0)
    for seed in range(3):
        degraded, clean = degrade_pair(wide, np.random.default_rng(seed), photo)
        assert degraded.shape == clean.shape
        assert max(degraded.shape) < 32767 and degraded.shape[1] >= MAX_SIDE * 0.8
        assert degraded.mean() < 250  # still a system with lines, not blank paper
