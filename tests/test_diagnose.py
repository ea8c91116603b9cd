"""`acai-omr diagnose`: what an evaluation report says beyond its TEDn."""

import json

from acai_omr.cli import main as cli_main
from acai_omr.inference.diagnose import pitch_report, spearman
from shared_data import LIEDER_DEV, require


def test_a_perfect_report_reads_every_pitch_key_and_time_and_a_shuffled_one_does_not(tmp_path):
    require(LIEDER_DEV)
    systems = sorted(LIEDER_DEV.glob("*.lmx"))[:12]
    rows = [{"id": path.stem, "prediction": path.read_text(), "tedn": 0.0} for path in systems]
    report = tmp_path / "perfect.json"
    report.write_text(json.dumps({"systems": rows}))
    result = pitch_report(report, "lieder-dev", tmp_path)
    own, floor = result["own gold"], result["another system's gold"]
    assert own["all"]["exact"] == 1.0 and own["key_right"] == 1.0 and own["onset_recall"] == 1.0
    assert own["time_right"] == 1.0 and own["time_invented"] == 0
    assert floor["all"]["exact"] < 0.5
    assert cli_main(["diagnose", "pitch-errors", str(report), "--json", str(tmp_path / "out.json")]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["systems"] == 12


def test_spearman_of_a_figure_that_falls_as_tedn_rises_is_minus_one():
    assert spearman([0.9, 0.5, 0.1], [10.0, 40.0, 90.0]) == -1.0
    assert spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
