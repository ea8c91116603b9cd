"""`acai-omr lmx linearize|delinearize`: convert between MusicXML files and LMX text."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    linearize = subparsers.add_parser(
        "linearize", help="MusicXML (.musicxml/.xml/.mxl) -> LMX tokens",
        description="Linearize the piano part of a score. The whole score is one line, unless "
                    "--systems cuts it at its own system/page breaks (one line per system).")
    linearize.add_argument("input", type=Path, help="IN.musicxml, .xml or .mxl")
    linearize.add_argument("-o", "--output", type=Path, help="OUT.lmx (default: standard output)")
    linearize.add_argument("--systems", action="store_true", help="one line per system of the score")
    linearize.add_argument("--lenient", action="store_true",
                           help="drop out-of-vocabulary tokens instead of failing")
    linearize.set_defaults(func=run_linearize)

    delinearize = subparsers.add_parser(
        "delinearize", help="LMX tokens -> MusicXML",
        description="Rebuild MusicXML from an .lmx file (several lines or systems are joined into "
                    "one part). Soft errors are reported on standard error.")
    delinearize.add_argument("input", type=Path, help="IN.lmx")
    delinearize.add_argument("-o", "--output", type=Path, help="OUT.musicxml (default: standard output)")
    delinearize.set_defaults(func=run_delinearize)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def run_linearize(args: argparse.Namespace) -> int:
    from .linearize import LinearizeError, linearize_part
    from .musicxml import MusicXMLError, find_piano_part, read_score, split_part_into_systems

    try:
        part = find_piano_part(read_score(args.input))
        parts = split_part_into_systems(part) if args.systems else [part]
        lines = [" ".join(linearize_part(p, fail_on_unknown=not args.lenient)) for p in parts]
    except (MusicXMLError, LinearizeError) as error:
        print(f"acai-omr lmx linearize: {error}", file=sys.stderr)
        return 1
    _write("".join(line + "\n" for line in lines), args.output)
    return 0


def run_delinearize(args: argparse.Namespace) -> int:
    from .delinearize import delinearize
    from .lmxfile import load_lmx_file

    try:
        lmx = load_lmx_file(args.input, validate=False)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"acai-omr lmx delinearize: cannot read {args.input}: {error}", file=sys.stderr)
        return 1
    tokens = [token for system in lmx.systems for token in system]
    result = delinearize(tokens)
    for line in result.errors:
        print(line, file=sys.stderr)
    if result.unparseable:
        print(f"acai-omr lmx delinearize: {args.input} is not parseable LMX "
              "(it must start with 'measure')", file=sys.stderr)
        return 1
    if result.errors:
        print(f"acai-omr lmx delinearize: {len(result.errors)} soft error(s); output written anyway",
              file=sys.stderr)
    _write(result.to_musicxml(), args.output)
    return 0
