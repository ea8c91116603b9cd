"""The single `acai-omr` command line; each job is a subcommand.

Subcommands live next to the code they drive. Each module listed in
``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommands (with ``set_defaults(func=...)``) to the named group. Modules are
imported when the parser is built, so they must keep heavy imports (torch,
verovio, ...) inside the functions that run the command: `acai-omr --help`
takes 1.2-1.4 s, importing torch alone 2.6 s (measured 2026-12-05).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# group name -> (help text, modules that register subcommands into the group)
COMMAND_GROUPS: dict[str, tuple[str, list[str]]] = {
    "lmx": ("Linearized MusicXML: convert between MusicXML and LMX tokens", ["acai_omr.lmx.cli"]),
    "eval": ("Evaluate predictions or models (TEDn, SER)", ["acai_omr.metrics.cli", "acai_omr.inference.evaluate"]),
    "train": ("Train the model: MAE pretraining, then supervised image -> LMX", ["acai_omr.train.cli", "acai_omr.train.grpo_cli"]),
    "web": ("The web app: upload a page, edit system boxes, download MusicXML", ["acai_omr.web.cli"]),
    "data": ("Training data: render corpora into labelled system images, inspect them",
             ["acai_omr.data.cli", "acai_omr.data.show_cli"]),
    "diagnose": ("What a model gets wrong beyond TEDn: pitch, key and time errors; confidence; image use",
                 ["acai_omr.inference.diagnose", "acai_omr.train.diagnose"]),
}


# modules whose register(subparsers) adds commands directly at the top level (no group)
TOP_LEVEL_COMMANDS: list[str] = ["acai_omr.inference.cli", "acai_omr.detect.cli", "acai_omr.inference.worker_cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acai-omr",
        description="Acai OMR: pianoform sheet music (photo, scan, PDF) to MusicXML.",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for name, (help_text, modules) in COMMAND_GROUPS.items():
        group_parser = groups.add_parser(name, help=help_text, description=help_text)
        sub = group_parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
        group_parser.set_defaults(func=None, _group_parser=group_parser)
        for module_name in modules:
            _register(module_name, sub, group_parser)
    for module_name in TOP_LEVEL_COMMANDS:
        _register(module_name, groups, parser)
    return parser


def _register(module_name: str, subparsers, owner: argparse.ArgumentParser) -> None:
    """Add a module's commands. A module whose optional dependency is missing (Flask on a training-only
    machine, as the GPU recipe's) leaves its commands out and says why in --help, instead of breaking
    every other command."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "acai_omr":
            raise
        owner.epilog = ((owner.epilog or "") + f" ({module_name} is unavailable: {error.name} is not installed.)").strip()
        return
    module.register(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        (getattr(args, "_group_parser", None) or parser).print_help()
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
