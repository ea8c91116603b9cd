"""Where the project finds things outside the package."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = REPO_ROOT / "weights"  # the shipped weights (model.safetensors, config.json, accuracy.json)


def shared_dir() -> Path:
    """The shared data folder: $ACAI_SHARED, else `shared/` beside the repository."""
    env = os.environ.get("ACAI_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"
