"""`acai-omr train grpo --init WEIGHTS_DIR [--config FILE] [--FIELD VALUE ...]`.

Every field of `GrpoConfig` is a flag (help from its comment in config.py).
`--config` reads a JSON object of field values; flags given on the command
line (with a value other than the default) win over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from acai_omr.config import GrpoConfig
from acai_omr.config import add_config_flags


def register(subparsers) -> None:
    help_text = "reinforce a trained model with GRPO on a TEDn-based reward"
    parser = subparsers.add_parser("grpo", help=help_text, description=f"{help_text}. {GrpoConfig.__doc__}",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", dest="config_file", default="", metavar="FILE",
                        help="JSON object of GrpoConfig field values (command-line flags override it)")
    add_config_flags(parser, GrpoConfig)
    parser.set_defaults(func=run_grpo)


def config_from_args(args) -> GrpoConfig:
    """Defaults, then the --config file, then flags that differ from the defaults."""
    defaults = GrpoConfig()
    values = dataclasses.asdict(defaults)
    if getattr(args, "config_file", ""):
        try:
            with open(args.config_file, encoding="utf-8") as handle:
                loaded = json.load(handle)
        except OSError as exc:
            raise ValueError(f"cannot read --config {args.config_file}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config {args.config_file} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config_file} must hold a JSON object")
        unknown = sorted(set(loaded) - set(values))
        if unknown:
            raise ValueError(f"--config {args.config_file}: unknown field(s) {', '.join(unknown)}")
        for name, value in loaded.items():
            expected = type(values[name])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"--config {args.config_file}: {name} must be {expected.__name__}, "
                                 f"got {value!r}")
            values[name] = value
    for field in dataclasses.fields(GrpoConfig):
        given = getattr(args, field.name)
        if given != getattr(defaults, field.name):
            values[field.name] = given
    return GrpoConfig(**values)


def run_grpo(args) -> int:
    from acai_omr.train.grpo import validate_config

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = validate_config(cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from acai_omr.model.weights import WeightsError
    from acai_omr.train.grpo import train_grpo

    try:
        trainer = train_grpo(cfg)
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = getattr(trainer, "summary", {})
    print(f"done: step {trainer.state.step}; dev score before {summary.get('score_before')}, "
          f"after {summary.get('score_after')}, best {trainer.state.best_score:.4g} at step "
          f"{trainer.state.best_step}; weights kept: {summary.get('weights_kept', False)} (run folder {cfg.out})")
    return 0
