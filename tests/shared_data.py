"""Test data kept outside the repository (the shared folder beside it, or $ACAI_SHARED).

Tests that need it call `require`, which skips them with the reason when the
folder is absent, instead of erroring deep inside a fixture.
"""

from pathlib import Path

import pytest

from acai_omr.paths import shared_dir

CORPORA = shared_dir() / "corpora"
LIEDER_DEV = shared_dir() / "conformance" / "lieder-dev"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the shared data folder is missing (put it beside the repository or set "
                    f"ACAI_SHARED)")
    return path
