"""ImageMagick for flattening MuseScore's transparent PNG pages onto white grayscale."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class ImageMagickError(RuntimeError):
    """ImageMagick is missing or failed."""


def find_convert() -> str | None:
    """The ImageMagick executable: `magick` (IM7) or `convert` (IM6)."""
    return shutil.which("magick") or shutil.which("convert")


def flatten_to_gray(source: Path, target: Path, timeout: float = 60.0) -> Path:
    """Composite a transparent PNG onto white and store it as 8-bit grayscale."""
    exe = find_convert()
    if exe is None:
        raise ImageMagickError("ImageMagick not found: apt-get install imagemagick")
    command = [exe, str(source), "-background", "white", "-alpha", "remove", "-alpha", "off",
               "-colorspace", "Gray", "-depth", "8", str(target)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ImageMagickError(f"ImageMagick timed out on {source}") from None
    if done.returncode != 0 or not Path(target).exists():
        raise ImageMagickError(f"ImageMagick failed on {source}: {done.stderr.strip()[-500:]}")
    return Path(target)
