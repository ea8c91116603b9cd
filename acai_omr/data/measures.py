"""Measure-span crops of clean rendered systems, with the LMX of just those measures.

A whole system pairs one image with hundreds of tokens, most of which a
language model of LMX can guess from the prefix alone; that is what five CPU
runs learned instead of reading the image. A crop of one to a few measures
pairs a narrow image with a short label whose pitches and rhythms the prefix
does not give away, so the cheapest way to lower the loss is to look.

The barlines come from `acai_omr.detect.barlines` (which also cuts systems
for reading the same way at inference). A system's detection is trusted only
when it finds exactly one line more than the LMX has measures (the opening
system line plus one barline per measure); otherwise the system is left whole.
"""

from __future__ import annotations

import json
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from acai_omr.data.preprocess import load_gray
from acai_omr.detect.barlines import crop_span, measure_bounds


def split_measures(tokens: list, marker="measure") -> list[list]:
    """LMX tokens cut before every `measure` token (anything before the first one is dropped). Works on
    token strings or on token ids (pass the id of `measure` as `marker`)."""
    measures: list[list] = []
    for token in tokens:
        if token == marker:
            measures.append([])
        if measures:
            measures[-1].append(token)
    return measures


def measure_slice(tokens: list, first: int, count: int, marker="measure") -> list:
    """The tokens of measures first..first+count-1 (strings, or ids with the id of `measure` as `marker`)."""
    return [token for measure in split_measures(tokens, marker)[first:first + count] for token in measure]


def crop_measures(gray: np.ndarray, lmx: str | list[str], rng: np.random.Generator,
                  max_measures: int = 2) -> tuple[np.ndarray, str] | None:
    """A random run of 1..max_measures consecutive measures: (image crop, its LMX), or None.

    The crop keeps the system's full height (symbols stay the size they have in
    whole systems) and a few pixels past each barline; a run that starts at the
    first measure keeps the clefs and key the system opens with.
    """
    tokens = lmx.split() if isinstance(lmx, str) else list(lmx)
    n_measures = count_measures(tokens)
    bounds = measure_bounds(gray, n_measures) if n_measures else None
    if bounds is None:
        return None
    first, count = choose_run(len(bounds), rng, max_measures)
    x0, x1 = crop_span(bounds, first, count, gray.shape[1])
    return gray[:, x0:x1].copy(), " ".join(measure_slice(tokens, first, count))


def choose_run(n_measures: int, rng: np.random.Generator, max_measures: int,
               first_share: float = 0.0) -> tuple[int, int]:
    """(first measure, measure count) of a random run of 1..max_measures of a system's n_measures; with
    chance `first_share` the run starts at the first measure (the system's header), else anywhere."""
    count = int(rng.integers(1, min(max_measures, n_measures) + 1))
    if first_share > 0 and rng.random() < first_share:
        return 0, count
    first = int(rng.integers(0, n_measures - count + 1))
    return first, count


# ---------------------------------------------------------------- per-split cache

BOUNDS_FILE = "measure_bounds.jsonl"


def _bounds_of(job: tuple[str, int]) -> dict:
    """Cache entry (measure spans or None, image width and height) of one clean system image whose LMX
    has n measures."""

    path, n_measures = job
    gray = load_gray(path)
    bounds = measure_bounds(gray, n_measures) if n_measures else None
    return {"bounds": None if bounds is None else [list(span) for span in bounds],
            "width": int(gray.shape[1]), "height": int(gray.shape[0])}


def load_measure_bounds(split_dir: Path, records: list[dict], workers: int = 2) -> list[dict | None]:
    """Measure spans of every record's image, found once per split and kept in `measure_bounds.jsonl`.

    Finding barlines means decoding the whole image, so doing it per item would
    cost as much as loading it, and the sampler needs crop widths before any
    image is loaded (a batch is padded to its widest item: one whole system among
    crops makes every crop cost a whole system). Each entry is
    `{"bounds": [[x0, x1], ...], "width": W, "height": H}`, or None when the barlines do not
    match the LMX's measures (the system is never cropped).
    """
    split_dir = Path(split_dir)
    cache_path = split_dir / BOUNDS_FILE
    known: dict[str, dict] = {}
    if cache_path.exists():
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                if "height" in entry:  # entries written before heights were kept are found again
                    known[str(entry["id"])] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut off by a kill: found again below
    missing = [r for r in records if str(r["id"]) not in known]
    if missing:
        jobs = [(str(split_dir / r["image"]), count_measures(r["lmx"])) for r in missing]
        if workers > 1 and len(jobs) > 64:
            with get_context("spawn").Pool(workers) as pool:
                found = pool.map(_bounds_of, jobs, chunksize=64)
        else:
            found = [_bounds_of(job) for job in jobs]
        with cache_path.open("a", encoding="utf-8") as handle:
            for record, entry in zip(missing, found):
                known[str(record["id"])] = entry = {"id": str(record["id"]), **entry}
                handle.write(json.dumps(entry) + "\n")
    entries = [known[str(r["id"])] for r in records]
    return [entry if entry["bounds"] is not None else None for entry in entries]


def count_measures(lmx: str | list[str]) -> int:
    return sum(token == "measure" for token in (lmx.split() if isinstance(lmx, str) else lmx))
