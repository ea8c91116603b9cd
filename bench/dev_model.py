"""Shared by the bench scripts that probe a model on dev systems: the common flags, loading weights or
a training checkpoint, and the dev split shaped for that model."""

from __future__ import annotations

import argparse

import torch

from acai_omr.data.dataset import SystemDataset
from acai_omr.model.model import OMRModel
from acai_omr.model.weights import load_model
from acai_omr.train.export import model_from_checkpoint


def add_model_args(parser: argparse.ArgumentParser, systems: int, threads: int) -> None:
    parser.add_argument("--weights", default="weights", help="weights folder, or a run's last.pt")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--systems", type=int, default=systems)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--crop-measures", type=float, default=0.0,
                        help="share of systems cut to 1-2 measures (acai_omr.data.measures)")


def load_for_bench(args: argparse.Namespace) -> tuple[OMRModel, object, SystemDataset]:
    """(float32 model in eval mode, its config, the undegraded dev split) after `torch.set_num_threads`."""
    torch.set_num_threads(args.threads)
    load = model_from_checkpoint if args.weights.endswith(".pt") else load_model
    model, cfg = load(args.weights)
    dataset = SystemDataset(args.data, args.split, cfg.image_height, augment=False, seed=0, max_tokens=cfg.max_tokens,
                            max_width=cfg.max_image_width, crop_measures=args.crop_measures)
    return model.float().eval(), cfg, dataset
