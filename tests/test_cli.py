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


def test_a_command_whose_optional_dependency_is_missing_is_left_out_not_fatal(tmp_path, monkeypatch, capsys):
    """On the GPU machine Flask is absent: `acai-omr data build` must still work, and --help says why
    the web commands are missing. A missing module of our own is still an error."""
    import pytest

    from acai_omr import cli

    (tmp_path / "needs_absent_dep.py").write_text("import absent_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    groups = dict(cli.COMMAND_GROUPS, extra=("needs a missing package", ["needs_absent_dep"]))
    monkeypatch.setattr(cli, "COMMAND_GROUPS", groups)
    parser = cli.build_parser()
    assert parser.parse_args(["lmx", "linearize", "x.musicxml"]).command == "linearize"
    with pytest.raises(SystemExit):
        parser.parse_args(["extra", "--help"])
    assert "absent_dependency_xyz is not installed" in capsys.readouterr().out
    monkeypatch.setattr(cli, "COMMAND_GROUPS", dict(groups, extra=("ours", ["acai_omr.no_such_module"])))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
