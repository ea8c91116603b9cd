"""`acai-omr transcribe` on a folder of mixed inputs: pages, a PDF, a system crop, broken files.

A random-init tiny model stands in for trained weights (nonsense music, real pipeline).
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from acai_omr.cli import main as cli_main
from acai_omr.lmx.musicxml import parse_score_string


@pytest.fixture(scope="module")
def library(tmp_path_factory, page_png):
    """in/page.png (engraved page), in/scans/doc.pdf (two pages), in/broken.png, in/notes.txt (ignored)."""
    root = tmp_path_factory.mktemp("library") / "in"
    (root / "scans").mkdir(parents=True)
    (root / "page.png").write_bytes(page_png)
    page = Image.open(io.BytesIO(page_png)).convert("RGB")
    page.save(root / "scans" / "doc.pdf", save_all=True, append_images=[page], resolution=100)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (root / "notes.txt").write_text("not music")
    return root


def run(args, capsys):
    code = cli_main(["transcribe", *map(str, args), "--max-len", "20", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_folder_of_mixed_inputs_gives_one_score_per_good_input_and_a_failure_summary(
        library, weights_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run([library, tmp_path / "nowhere.png", "--weights", weights_dir, "-o", out], capsys)
    assert code == 1
    assert "2 of 4 input(s) transcribed" in stdout
    assert "2 failed:" in stderr and "broken.png" in stderr and "nowhere.png: no such file" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["doc.musicxml", "page.musicxml"]
    page_score = parse_score_string((out / "page.musicxml").read_bytes())
    doc_score = parse_score_string((out / "doc.musicxml").read_bytes())
    breaks = lambda root, kind: sum(m.find(f"print[@{kind}='yes']") is not None  # noqa: E731
                                    for m in root.findall("part/measure"))
    assert breaks(page_score, "new-system") >= 2  # every detected system after the first starts a new system
    assert breaks(doc_score, "new-page") == 1  # the PDF's second page


def test_formats_json_mxl_and_lmx_hold_every_system(library, weights_dir, tmp_path, capsys):
    page = library / "page.png"
    code, _, _ = run([page, "--weights", weights_dir, "-o", tmp_path, "--format", "json"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "page.json").read_text())
    assert report["input"] == str(page) and len(report["systems"]) >= 3
    for system in report["systems"]:
        assert system["page"] == 1 and len(system["box"]) == 4 and 0 < system["confidence"] <= 1
        assert system["lmx"].split()[0] == "measure" and system["tokens"] == len(system["lmx"].split())
    code, _, _ = run([page, "--weights", weights_dir, "-o", tmp_path, "--format", "lmx"], capsys)
    assert code == 0
    lines = (tmp_path / "page.lmx").read_text().splitlines()
    assert lines == [s["lmx"] for s in report["systems"]]  # same tokens whatever the output format
    code, _, _ = run([page, "--weights", weights_dir, "-o", tmp_path, "--format", "mxl"], capsys)
    assert code == 0
    with zipfile.ZipFile(tmp_path / "page.mxl") as archive:
        assert parse_score_string(archive.read("score.musicxml")).tag == "score-partwise"


def test_boxes_from_detect_are_used_instead_of_detection(library, weights_dir, tmp_path, capsys):
    page = library / "page.png"
    boxes = tmp_path / "boxes.json"
    assert cli_main(["detect", str(page), "-o", str(boxes)]) == 0
    report = json.loads(boxes.read_text())
    report["pages"][0]["systems"] = report["pages"][0]["systems"][:1]  # the user kept one system
    boxes.write_text(json.dumps(report))
    code, _, _ = run([page, "--boxes", boxes, "--weights", weights_dir, "-o", tmp_path, "--format", "json"], capsys)
    assert code == 0
    systems = json.loads((tmp_path / "page.json").read_text())["systems"]
    kept = report["pages"][0]["systems"][0]
    assert len(systems) == 1 and systems[0]["box"] == [round(kept[k], 1) for k in ("x0", "y0", "x1", "y1")]


def test_a_blank_page_is_a_failure_that_says_no_systems_were_found(weights_dir, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("L", (800, 1000), 255).save(blank)
    code, _, stderr = run([blank, "--weights", weights_dir, "-o", tmp_path / "out"], capsys)
    assert code == 1 and "no music systems found" in stderr


def test_midi_output_comes_from_musescore(library, weights_dir, tmp_path, capsys):
    code, _, stderr = run([library / "page.png", "--weights", weights_dir, "-o", tmp_path, "--format", "midi"],
                          capsys)
    assert code == 0, stderr
    assert (tmp_path / "page.mid").read_bytes().startswith(b"MThd")
    assert not (tmp_path / "page.musicxml").exists()
