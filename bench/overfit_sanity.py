"""Is the image path wired? Train the full model on 8 fixed training systems (no degradation) and score
them with the real images, blank pages and each other's images.

Measured 2026-12-02 (small conv-stem model, memory not centred, as before centring existed):
step 150: real 0.046, blank 0.285, other system 0.075 nats -- the model uses the image to tell
the systems apart (after a few tokens the prefix also identifies them, hence "other" stays low).

    poetry run python bench/overfit_sanity.py --steps 150 --uncentred
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from acai_omr.config import ModelConfig
from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.model.model import OMRModel
from acai_omr.train.supervised import SupervisedObjective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stem", default="conv")
    parser.add_argument("--uncentred", action="store_true", help="center_memory=False")
    parser.add_argument("--data", default="data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.small()
    cfg.stem, cfg.center_memory = args.stem, not args.uncentred
    model = OMRModel(cfg)
    dataset = SystemDataset(args.data, "train", cfg.image_height, False, 0, 512, max_width=cfg.max_image_width)
    batch = collate_systems([dataset[i] for i in random.Random(1).sample(range(len(dataset)), 8)], cfg.patch_width)
    images, widths, tokens = batch["images"], batch["widths"], batch["tokens"]
    objective = SupervisedObjective(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    shifted = torch.roll(torch.arange(8), 1)
    start = time.time()
    for step in range(1, args.steps + 1):
        model.train()
        loss = objective(images, widths, tokens)[0]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                real = objective(images, widths, tokens)[0].item()
                blank = objective(torch.ones_like(images), widths, tokens)[0].item()
                other = objective(images[shifted], widths[shifted], tokens)[0].item()
            print(f"step {step} train {loss.item():.3f} real {real:.3f} blank {blank:.3f} other {other:.3f} "
                  f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
