"""MAE pretraining of the ViT encoder on rendered systems (labels unused).

The input is the degraded image (scan/photo simulation) and the target the
clean one with the same geometry, so the encoder learns to see the music
through the damage. The checkpoint's `encoder.*` weights initialise the
supervised phase (`acai-omr train supervised --init-mae RUN/best.pt`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from acai_omr.config import MaeTrainConfig, ModelConfig
from acai_omr.data.dataset import SystemDataset, collate_systems, seed_worker
from acai_omr.model import OMRModel
from acai_omr.model.mae import MaskedAutoencoder
from acai_omr.train.common import Trainer, cleanup_runtime, param_groups, seed_everything, setup_runtime
from acai_omr.train.supervised import build_train_data, model_config_named


def make_mae_evaluator(cfg: MaeTrainConfig, mae, model_cfg: ModelConfig, device):
    """Mean reconstruction loss on a fixed dev subset with a fixed mask and degradation (lower is better)."""
    manifest = Path(cfg.data) / "dev" / "manifest.jsonl"
    if not manifest.exists():
        print(f"no dev split at {manifest}: MAE runs without dev evaluation", flush=True)
        return None
    dev = SystemDataset(cfg.data, "dev", height=model_cfg.image_height, augment=True, seed=cfg.seed + 1,
                        max_tokens=model_cfg.max_tokens, return_clean=True, max_width=model_cfg.max_image_width)
    count = min(len(dev), cfg.eval_limit)
    if count == 0:
        return None
    batches = [collate_systems([dev[i] for i in range(start, min(count, start + 8))], model_cfg.patch_width)
               for start in range(0, count, 8)]

    def evaluate(step: int) -> dict:
        torch.manual_seed(cfg.seed + 12345)  # the same masks every time (the caller restores the RNG)
        total, n = 0.0, 0
        for batch in batches:
            loss, _, _ = mae(batch["images"].to(device), batch["clean"].to(device), batch["widths"].to(device),
                             cfg.mask_ratio)
            total += loss.item() * batch["images"].shape[0]
            n += batch["images"].shape[0]
        return {"score": total / n, "dev_loss": total / n, "systems": n}

    return evaluate


def train_mae(cfg: MaeTrainConfig, model_cfg: ModelConfig | None = None, evaluate=None, stop_at: int | None = None):
    """Run (or resume) MAE pretraining; returns the Trainer (its .state, .objective = the MaskedAutoencoder)."""
    runtime = setup_runtime(cfg.threads, cfg.num_workers, cfg.precision)
    try:
        model_cfg = model_cfg or model_config_named(cfg.model)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        encoder = OMRModel(model_cfg).encoder  # initialised exactly as the supervised model's encoder
        mae = MaskedAutoencoder(encoder, model_cfg)
        seed_everything(cfg.seed + runtime.rank)
        groups = param_groups(mae, cfg.lr, cfg.weight_decay)
        dataset, make_batch_sampler, collate = build_train_data(cfg, model_cfg, runtime, return_clean=True)

        def loss_fn(obj, batch, step):
            loss, _, _ = obj(batch["images"], batch["clean"], batch["widths"], cfg.mask_ratio)
            return loss, {"mask_ratio": cfg.mask_ratio}

        if evaluate is not None:
            eval_fn = lambda step: evaluate(mae, step)  # noqa: E731
        elif cfg.eval_every > 0 and runtime.is_main:
            eval_fn = make_mae_evaluator(cfg, mae, model_cfg, runtime.device)
        else:
            eval_fn = None
        trainer = Trainer(cfg, runtime, mae, groups, dataset, make_batch_sampler, collate, loss_fn, evaluate=eval_fn,
                          worker_init_fn=seed_worker,
                          extra_state=lambda: {"model_config": model_cfg.to_dict(), "phase": "mae"})
        trainer.train(stop_at)
        return trainer
    finally:
        cleanup_runtime(runtime)
