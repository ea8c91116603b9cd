"""System images -> LMX / MusicXML files with a trained model.

Each input image is one system (two staves of piano music). It is read as
grayscale, resized to the model's image height with its aspect ratio kept
(very wide systems are shrunk to the model's maximum width and padded with
white above and below), decoded, and written as ``<stem>.lmx`` (one line of
tokens) or ``<stem>.musicxml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from acai_omr.config import ModelConfig


class ImageError(ValueError):
    """An input image cannot be read or used."""


def prepare_image(image, cfg: ModelConfig) -> tuple[torch.Tensor, int]:
    """PIL image -> ([1, image_height, W] float in 0..1 with 1 = white, valid width).

    W is the valid width rounded up to a multiple of the patch width (filled with white).
    """
    from PIL import Image

    if image.width < 1 or image.height < 1:
        raise ImageError(f"image has no pixels ({image.width}x{image.height})")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))  # transparent -> white paper
        image = Image.alpha_composite(background, image.convert("RGBA"))
    gray = image.convert("L")
    H = cfg.image_height
    width = max(1, round(gray.width * H / gray.height))
    height = H
    if width > cfg.max_image_width:
        width = cfg.max_image_width
        height = max(1, round(gray.height * width / gray.width))
    gray = gray.resize((width, height), Image.Resampling.LANCZOS if hasattr(Image, "Resampling") else Image.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    padded_width = -(-width // cfg.patch_width) * cfg.patch_width
    canvas = np.ones((H, padded_width), dtype=np.float32)
    top = (H - height) // 2
    canvas[top:top + height, :width] = pixels
    return torch.from_numpy(canvas)[None], width


def load_image(path: str | Path, cfg: ModelConfig) -> tuple[torch.Tensor, int]:
    """Read an image file; unreadable or empty files raise ImageError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return prepare_image(image, cfg)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: not a readable image ({error})") from error


@dataclass
class Transcription:
    tokens: list[str]
    confidence: float  # mean token probability
    finished: bool  # False if decoding hit the length limit


def transcribe_tensor(model, image: torch.Tensor, width: int, *, beam: int = 1, constrained: bool = True,
                      max_len: int | None = None) -> Transcription:
    """One prepared image [1,H,W] -> tokens."""
    from acai_omr.inference.decode import beam_search, greedy_decode

    device = next(model.parameters()).device
    images = image[None].to(device)
    widths = torch.tensor([width], device=device)
    if beam > 1:
        result = beam_search(model, images, widths, beam_size=beam, max_len=max_len, constrained=constrained)[0]
    else:
        result = greedy_decode(model, images, widths, max_len=max_len, constrained=constrained)[0]
    return Transcription(result.tokens, result.confidence, result.finished)


def write_output(transcription: Transcription, stem: str, out_dir: Path, fmt: str) -> Path:
    """Write <stem>.lmx or <stem>.musicxml into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "lmx":
        path = out_dir / f"{stem}.lmx"
        path.write_text(" ".join(transcription.tokens) + "\n")
    else:
        from acai_omr.lmx.delinearize import delinearize

        path = out_dir / f"{stem}.musicxml"
        path.write_text(delinearize(transcription.tokens).to_musicxml())
    return path
