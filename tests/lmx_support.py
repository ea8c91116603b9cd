"""Shared data for the LMX tests (no tests here): the vendored fixtures and the conformance systems."""

from __future__ import annotations

from pathlib import Path

import pytest

from acai_omr.lmx import load_lmx_file
from acai_omr.paths import shared_dir

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "olimpic-lmx"
FIXTURE_NAMES = sorted(path.stem for path in FIXTURE_DIR.glob("*.xml"))
CONFORMANCE_DIR = shared_dir() / "conformance" / "lieder-dev"
CONFORMANCE_NAMES = sorted(path.stem for path in CONFORMANCE_DIR.glob("*.musicxml"))


def conformance_params() -> list:
    """One pytest param per conformance system, or a single skipped one if the folder is absent."""
    if not CONFORMANCE_NAMES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no conformance systems in {CONFORMANCE_DIR}"))]
    return CONFORMANCE_NAMES


def fixture_gold(name: str) -> list[str]:
    systems = load_lmx_file(FIXTURE_DIR / f"{name}.lmx").systems
    assert len(systems) == 1
    return systems[0]


def conformance_gold(name: str) -> list[str]:
    return (CONFORMANCE_DIR / f"{name}.lmx").read_text(encoding="utf-8").split()


def all_gold_sequences() -> list[list[str]]:
    return [fixture_gold(n) for n in FIXTURE_NAMES] + [conformance_gold(n) for n in CONFORMANCE_NAMES]
