"""The model's view of a system image: grayscale, fixed height, aspect kept.

Training (`acai_omr.data.dataset`) and every inference path (`batch.decode_crops`,
the web jobs, `acai-omr transcribe`, evaluation) shape images the same way:
resized to the model's image height with the aspect ratio kept (very wide
systems are shrunk to the model's maximum width and padded with white above
and below), transparent pixels become white paper.
"""

from __future__ import annotations

import numpy as np
import torch

from acai_omr.config import ModelConfig


class ImageError(ValueError):
    """An input image cannot be used."""


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
