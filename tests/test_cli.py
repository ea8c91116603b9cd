"""The single `acai-omr` entry point builds and shows help for every group."""

import subprocess
import sys

from acai_omr.cli import COMMAND_GROUPS, build_parser


def test_every_group_builds_and_has_subcommands():
    parser = build_parser()
    for group in COMMAND_GROUPS:
        args = parser.parse_args([group])
        assert args.group == group


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "acai_omr.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "acai-omr" in out.stdout
