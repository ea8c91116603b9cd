"""What would perfect barlines be worth on degraded systems? TEDn with the barlines found vs the true ones.

A measure-reading model decodes each run of measures alone (`reading_spans`), so a barline missed on a
scan or photo merges measures into one piece and the model reads only part of it. This scores the same
degraded lieder-dev systems twice with the same weights: cut where `reading_spans` finds barlines, and
cut at the true barlines (the clean image's, moved through the degradation's own geometry with
`degrade_with_points`). The difference is the most a better barline finder could gain.

    poetry run python bench/barline_oracle.py [--weights weights] [--limit 198] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acai_omr.config import DecodeConfig  # noqa: E402
from acai_omr.data.degrade import degrade_with_points  # noqa: E402
from acai_omr.data.preprocess import load_gray, reading_pieces, system_input  # noqa: E402
from acai_omr.detect.barlines import barlines, spans_between  # noqa: E402
from acai_omr.inference.evaluate import EvalSample, evaluate_model, lieder_dev_folder  # noqa: E402
from acai_omr.model.weights import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped weights/)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="degradation seed (as eval model --degraded --seed)")
    args = ap.parse_args()
    device = torch.device("cpu")
    model, cfg = load_model(args.weights, device)
    if cfg.read_measures < 1:
        print("these weights read whole systems: barlines do not matter to them", file=sys.stderr)
        return 2
    height, max_width, per_piece = cfg.image_height, cfg.max_image_width, cfg.read_measures
    found_samples, true_samples = [], []
    pngs = sorted(lieder_dev_folder().glob("*.png"))[: args.limit]
    for index, png in enumerate(pngs):
        gray = load_gray(png)
        truth = barlines(gray, thin=True) or []
        points = np.array([[x, gray.shape[0] / 2] for x in truth], float).reshape(-1, 2)
        # the same rng as `eval model --degraded`: the same degraded image, and where its barlines went
        photo, moved = degrade_with_points(gray, points, np.random.default_rng([args.seed, index]))
        gold = png.with_suffix(".lmx").read_text().split()
        image = system_input(photo, height, max_width)
        pieces = reading_pieces(photo, height, max_width, per_piece)
        found_samples.append(EvalSample(png.stem, image, gold, png.with_suffix(".musicxml"), png, pieces))
        width = photo.shape[1]
        xs = [int(round(x)) for x in moved[:, 0] if 0 <= x < width]
        if xs:
            spans = spans_between(sorted(xs), width, per_piece)
            pieces = [system_input(photo[:, x0:x1], height, max_width) for x0, x1 in spans]
        true_samples.append(EvalSample(png.stem, image, gold, png.with_suffix(".musicxml"), png, pieces))
    options = DecodeConfig(batch_size=16, max_tokens=768, read_measures=per_piece).options(cfg.max_tokens)
    print(f"{len(pngs)} degraded lieder-dev systems (seed {args.seed}), weights {args.weights or 'weights'}")
    for name, samples in (("barlines found", found_samples), ("true barlines", true_samples)):
        summary = evaluate_model(model, samples, device, **options)["summary"]
        pieces = sum(len(s.model_inputs()) for s in samples)
        print(f"  {name:15s} TEDn {summary['tedn']:.2f}%  SER {summary['ser']:.2f}%  ({pieces} pieces)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
