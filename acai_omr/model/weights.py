"""Saving and loading trained OMR weights: ``model.safetensors`` (fp16) + ``config.json``.

fp16 halves the file (the repository ships its weights); loading converts
back to float32. Every failure raises ``WeightsError`` with a message that
says what is wrong and how to get usable weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from acai_omr.config import ModelConfig
from acai_omr.model.model import OMRModel
from acai_omr.paths import WEIGHTS_DIR

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_WEIGHTS_DIR = WEIGHTS_DIR
HOW_TO_GET = ("Train a model with `acai-omr train supervised` (it writes weights/), "
              "or pull the repository's weights/ folder (git lfs pull), or pass --weights DIR.")


class WeightsError(RuntimeError):
    """Weights are missing, unreadable, or do not fit their config."""


def save_weights(model, cfg: ModelConfig, directory: str | Path) -> Path:
    """Write model.safetensors (fp16) and config.json into directory (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu", torch.float16).contiguous()
             for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "dtype": "float16"})
    (directory / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"no {CONFIG_FILE} in {directory}. {HOW_TO_GET}")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise WeightsError(f"{path} is not a valid model config ({error}). {HOW_TO_GET}") from error


def quantize_int8(model):
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per batch).

    For CPU inference only and opt-in (`--int8`): it changes the tokens and is no faster than
    float32 once batched (bench/bench_inference.py measures both speed and TEDn). Not for training.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that quantization is moving to torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantized.cfg = model.cfg
    return quantized.eval()


def load_model(directory: str | Path | None = None, device: str | torch.device = "cpu", int8: bool = False):
    """-> (OMRModel in eval mode on device, ModelConfig); defaults to the repository's weights/.

    `int8` quantizes the linear layers for CPU inference (ignored on other devices).
    """
    directory = Path(directory) if directory is not None else DEFAULT_WEIGHTS_DIR
    if not directory.is_dir():
        raise WeightsError(f"weights folder {directory} does not exist. {HOW_TO_GET}")
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise WeightsError(f"no {WEIGHTS_FILE} in {directory}. {HOW_TO_GET}")
    cfg = load_config(directory)
    if weights_path.stat().st_size < 1024 and weights_path.read_bytes().startswith(b"version https://git-lfs"):
        raise WeightsError(f"{weights_path} is a Git LFS pointer, not the weights: run `git lfs pull`.")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{weights_path} is corrupt or not a safetensors file ({error}). {HOW_TO_GET}") from error
    model = OMRModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(name for name in set(expected) & set(state) if expected[name].shape != state[name].shape)
    if missing or unexpected or wrong_shape:
        details = "; ".join(f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                            for label, names in (("missing", missing), ("unexpected", unexpected),
                                                 ("wrong shape", wrong_shape)) if names)
        raise WeightsError(f"{weights_path} does not match {directory / CONFIG_FILE} ({details}). {HOW_TO_GET}")
    model.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    if int8 and torch.device(device).type == "cpu":
        model = quantize_int8(model.eval())
    else:
        model = model.to(device).eval()
    return model, cfg
