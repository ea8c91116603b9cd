"""How much of a batch of measure crops is padding, bucketed by whole-system width (before
2026-12-02, fifth session) or by each crop's own width (`SystemDataset.epoch_widths`)?

A batch is padded to its widest image, and the encoder pays for every padded column. Counts only
widths (no image is loaded, so it is cheap); mixed mode (`--crop-measures 0.5`) keeps uncroppable and
uncropped systems whole, which is where bucketing by the old widths hurt most.

    poetry run python bench/crop_batching.py --data data --crop-measures 1.0 --crop-max-measures 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from acai_omr.data.dataset import SystemDataset
from acai_omr.data.sampler import WidthBucketSampler


def padded_columns(sampler: WidthBucketSampler, true_widths: np.ndarray, epoch: int) -> tuple[int, int]:
    """(pixel columns the encoder processes, columns that hold image) over one epoch of batches."""
    sampler.set_epoch(epoch)
    processed = real = 0
    for batch in sampler:
        widths = true_widths[[index for index, _ in batch]]
        processed += len(widths) * int(widths.max())
        real += int(widths.sum())
    return processed, real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data")
    parser.add_argument("--crop-measures", type=float, default=1.0)
    parser.add_argument("--crop-max-measures", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    dataset = SystemDataset(args.data, "train", 128, False, 0, 512, max_width=2048,
                            crop_measures=args.crop_measures, max_crop_measures=args.crop_max_measures)
    report = {"items": len(dataset), "skipped": dataset.skipped}
    for name, widths in (("by_system_width", dataset.widths), ("by_crop_width", dataset.epoch_widths)):
        processed = real = 0
        sampler = WidthBucketSampler(widths, args.batch_size, seed=0, drop_last=True)
        for epoch in range(args.epochs):
            p, r = padded_columns(sampler, dataset.epoch_widths(epoch), epoch)
            processed, real = processed + p, real + r
        report[name] = {"columns_processed": processed, "padding_share": round(1 - real / processed, 3)}
    report["speedup_of_encoder_columns"] = round(report["by_system_width"]["columns_processed"]
                                                 / report["by_crop_width"]["columns_processed"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
