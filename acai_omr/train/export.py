"""Training checkpoints -> weights: one run's `last.pt` / `best.pt`, or the mean of its last few
(`acai-omr train export`)."""

from __future__ import annotations

from pathlib import Path

from acai_omr.config import ModelConfig
from acai_omr.model.model import OMRModel
from acai_omr.model.weights import WeightsError
from acai_omr.train.common import load_checkpoint


def model_from_checkpoint(path: str | Path):
    """-> (OMRModel in eval mode, ModelConfig) from a training checkpoint (`last.pt` / `best.pt` of a
    supervised or GRPO run), built with the config the run saved.

    A run with no dev evaluation (`--eval-every 0`) writes no `best_weights/`; this is how its last
    step becomes weights (`acai-omr train export`).
    """
    try:
        checkpoint = load_checkpoint(Path(path))
    except (FileNotFoundError, ValueError) as error:
        raise WeightsError(str(error)) from error
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint or "objective" not in checkpoint:
        raise WeightsError(f"{path} is not a checkpoint of `acai-omr train supervised|grpo` (no model config)")
    cfg = ModelConfig.from_dict(checkpoint["model_config"])
    state = {}
    for key, value in checkpoint["objective"].items():
        key = key.removeprefix("module.")  # saved from a DistributedDataParallel wrapper
        if key.startswith("model."):
            state[key[len("model."):]] = value
    model = OMRModel(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        phase = checkpoint.get("phase", "unknown")
        raise WeightsError(f"{path} holds no OMR model (phase {phase}): {str(error)[:300]}") from error
    return model.eval(), cfg


def average_checkpoints(paths) -> tuple:
    """-> (OMRModel in eval mode, ModelConfig) whose parameters are the mean of the checkpoints' models.

    Averaging the last checkpoints of one run's low-learning-rate tail (the cosine's end) smooths
    the noise of the final steps; every checkpoint must hold the same model config.
    """
    paths = list(paths)
    if not paths:
        raise WeightsError("no checkpoints to average")
    model, cfg = model_from_checkpoint(paths[0])
    total = {name: value.detach().double().clone() for name, value in model.state_dict().items()}
    for path in paths[1:]:
        other, other_cfg = model_from_checkpoint(path)
        if other_cfg != cfg:
            raise WeightsError(f"{path} holds a different model config than {paths[0]}; only one run's "
                               "checkpoints can be averaged")
        for name, value in other.state_dict().items():
            total[name] += value.double()
    reference = model.state_dict()
    model.load_state_dict({name: (value / len(paths)).to(reference[name].dtype) for name, value in total.items()})
    return model.eval(), cfg
