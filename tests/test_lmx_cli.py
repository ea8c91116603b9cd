"""`acai-omr lmx linearize|delinearize` on real files, including the error exits."""

import argparse

from acai_omr.lmx import cli, linearize_part, parse_score_string
from lmx_support import FIXTURE_DIR, fixture_gold


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_linearize_then_delinearize(tmp_path):
    lmx_path, xml_path = tmp_path / "g.lmx", tmp_path / "g.musicxml"
    assert run("linearize", FIXTURE_DIR / "grandstaff.xml", "-o", lmx_path) == 0
    assert lmx_path.read_text().splitlines() == [" ".join(fixture_gold("grandstaff"))]
    assert run("linearize", FIXTURE_DIR / "grandstaff.xml", "-o", lmx_path, "--systems") == 0
    assert len(lmx_path.read_text().splitlines()) == 1
    assert run("delinearize", lmx_path, "-o", xml_path) == 0
    part = parse_score_string(xml_path.read_text()).find("part")
    assert linearize_part(part) == fixture_gold("grandstaff")


def test_delinearize_reads_fixture_format_and_reports_soft_errors(tmp_path, capsys):
    assert run("delinearize", FIXTURE_DIR / "simple_67.lmx", "-o", tmp_path / "s.musicxml") == 0
    bad = tmp_path / "soft.lmx"
    bad.write_text("measure C4 D4 voice:1 quarter\n")
    assert run("delinearize", bad) == 0
    captured = capsys.readouterr()
    assert "additional prefix" in captured.err and "<score-partwise" in captured.out


def test_unparseable_and_unreadable_inputs_exit_non_zero(tmp_path, capsys):
    bad = tmp_path / "bad.lmx"
    bad.write_text("C4 measure\n")
    assert run("delinearize", bad, "-o", tmp_path / "x.musicxml") == 1
    assert "not parseable" in capsys.readouterr().err
    assert not (tmp_path / "x.musicxml").exists()
    assert run("linearize", tmp_path / "absent.mxl") == 1
    assert "no such file" in capsys.readouterr().err
    assert run("delinearize", tmp_path / "absent.lmx") == 1


def test_project_cli_runs_the_lmx_group(tmp_path):
    from acai_omr.cli import main

    out = tmp_path / "n.lmx"
    assert main(["lmx", "linearize", str(FIXTURE_DIR / "note_types.xml"), "-o", str(out)]) == 0
    assert out.read_text().split() == fixture_gold("note_types")
