"""The output formats, in one registry: what each is called, its extension and MIME type, how it is
written, and who offers it. The CLI's `--format`, a web job's files, the API's `result.<ext>` and
the page's download buttons all read `FORMATS`; adding a format (say ABC) is one entry here and
its writer.

Writers take a `ScoreText` (what every format is made from) and a stem; formats drawn by MuseScore
are written together, in one MuseScore call (`write_formats`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from acai_omr.render.outputs import render_batch, write_mxl


@dataclass
class ScoreText:
    """One transcribed score as text: its MusicXML, one line of LMX per system, and the per-system report."""

    musicxml: str
    lmx_lines: list[str]
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OutputFormat:
    key: str  # the extension too: score.<key>, result.<key>
    label: str  # the download button's words
    mime: str
    description: str  # for --help
    write: Callable[[ScoreText, Path], Path] | None = None  # in-process writer; None = drawn by MuseScore
    job_file: str = ""  # the file a web job keeps ("" = the web does not offer it)
    aliases: tuple[str, ...] = ()  # other names the CLI accepts

    @property
    def by_musescore(self) -> bool:
        return self.write is None


def _write_musicxml(score: ScoreText, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".musicxml")
    path.write_text(score.musicxml, encoding="utf-8")
    return path


def _write_mxl(score: ScoreText, stem: Path) -> Path:
    return write_mxl(score.musicxml, stem.with_name(stem.name + ".mxl"))


def _write_lmx(score: ScoreText, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".lmx")
    path.write_text("".join(line + "\n" for line in score.lmx_lines), encoding="utf-8")
    return path


def _write_json(score: ScoreText, stem: Path) -> Path:
    path = stem.with_name(stem.name + ".json")
    path.write_text(json.dumps(score.report, indent=1) + "\n", encoding="utf-8")
    return path


FORMATS: dict[str, OutputFormat] = {f.key: f for f in (
    OutputFormat("musicxml", "MusicXML", "application/vnd.recordare.musicxml+xml",
                 "MusicXML, for MuseScore, Finale, Sibelius", _write_musicxml, "score.musicxml"),
    OutputFormat("mxl", ".mxl", "application/vnd.recordare.musicxml", "compressed MusicXML", _write_mxl, "score.mxl"),
    OutputFormat("mid", "MIDI", "audio/midi", "MIDI (drawn by MuseScore)", None, "score.mid", aliases=("midi",)),
    OutputFormat("pdf", "PDF", "application/pdf", "PDF of the engraved score (MuseScore)", None, "score.pdf"),
    OutputFormat("png", "PNG", "image/png", "PNG pages of the engraved score (MuseScore)", None, "score-1.png"),
    # Flask adds "; charset=utf-8" to text types itself
    OutputFormat("lmx", "LMX text", "text/plain", "one line of LMX tokens per system", _write_lmx, "score.lmx"),
    OutputFormat("json", "JSON", "application/json", "per-system LMX, boxes, confidence and repairs", _write_json),
)}
WEB_FORMATS = [f for f in FORMATS.values() if f.job_file]


def format_named(name: str) -> OutputFormat:
    """The format a user named, by key or alias (KeyError otherwise)."""
    for candidate in FORMATS.values():
        if name == candidate.key or name in candidate.aliases:
            return candidate
    raise KeyError(name)


def write_formats(score: ScoreText, stem: Path, keys, timeout: float = 120) -> dict[str, Path]:
    """Write these formats as <stem>.<ext> (PNG: <stem>-1.png ...); MuseScore's in one call, from
    <stem>.musicxml (an existing one is taken to be this score's; one written only for the call is
    removed again). Raises `RenderError` when MuseScore fails; the in-process formats are written by then."""
    chosen = [FORMATS[key] for key in keys]
    written = {f.key: f.write(score, stem) for f in chosen if not f.by_musescore}
    drawn = tuple(f.key for f in chosen if f.by_musescore)
    if drawn:
        source = stem.with_name(stem.name + ".musicxml")
        temporary = not source.exists()
        if temporary:
            _write_musicxml(score, stem)
        try:
            result = render_batch([(source, stem, drawn)], timeout=timeout)[0]
        finally:
            if temporary:
                source.unlink(missing_ok=True)
        written.update({"pdf": result.pdf, "mid": result.midi, "png": result.pngs[0] if result.pngs else None})
        written = {key: path for key, path in written.items() if key in keys}
    return written
