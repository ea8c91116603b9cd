"""`acai-omr data build|merge|stats`: render the corpora into a split on disk, mix built splits, describe one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from acai_omr.config import DataBuildConfig, add_config_flags, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    build = subparsers.add_parser(
        "build", help="render corpora into labelled system images (resumable)",
        description="Normalize the split's pieces (cached), then engrave them with Verovio and MuseScore 3 "
                    "until the split holds --systems systems. Re-running skips what is already built.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(build, DataBuildConfig)
    build.set_defaults(func=run_build)

    merge = subparsers.add_parser(
        "merge", help="one split from several built ones (images stay where they are)",
        description="Write <out>/<split>/manifest.jsonl listing every system of each root's split, by relative "
                    "path, with their cached barlines: train on a mix (e.g. Lieder and piano solo) with --data <out>.")
    merge.add_argument("out", type=Path, help="the merged dataset root")
    merge.add_argument("roots", type=Path, nargs="+", help="built dataset roots (each holding <split>/manifest.jsonl)")
    merge.add_argument("--split", default="train")
    merge.set_defaults(func=run_merge)

    stats = subparsers.add_parser("stats", help="systems per source and engraver, token lengths, vocabulary coverage")
    stats.add_argument("root", type=Path, help="dataset root (holding <split>/manifest.jsonl)")
    stats.add_argument("--split", action="append", help="split(s) to describe (default: every split found)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(func=run_stats)


def run_build(args: argparse.Namespace) -> int:
    from acai_omr.data.build import build_split

    config = config_from_args(DataBuildConfig, args)
    if config.split not in ("train", "dev"):
        print(f"error: --split must be train or dev, not {config.split!r}", file=sys.stderr)
        return 2
    started = time.time()
    try:
        summary = build_split(config)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary["seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from acai_omr.data.build import merge_splits

    try:
        counts = merge_splits(args.roots, args.out, args.split)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"split": args.split, "systems": counts, "total": sum(counts.values())}))
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from acai_omr.data.stats import format_stats, split_stats

    splits = args.split or sorted(p.parent.name for p in args.root.glob("*/manifest.jsonl"))
    if not splits:
        print(f"error: no <split>/manifest.jsonl under {args.root}", file=sys.stderr)
        return 1
    report = {}
    for split in splits:
        try:
            report[split] = split_stats(args.root / split)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for split, stats in report.items():
            print(f"== {split}\n{format_stats(stats)}")
    return 0
