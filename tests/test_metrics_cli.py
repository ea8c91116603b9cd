"""`acai-omr eval score` on small folders built from the fixtures; `eval compare` on two small reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from acai_omr.cli import main
from acai_omr.metrics.cli import read_lmx_tokens

FIXTURES = Path(__file__).parent / "fixtures" / "olimpic-lmx"


@pytest.fixture
def folders(tmp_path):
    gold, pred = tmp_path / "gold", tmp_path / "pred"
    gold.mkdir()
    pred.mkdir()
    for name in ("grandstaff", "note_types", "one_empty_measure", "simple_67"):
        shutil.copy(FIXTURES / f"{name}.xml", gold / f"{name}.musicxml")
    shutil.copy(FIXTURES / "grandstaff.lmx", gold / "grandstaff.lmx")  # gold tokens beside the gold
    shutil.copy(FIXTURES / "grandstaff.lmx", pred / "grandstaff.lmx")  # perfect, fixture format
    tokens = " ".join(read_lmx_tokens(FIXTURES / "note_types.lmx"))
    (pred / "note_types.lmx").write_text(tokens.replace(" E5 16th", "") + " foo\n")  # 1 missing note, 1 OOV
    (pred / "one_empty_measure.lmx").write_text("clef:G2 measure rest voice:1 rest:measure\n")  # unparseable
    # simple_67 has no prediction
    return gold, pred


def test_score_reports_tedn_ser_unparseable_soft_errors_and_missing(folders, tmp_path, capsys):
    gold, pred = folders
    out_json = tmp_path / "scores.json"
    assert main(["eval", "score", "--gold", str(gold), "--pred", str(pred), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    summary, samples = data["summary"], {s["name"]: s for s in data["samples"]}

    assert (samples["grandstaff"]["edit_cost"], samples["grandstaff"]["gold_cost"]) == (0, 43)
    assert (samples["note_types"]["edit_cost"], samples["note_types"]["gold_cost"]) == (5, 72)
    assert samples["one_empty_measure"]["unparseable"] is True
    assert samples["one_empty_measure"]["edit_cost"] == samples["one_empty_measure"]["gold_cost"] == 16
    assert samples["simple_67"]["missing"] is True
    assert samples["simple_67"]["edit_cost"] == samples["simple_67"]["gold_cost"] == 150

    edit, gold_cost = 0 + 5 + 16 + 150, 43 + 72 + 16 + 150
    assert summary["tedn_percent"] == pytest.approx(100 * edit / gold_cost)
    assert summary["missing_predictions"] == ["simple_67"]
    assert summary["unparseable"] == 1
    assert summary["soft_errors"] == 1  # the OOV "foo"
    # SER: gold tokens come from grandstaff.lmx and from the linearizer for the others.
    assert samples["grandstaff"]["ser_edits"] == 0
    assert samples["note_types"]["ser_edits"] == 2  # "E5 16th" -> "foo": one substitution, one deletion
    assert samples["simple_67"]["ser_edits"] == samples["simple_67"]["ser_gold_len"] == 58
    assert f"TEDn-lmx: {summary['tedn_percent']:.3f}%" in printed
    assert "unparseable predictions: 1" in printed
    assert "missing predictions (scored as empty): 1: simple_67" in printed


def test_score_with_two_workers_gives_the_same_totals(folders, tmp_path, capsys):
    gold, pred = folders
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["eval", "score", "--gold", str(gold), "--pred", str(pred), "--json", str(one)]) == 0
    assert main(["eval", "score", "--gold", str(gold), "--pred", str(pred), "--workers", "2",
                 "--json", str(two), "--flavor", "lmx"]) == 0
    assert json.loads(one.read_text()) == json.loads(two.read_text())


def test_musicxml_predictions_and_full_flavour(folders, tmp_path, capsys):
    gold, _ = folders
    pred = tmp_path / "xml-pred"
    pred.mkdir()
    shutil.copy(gold / "grandstaff.musicxml", pred / "grandstaff.musicxml")
    (pred / "note_types.musicxml").write_text("<score-partwise><part")  # broken XML
    out_json = tmp_path / "full.json"
    assert main(["eval", "score", "--gold", str(gold), "--pred", str(pred), "--flavor", "full",
                 "--json", str(out_json)]) == 0
    samples = {s["name"]: s for s in json.loads(out_json.read_text())["samples"]}
    assert (samples["grandstaff"]["edit_cost"], samples["grandstaff"]["gold_cost"]) == (0, 45)
    assert samples["grandstaff"]["ser_edits"] == 0
    assert samples["note_types"]["unparseable"] is True
    assert samples["note_types"]["edit_cost"] == samples["note_types"]["gold_cost"] == 74


def test_bad_gold_is_reported_not_crashing(folders, capsys):
    gold, pred = folders
    (gold / "broken.musicxml").write_text("<score-partwise><part/><part/></score-partwise>")
    assert main(["eval", "score", "--gold", str(gold), "--pred", str(pred)]) == 0
    assert "gold could not be read: broken" in capsys.readouterr().out


def test_missing_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["eval", "score", "--gold", str(tmp_path / "nope"), "--pred", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_compare_pairs_the_systems_both_reports_scored(tmp_path, capsys):
    """Only systems in both reports count; a drop in TEDn is "better"; the standard error is the paired one."""
    before = {"systems": [{"id": "a", "tedn": 50.0}, {"id": "b", "tedn": 40.0}, {"id": "c", "tedn": 30.0},
                          {"id": "only-before", "tedn": 99.0}]}
    after = {"systems": [{"id": "a", "tedn": 44.0}, {"id": "b", "tedn": 38.0}, {"id": "c", "tedn": 31.0},
                         {"id": "only-after", "tedn": 0.0}]}
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    assert main(["eval", "compare", str(tmp_path / "before.json"), str(tmp_path / "after.json")]) == 0
    # changes -6, -2, +1: mean -7/3; deviations -11/3, 1/3, 10/3 -> variance (222/9) / 2, se sqrt(that / 3)
    se = (222 / 9 / 2 / 3) ** 0.5
    assert capsys.readouterr().out.strip() == f"3 systems: 2 better, 1 worse, TEDn change -2.33 +- {se:.2f} points"


def test_compare_refuses_reports_without_common_systems(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps({"systems": [{"id": "a", "tedn": 1.0}]}))
    (tmp_path / "b.json").write_text(json.dumps({"systems": [{"id": "b", "tedn": 1.0}]}))
    assert main(["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "share 0 system(s)" in capsys.readouterr().err
