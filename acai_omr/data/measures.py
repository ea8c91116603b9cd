"""Measure-span crops of clean rendered systems, with the LMX of just those measures.

A whole system pairs one image with hundreds of tokens, most of which a
language model of LMX can guess from the prefix alone; that is what five CPU
runs learned instead of reading the image. A crop of one to a few measures
pairs a narrow image with a short label whose pitches and rhythms the prefix
does not give away, so the cheapest way to lower the loss is to look.

Barlines of a clean two-staff system are the columns inked from the top to
the bottom line of both staves at the same x (a stem or chord rarely spans a
whole staff, and almost never both at once). A system's
detection is trusted only when it finds exactly one line more than the LMX has
measures (the opening system line plus one barline per measure); otherwise the
system is left whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INK_BELOW = 200  # a pixel darker than this (0..255) is ink in a clean render


def staff_lines(ink: np.ndarray) -> list[float] | None:
    """Centre rows of the ten staff lines of a two-staff system (upper staff first), else None.

    Rows inked across 80% of the width are line candidates; beams or ledger
    lines that happen to line up across the system can add candidates, so a
    staff is five candidates at equal spacing: the topmost such five and the
    bottommost five below them.
    """
    rows = np.flatnonzero(ink.mean(axis=1) > 0.8)
    if rows.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(rows) > 1)
    centres = [(a + b) / 2 for a, b in zip(rows[np.r_[0, breaks + 1]], rows[np.r_[breaks, rows.size - 1]])]
    staves = _five_equal(centres)
    if len(staves) < 2:
        return None
    upper, lower = staves[0], staves[-1]
    if lower[0] <= upper[-1]:
        return None
    return upper + lower


def _five_equal(centres: list[float]) -> list[list[float]]:
    """Every run of five candidates (in order, gaps allowed) spaced equally (each gap within 20% or
    1.5 px of the first: line positions are rounded to whole pixels)."""
    found = []
    for i, first in enumerate(centres):
        for second in centres[i + 1:]:
            space = second - first
            if space < 3:
                continue
            staff = [first, second]
            tolerance = max(1.5, 0.2 * space)
            for _ in range(3):
                near = [c for c in centres if abs(c - (staff[-1] + space)) <= tolerance]
                if not near:
                    break
                staff.append(near[0])
            if len(staff) == 5:
                found.append(staff)
    return found


def barlines(gray: np.ndarray) -> list[int] | None:
    """x of every barline drawn through both staves (system line first, then one per measure).

    A barline column is inked over at least 95% of each staff's height at the
    same x (Verovio draws vocal-score barlines staff by staff, so the gap
    between the staves is not required) and blank just above the upper staff
    and just below the lower one. None when the staves are not found.
    """
    ink = gray < INK_BELOW
    lines = staff_lines(ink)
    if lines is None:
        return None
    both = np.ones(ink.shape[1], dtype=bool)
    for staff in (lines[:5], lines[5:]):
        top, bottom = int(np.floor(staff[0])), int(np.ceil(staff[-1]))
        column_ink = ink[top:bottom + 1].mean(axis=0) >= 0.95
        both &= column_ink | np.r_[column_ink[1:], False] | np.r_[False, column_ink[:-1]]  # +-1 px of tilt
    # a barline stops at the outer staff lines; a stem through a whole staff runs on past them
    space = (lines[4] - lines[0]) / 4
    above = ink[max(0, int(lines[0] - 0.7 * space)):max(0, int(lines[0] - 0.3 * space))]
    below = ink[int(lines[-1] + 0.3 * space) + 1:int(lines[-1] + 0.7 * space) + 1]
    for margin in (above, below):
        if margin.size:
            clear = ~margin.any(axis=0)
            both &= clear & np.r_[clear[1:], True] & np.r_[True, clear[:-1]]
    columns = np.flatnonzero(both)
    if columns.size == 0:
        return None
    # thin/thick pairs (double, final and repeat barlines) are one barline, at their centre
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > max(2.0, 1.2 * space)) + 1)
    return [int(round(group.mean())) for group in groups]


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


def measure_bounds(gray: np.ndarray, n_measures: int) -> list[tuple[int, int]] | None:
    """(x0, x1) pixel span of each measure, or None when the barlines do not match `n_measures`."""
    found = barlines(gray)
    if found is None or len(found) != n_measures + 1:
        return None
    return list(zip(found[:-1], found[1:]))


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


def choose_run(n_measures: int, rng: np.random.Generator, max_measures: int) -> tuple[int, int]:
    """(first measure, measure count) of a random run of 1..max_measures of a system's n_measures."""
    count = int(rng.integers(1, min(max_measures, n_measures) + 1))
    first = int(rng.integers(0, n_measures - count + 1))
    return first, count


def crop_span(bounds: list[tuple[int, int]], first: int, count: int, width: int) -> tuple[int, int]:
    """Pixel columns [x0, x1) of measures first..first+count-1: from the system's left edge for the
    first measure (clefs and key), else 3 px before its barline; to 4 px past the last barline."""
    x0 = 0 if first == 0 else max(0, bounds[first][0] - 3)
    return x0, min(width, bounds[first + count - 1][1] + 4)


# ---------------------------------------------------------------- per-split cache

BOUNDS_FILE = "measure_bounds.jsonl"


def _bounds_of(job: tuple[str, int]) -> dict:
    """Cache entry (measure spans or None, image width and height) of one clean system image whose LMX
    has n measures."""
    from acai_omr.data.dataset import load_gray  # dataset imports this module

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
    import json
    from multiprocessing import get_context

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
