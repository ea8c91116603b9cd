"""MuseScore 3 as a batch converter (``mscore3 -j job.json``).

Starting MuseScore costs about a second, so many conversions go into one job
file. When the batch process crashes or hangs, the conversions that produced
nothing are retried one per process, so one bad score cannot sink its neighbours
and every failure comes back with a reason (the tail of MuseScore's output).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EXECUTABLES = ("mscore3", "musescore3", "mscore", "musescore")
STARTUP_S = 20


class MuseScoreError(RuntimeError):
    """MuseScore is missing or failed as a whole."""


def find_mscore() -> str | None:
    """Path of the MuseScore 3 executable ($ACAI_MSCORE, else the first on PATH)."""
    env = os.environ.get("ACAI_MSCORE")
    if env:
        return env if shutil.which(env) or Path(env).exists() else None
    for name in EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class BatchReport:
    """What a batch produced: failures maps an expected output to the reason it is missing."""

    failures: dict[str, str] = field(default_factory=dict)
    log_tail: str = ""


def _produced(output: Path) -> bool:
    if output.exists() and output.stat().st_size > 0:
        return True
    # paged formats are written as name-1.png, name-2.svg, ... (name-01.png once there are 10+ pages)
    return output.suffix in (".png", ".svg") and any(
        output.with_name(f"{output.stem}-{first}{output.suffix}").exists() for first in ("1", "01", "001"))


def _run(jobs: list[tuple[Path, list[Path]]], style: Path | None, dpi: int | None, timeout: float) -> tuple[int | None, str]:
    exe = find_mscore()
    if exe is None:
        raise MuseScoreError("MuseScore 3 not found: apt-get install musescore3 (or set ACAI_MSCORE)")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([{"in": str(src), "out": [str(o) for o in outs]} for src, outs in jobs], handle)
        job_file = handle.name
    command = [exe, "-j", job_file]
    if style is not None:
        command += ["-S", str(style)]
    if dpi is not None:
        command += ["-r", str(int(dpi))]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        return done.returncode, (done.stdout + done.stderr)[-2000:]
    except subprocess.TimeoutExpired as error:
        text = (error.stdout or b"") + (error.stderr or b"")
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        return None, f"timed out after {timeout:.0f} s; {text[-1500:]}"
    finally:
        os.unlink(job_file)


def convert_batch(jobs: list[tuple[Path, list[Path]]], style: Path | None = None, dpi: int | None = None,
                  timeout_per_file: float = 60.0) -> BatchReport:
    """Convert every (input, [outputs]) pair in one MuseScore process (outputs by extension).

    ``style``: a .mss file applied to every score; ``dpi``: resolution of PNG outputs.
    """
    jobs = [(Path(src), [Path(o) for o in outs]) for src, outs in jobs]
    report = BatchReport()
    if not jobs:
        return report
    code, tail = _run(jobs, style, dpi, STARTUP_S + timeout_per_file * len(jobs))
    report.log_tail = tail
    missing = [(src, outs) for src, outs in jobs if not all(_produced(o) for o in outs)]
    if missing and len(jobs) > 1:
        for src, outs in missing:  # isolate the culprit(s)
            code, tail = _run([(src, outs)], style, dpi, STARTUP_S + timeout_per_file)
            for out in outs:
                if not _produced(out):
                    report.failures[str(out)] = f"MuseScore exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"
    else:
        for src, outs in missing:
            for out in outs:
                report.failures[str(out)] = f"MuseScore exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'}"
    return report


# ---------------------------------------------------------------- style files

def write_style(path: Path, settings: dict[str, object]) -> Path:
    """Write a MuseScore 3 style (.mss) with the given <Style> children, e.g. {'Spatium': 1.75}."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<museScore version="3.02">', "  <Style>"]
    for key, value in settings.items():
        lines.append(f"    <{key}>{value}</{key}>")
    lines += ["  </Style>", "</museScore>", ""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path
