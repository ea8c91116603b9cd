"""The model's view of a system image: the one preprocessing path of training, evaluation and the product.

Every path that feeds the model, the training dataset, `acai-omr eval model`,
`acai-omr transcribe` and the web jobs, turns a grayscale system into a model
input with `system_input` (resized to the model's height, aspect kept; very
wide systems shrunk to the maximum width and padded with white above and
below), and a measure reader's pieces with `reading_pieces`. Image files and
PIL images become grayscale here too, with transparent pixels as white paper.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from acai_omr.detect.barlines import reading_spans

PAPER = 255  # uint8 white, the padding of shrunk systems


class ImageError(ValueError):
    """An input image cannot be used."""


def load_gray(path: str | Path) -> np.ndarray:
    """uint8 grayscale (H, W) of an image file; transparent pixels count as paper."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # imdecode(fromfile) rather than imread: it also reads paths cv2 cannot open itself (non-ASCII)
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image {path}: not an image file, or a truncated one")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}; expected 8- or 16-bit")
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = np.rint(image[..., :3] * alpha + PAPER * (1.0 - alpha)).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def gray_pixels(image) -> np.ndarray:
    """PIL image -> uint8 grayscale array, transparent pixels as white paper; ImageError if it has no pixels."""
    from PIL import Image

    if image.width < 1 or image.height < 1:
        raise ImageError(f"image has no pixels ({image.width}x{image.height})")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))  # transparent -> white paper
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def fitted_size(width: int, height: int, target_height: int, max_width: int) -> tuple[int, int]:
    """(width, height) of an image's content after `fit_height`, before any white padding."""
    scaled_width = max(1, round(width * target_height / height))
    if scaled_width <= max_width:
        return scaled_width, target_height
    return max_width, max(1, min(target_height, round(height * max_width / width)))


def fit_height(gray: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """Resize to exactly `height` rows, aspect kept; a system that would be wider than `max_width`
    is shrunk uniformly to that width and padded with white above and below (never distorted)."""
    new_width, new_height = fitted_size(gray.shape[1], gray.shape[0], height, max_width)
    interpolation = cv2.INTER_AREA if new_height < gray.shape[0] else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (new_width, new_height), interpolation=interpolation)
    top = (height - new_height) // 2
    bottom = height - new_height - top
    if top or bottom:
        resized = cv2.copyMakeBorder(resized, top, bottom, 0, 0, cv2.BORDER_CONSTANT, value=PAPER)
    return resized


def to_tensor(gray: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) -> float32 [1, H, W] in [0, 1], 1.0 = white paper."""
    return torch.from_numpy(np.ascontiguousarray(gray)).to(torch.float32).div_(255.0).unsqueeze(0)


def system_input(gray: np.ndarray, height: int, max_width: int) -> torch.Tensor:
    """uint8 grayscale system -> the model's input [1, height, W]: the only resize between pixels and model."""
    return to_tensor(fit_height(gray, height, max_width))


def reading_pieces(gray: np.ndarray, height: int, max_width: int, read_measures: int) -> list[torch.Tensor]:
    """The inputs a model that reads `read_measures` measures at a time decodes, left to right (the system
    cut at its barlines, `acai_omr.detect.barlines.reading_spans`); the whole system when that is 0."""

    return [system_input(gray[:, x0:x1], height, max_width) for x0, x1 in reading_spans(gray, read_measures)]
