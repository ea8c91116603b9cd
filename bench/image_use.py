"""Does the model read the image? Teacher-forced dev loss with the real images, blank pages and
another system's image.

A decoder that has collapsed into a language model of LMX scores the same loss whatever image it
is given (the gap is ~0); a model that reads the music does much worse on a blank or wrong image.
The linear-stem weights shipped on 2026-12-02 gave 1.228 nats with the real images, 1.234 with blank
pages (gap 0.006) and wrote the same opening for every system; this is the check that found it.

    poetry run python bench/image_use.py --weights weights --data data --split dev --systems 48

`--weights` also takes a training checkpoint (`runs/<run>/last.pt`), to watch a run as it goes;
`--crop-measures 1` scores one-or-two-measure crops instead of whole systems (the shorter the
label, the less of it a language model can guess, so the gap shows sooner).
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from acai_omr.config import ModelConfig
from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.model.model import OMRModel
from acai_omr.model.weights import load_model
from acai_omr.train.supervised import SupervisedObjective


def load_checkpoint_model(path: str):
    """The model inside a supervised training checkpoint (its objective's `model.*` weights)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    cfg = getattr(ModelConfig, checkpoint["config"]["model"])()
    model = OMRModel(cfg)
    model.load_state_dict({key[len("model."):]: value for key, value in checkpoint["objective"].items()
                           if key.startswith("model.")})
    return model, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="weights")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--systems", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-measures", type=float, default=0.0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, cfg = load_checkpoint_model(args.weights) if args.weights.endswith(".pt") else load_model(args.weights)
    model = model.float().eval()
    dataset = SystemDataset(args.data, args.split, cfg.image_height, augment=False, seed=0,
                            max_tokens=cfg.max_tokens, max_width=cfg.max_image_width,
                            crop_measures=args.crop_measures)
    chosen = random.Random(args.seed).sample(range(len(dataset)), min(args.systems, len(dataset)))
    objective = SupervisedObjective(model).eval()
    totals = {"real": 0.0, "blank": 0.0, "other_system": 0.0}
    batches = 0
    with torch.no_grad():
        for start in range(0, len(chosen), args.batch_size):
            batch = collate_systems([dataset[i] for i in chosen[start:start + args.batch_size]],
                                    cfg.patch_width)
            images, widths, tokens = batch["images"], batch["widths"], batch["tokens"]
            shifted = torch.roll(torch.arange(len(widths)), 1)
            totals["real"] += objective(images, widths, tokens)[0].item()
            totals["blank"] += objective(torch.ones_like(images), widths, tokens)[0].item()
            totals["other_system"] += objective(images[shifted], widths[shifted], tokens)[0].item()
            batches += 1
    report = {name: round(value / batches, 4) for name, value in totals.items()}
    report["gap_blank"] = round(report["blank"] - report["real"], 4)
    report["gap_other_system"] = round(report["other_system"] - report["real"], 4)
    report.update(weights=args.weights, split=args.split, systems=len(chosen), crop_measures=args.crop_measures)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
