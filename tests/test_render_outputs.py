"""MuseScore/ImageMagick outputs: PNG pages on white, PDF, MIDI in one batch call; .mxl written in-process."""

import shutil
import zipfile

import pytest
from PIL import Image

from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.musicxml import parse_score_string
from acai_omr.render.outputs import RenderError, render_batch, write_mxl

needs_mscore = pytest.mark.skipif(shutil.which("mscore3") is None, reason="MuseScore 3 (mscore3) is not installed")

LMX = ("measure key:fifths:0 time beats:4 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
       "C4 quarter staff:1 D4 quarter staff:1 E4 half staff:1 backup whole C3 whole staff:2")


@pytest.fixture(scope="module")
def score_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("render") / "score.musicxml"
    path.write_text(delinearize(LMX).to_musicxml(), encoding="utf-8")
    return path


def test_mxl_is_a_zip_whose_container_points_at_the_score(tmp_path, score_file):
    text = score_file.read_text()
    mxl = write_mxl(text, tmp_path / "score.mxl")
    with zipfile.ZipFile(mxl) as archive:
        assert archive.namelist()[0] == "mimetype"
        assert archive.read("mimetype") == b"application/vnd.recordare.musicxml"
        container = archive.read("META-INF/container.xml").decode()
        assert 'full-path="score.musicxml"' in container
        assert parse_score_string(archive.read("score.musicxml")).tag == "score-partwise"


@needs_mscore
def test_one_batch_renders_png_pdf_midi_and_trimmed_system_images(tmp_path, score_file):
    results = render_batch([(score_file, tmp_path / "score", ("png", "pdf", "mid")),
                            (score_file, tmp_path / "system", ("png",))], timeout=120, trim_from=1)
    score, system = results
    assert score.pdf.read_bytes().startswith(b"%PDF")
    assert score.midi.read_bytes().startswith(b"MThd")
    assert len(score.pngs) == 1
    with Image.open(score.pngs[0]) as page:
        assert page.mode in ("L", "RGB")  # flattened: no alpha channel left
        assert page.getpixel((0, 0)) in (255, (255, 255, 255))
        page_size = page.size
    with Image.open(system.pngs[0]) as trimmed:
        assert trimmed.height < page_size[1] / 2  # cut down to the one system


@needs_mscore
def test_broken_musicxml_raises_render_error_with_a_reason(tmp_path):
    broken = tmp_path / "broken.musicxml"
    broken.write_text("<score-partwise><part-list>", encoding="utf-8")
    with pytest.raises(RenderError):
        render_batch([(broken, tmp_path / "out", ("png",))], timeout=60)


def test_missing_mscore_is_reported_clearly(tmp_path, score_file, monkeypatch):
    monkeypatch.setenv("ACAI_MSCORE", str(tmp_path / "no-such-mscore"))
    with pytest.raises(RenderError, match="not found"):
        render_batch([(score_file, tmp_path / "out", ("png",))], timeout=10)


# ---------------------------------------------------------------- the format registry


@needs_mscore
def test_every_registered_format_is_written_by_its_writer_and_is_what_it_says(tmp_path):
    """One registry entry per format: each writes a file of its kind (MuseScore's in one call)."""
    import json

    from acai_omr.render.formats import FORMATS, ScoreText, write_formats

    score = ScoreText(delinearize(LMX).to_musicxml(), [LMX], {"systems": [{"lmx": LMX}]})
    written = write_formats(score, tmp_path / "piece", list(FORMATS))
    assert sorted(written) == sorted(FORMATS)
    assert parse_score_string(written["musicxml"].read_bytes()).tag == "score-partwise"
    assert zipfile.is_zipfile(written["mxl"])
    assert written["mid"].read_bytes().startswith(b"MThd")
    assert written["pdf"].read_bytes().startswith(b"%PDF")
    assert Image.open(written["png"]).format == "PNG"
    assert written["lmx"].read_text().splitlines() == [LMX]
    assert json.loads(written["json"].read_text()) == score.report


@needs_mscore
def test_drawing_formats_alone_leaves_no_musicxml_behind_but_keeps_an_existing_one(tmp_path):
    from acai_omr.render.formats import ScoreText, write_formats

    score = ScoreText(delinearize(LMX).to_musicxml(), [LMX])
    write_formats(score, tmp_path / "a", ["mid"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mid"]
    (tmp_path / "b.musicxml").write_text(score.musicxml)
    write_formats(score, tmp_path / "b", ["pdf"])
    assert (tmp_path / "b.musicxml").exists() and (tmp_path / "b.pdf").exists()


def test_the_cli_the_api_and_the_page_offer_the_registry_s_formats():
    from acai_omr import create_app
    from acai_omr.render.formats import FORMATS, WEB_FORMATS, format_named

    assert format_named("midi") is FORMATS["mid"]  # the CLI's old name still works
    app = create_app({"TESTING": True, "WEB": {"render": False}})
    page = app.test_client().get("/").get_data(as_text=True)
    for output in WEB_FORMATS:
        assert f'data-format="{output.key}"' in page and output.label in page
    assert "json" not in {f.key for f in WEB_FORMATS}  # the CLI's report is not a web download
