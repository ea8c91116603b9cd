"""MusicXML -> the files a user downloads: PNG pages, PDF, MIDI (MuseScore 3) and .mxl (zip, in-process).

MuseScore runs headless (QT_QPA_PLATFORM=offscreen) in one batch call per score
(`mscore3 -j job.json`), with an argument list, a time-out and its output
captured, so a failure becomes a `RenderError` with MuseScore's own words.
ImageMagick flattens the transparent PNGs MuseScore writes onto white.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MSCORE_CANDIDATES = ("mscore3", "musescore3", "mscore", "musescore")


class RenderError(RuntimeError):
    """MuseScore or ImageMagick failed or is missing; the message says which and why."""


@dataclass
class RenderedScore:
    """Paths of what one render produced (absent outputs are None / empty)."""

    pngs: list[Path] = field(default_factory=list)
    pdf: Path | None = None
    midi: Path | None = None


def find_mscore() -> str:
    """The MuseScore 3 executable ($ACAI_MSCORE overrides the search)."""
    explicit = os.environ.get("ACAI_MSCORE")
    if explicit:
        return explicit
    for name in MSCORE_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RenderError("MuseScore 3 is not installed (looked for mscore3); install the musescore3 package")


def _run(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError as error:
        raise RenderError(f"{what}: program not found ({args[0]})") from error
    except subprocess.TimeoutExpired as error:
        raise RenderError(f"{what} took longer than {timeout:g} s and was stopped") from error
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise RenderError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or 'no output'}")
    return proc


def flatten_png(path: Path, trim: bool = False, timeout: float = 60) -> None:
    """Put a (transparent) PNG on a white background, in place; `trim` cuts the blank page around the music."""
    convert = shutil.which("magick") or shutil.which("convert")
    if convert is None:
        raise RenderError("ImageMagick is not installed (looked for magick/convert)")
    args = [convert, str(path), "-background", "white", "-alpha", "remove", "-alpha", "off"]
    if trim:
        args += ["-trim", "+repage", "-bordercolor", "white", "-border", "24"]
    _run(args + [str(path)], timeout, "ImageMagick flatten")


def render_batch(jobs: list[tuple[Path, Path, tuple[str, ...]]], timeout: float = 120,
                 trim_from: int | None = None, dpi: int = 150) -> list[RenderedScore]:
    """Render several MusicXML files in one MuseScore process (one start-up instead of many).

    Each job is (musicxml, output stem, formats) with formats among "png", "pdf", "mid";
    PNG pages come out as <stem>-1.png, <stem>-2.png, ... flattened onto white, and
    trimmed to the music for jobs whose index is >= trim_from; `dpi` sets the PNG resolution.
    """
    if not jobs:
        return []
    mscore = find_mscore()
    batch = []
    for source, stem, formats in jobs:
        stem.parent.mkdir(parents=True, exist_ok=True)
        batch.append({"in": str(source), "out": [f"{stem}.{fmt}" for fmt in formats]})
    job_file = jobs[0][1].parent / f"{jobs[0][1].name}-mscore-job.json"
    job_file.write_text(json.dumps(batch))
    try:
        _run([mscore, "-r", str(dpi), "-j", str(job_file)], timeout, "MuseScore rendering")
    finally:
        job_file.unlink(missing_ok=True)

    results = []
    for index, (source, stem, formats) in enumerate(jobs):
        result = RenderedScore()
        if "png" in formats:
            result.pngs = sorted(stem.parent.glob(f"{stem.name}-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            for png in result.pngs:
                flatten_png(png, trim=trim_from is not None and index >= trim_from)
        if "pdf" in formats and Path(f"{stem}.pdf").exists():
            result.pdf = Path(f"{stem}.pdf")
        if "mid" in formats and Path(f"{stem}.mid").exists():
            result.midi = Path(f"{stem}.mid")
        missing = [fmt for fmt in formats if (fmt == "png" and not result.pngs)
                   or (fmt == "pdf" and result.pdf is None) or (fmt == "mid" and result.midi is None)]
        if missing:
            raise RenderError(f"MuseScore wrote no {', '.join(missing)} for {source.name}")
        results.append(result)
    return results


def render_score(musicxml: Path, stem: Path, formats: tuple[str, ...] = ("png", "pdf", "mid"),
                 timeout: float = 120, dpi: int = 150) -> RenderedScore:
    """Render one MusicXML file (see `render_batch`)."""
    return render_batch([(musicxml, stem, formats)], timeout, dpi=dpi)[0]


def write_mxl(musicxml_text: str, path: Path, inner_name: str = "score.musicxml") -> Path:
    """Compressed MusicXML: a zip holding the score and META-INF/container.xml pointing at it."""
    container = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<container>\n  <rootfiles>\n"
        f'    <rootfile full-path="{inner_name}" media-type="application/vnd.recordare.musicxml+xml"/>\n'
        "  </rootfiles>\n</container>\n"
    )
    with zipfile.ZipFile(path, "w") as archive:
        # the mimetype entry comes first and uncompressed, as in the MusicXML spec
        archive.writestr("mimetype", "application/vnd.recordare.musicxml", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", container, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(inner_name, musicxml_text, compress_type=zipfile.ZIP_DEFLATED)
    return path
