"""`acai-omr train mae|supervised`: every field of the phase's config dataclass is a flag;
`acai-omr train export` turns a run's checkpoint into a weights folder.

Runs on CPU, on one GPU (bf16 autocast), or on several through torchrun:
    torchrun --nproc_per_node 4 -m acai_omr.cli train supervised --model large ...
A run folder (--out) is resumed automatically when it holds last.pt.
"""

from __future__ import annotations

import argparse
import sys

from acai_omr.config import MaeTrainConfig, SupervisedTrainConfig, add_config_flags, config_from_args


def _validate(cfg) -> str | None:
    if cfg.steps < 1 or cfg.batch_size < 1:
        return "--steps and --batch-size must be at least 1"
    if cfg.lr <= 0:
        return "--lr must be positive"
    if cfg.log_every < 1 or cfg.ckpt_every < 1:
        return "--log-every and --ckpt-every must be at least 1"
    if cfg.keep_ckpts < 0:
        return "--keep-ckpts must be 0 or more"
    if isinstance(cfg, MaeTrainConfig) and not 0 < cfg.mask_ratio < 1:
        return "--mask-ratio must be between 0 and 1"
    if isinstance(cfg, SupervisedTrainConfig):
        if not 0 <= cfg.p_tf_min <= 1:
            return "--p-tf-min must be in [0, 1]"
        if cfg.tau_start <= 0 or cfg.tau_end <= 0:
            return "Gumbel temperatures must be positive"
        if not 0 < cfg.layer_decay <= 1:
            return "--layer-decay must be in (0, 1]"
    return None


def register(subparsers) -> None:
    for name, config_cls, help_text in (
        ("mae", MaeTrainConfig, "MAE-pretrain the encoder (degraded image in, clean image out)"),
        ("supervised", SupervisedTrainConfig, "train image -> LMX (teacher forcing, then scheduled sampling)"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=f"{help_text}. {config_cls.__doc__}",
                                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_config_flags(parser, config_cls)
        parser.set_defaults(func=run_train, _config_cls=config_cls)
    parser = subparsers.add_parser(
        "export", help="write a training checkpoint's model as weights (fp16 safetensors + config.json)",
        description="Write the model of a run's last.pt or best.pt as a weights folder that `--weights`, "
                    "`acai-omr transcribe` and the web app load. A run without dev evaluation (--eval-every 0) "
                    "leaves only last.pt. Given several checkpoints of one run (copies of last.pt taken along "
                    "its tail), writes the mean of their parameters.")
    parser.add_argument("checkpoints", nargs="+", metavar="checkpoint",
                        help="runs/<run>/last.pt or best.pt; several are averaged")
    parser.add_argument("--out", required=True, help="weights folder to write (created if needed)")
    parser.set_defaults(func=run_export)


def run_export(args) -> int:
    from acai_omr.model.weights import WeightsError, save_weights
    from acai_omr.train.export import average_checkpoints

    try:
        model, cfg = average_checkpoints(args.checkpoints)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    folder = save_weights(model, cfg, args.out)
    params = sum(p.numel() for p in model.parameters())
    averaged = f", the mean of {len(args.checkpoints)} checkpoints" if len(args.checkpoints) > 1 else ""
    print(f"wrote {folder} ({params / 1e6:.2f} M parameters, read_measures {cfg.read_measures}{averaged})")
    return 0


def run_train(args) -> int:
    cfg = config_from_args(args._config_cls, args)
    problem = _validate(cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if isinstance(cfg, MaeTrainConfig):
            from acai_omr.train.mae import train_mae

            state = train_mae(cfg).state
        else:
            from acai_omr.train.supervised import train_supervised

            state = train_supervised(cfg).state
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"done: step {state.step}, best score {state.best_score:.4g} at step {state.best_step} "
          f"(run folder {cfg.out})")
    return 0
