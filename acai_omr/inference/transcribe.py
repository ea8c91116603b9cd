"""PIL system images as model inputs for the product (`acai-omr transcribe`, the web jobs).

The pixels go through `acai_omr.data.preprocess`, the path training and
evaluation use; this module only adds the white padding to a whole patch.
"""

from __future__ import annotations

import numpy as np
import torch

from acai_omr.config import ModelConfig
from acai_omr.data.preprocess import gray_pixels, system_input


def prepare_image(image, cfg: ModelConfig) -> tuple[torch.Tensor, int]:
    """PIL image -> ([1, image_height, W] float in 0..1 with 1 = white, valid width).

    W is the valid width rounded up to a multiple of the patch width (filled with white).
    """
    return prepare_gray(gray_pixels(image), cfg)


def prepare_gray(gray: np.ndarray, cfg: ModelConfig) -> tuple[torch.Tensor, int]:
    """uint8 grayscale array -> (model input, valid width), as `prepare_image`: `system_input`, the
    training path's own resize, so `acai-omr eval model` scores what users get."""
    fitted = system_input(gray, cfg.image_height, cfg.max_image_width)
    width = fitted.shape[-1]
    padded_width = -(-width // cfg.patch_width) * cfg.patch_width
    canvas = torch.ones((1, cfg.image_height, padded_width), dtype=torch.float32)
    canvas[:, :, :width] = fitted
    return canvas, width
