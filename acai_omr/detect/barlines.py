"""Barlines of a two-staff system image, and the measure runs a system is read in.

Barlines of a clean two-staff system are the columns inked from the top to the
bottom line of both staves at the same x (a stem or chord rarely spans a whole
staff, and almost never both at once): `barlines`. Scans and photos are read with
the page detector's binarization and staff tracking instead: `barlines_degraded`.

A model trained on measure crops (`acai_omr.data.measures`) writes one crop's worth
of LMX and stops, so it reads a system the same way (`reading_spans`, used by every
inference path when the weights' `read_measures` is set): cut at the barlines with
the training crops' margins (`crop_span`), each run decoded alone, the token
sequences joined.
"""

from __future__ import annotations

import cv2
import numpy as np

from acai_omr.detect.normalize import binarize, estimate_spacing, flatten_background, thin_lines
from acai_omr.detect.staves import find_staves

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


def thin_strokes(ink: np.ndarray, found: list[int], staves: list[tuple], space: float) -> list[int]:
    """The barlines of `found` that are thin strokes: in at least two of the four spaces of every staff,
    paper 0.6 staff spaces to either side (at the middle row of the space). Time-signature digits, clefs
    and key signatures that line up through both staves are wider. `staves`: (top line y at x, spacing)."""
    h, w = ink.shape
    step = max(2, int(round(0.6 * space)))

    def thin(x: int) -> bool:
        if x - step < 0 or x + step >= w:
            return True  # at the image's edge: nothing to compare with
        for top_at, staff_space in staves:
            clear_sides = 0
            for k in range(4):
                y = int(round(float(top_at(x)) + (k + 0.5) * staff_space))
                clear_sides += 0 <= y < h and not ink[y, x - step] and not ink[y, x + step]
            if clear_sides < 2:
                return False
        return True

    return [x for x in found if thin(x)]


def barlines(gray: np.ndarray, ink: np.ndarray | None = None, thin: bool = False) -> list[int] | None:
    """x of every barline drawn through both staves (system line first, then one per measure).

    A barline column is inked over at least 95% of each staff's height at the
    same x (Verovio draws vocal-score barlines staff by staff, so the gap
    between the staves is not required) and blank just above the upper staff
    and just below the lower one. None when the staves are not found. `ink`
    (bool or 0/1, the image's shape) replaces the fixed clean-render threshold;
    `thin` also drops wide strokes (`thin_strokes`: time signatures at a
    system's start or after a double barline pass the other tests). Training
    crops keep the exact-count rule without it (their cache predates it).
    """
    ink = gray < INK_BELOW if ink is None else ink.astype(bool)
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
    found = [int(round(group.mean())) for group in groups]
    if thin:
        found = thin_strokes(ink, found, [(lambda x, y=lines[0]: y, space), (lambda x, y=lines[5]: y, space)], space)
    return found or None


def barlines_degraded(gray: np.ndarray) -> list[int] | None:
    """`barlines` for scans and photos: background flattened, staves followed as they bend, tilt allowed.

    The staves are found by the page detector's staff finder (`find_staves`,
    which tracks each staff's top line strip by strip, so rotation and page
    curl do not matter); of several, the neighbouring pair nearest the image's
    middle is the system (a loose crop shows parts of the systems around it).
    A barline column is inked (on a vertically smoothed, Otsu-cut mask, widened
    by a pixel each way) over 90% of every space of both staves between their
    curving top and bottom lines, the two staves' columns within a small tilt
    of each other, with clear paper half a space to a space outside the system
    (on the unsmoothed mask). None when no two staves are found.
    """
    h, w = gray.shape
    flat = flatten_background(gray)
    line_ink = binarize(flat, along="x")
    spacing = estimate_spacing(line_ink)
    if spacing is None:
        return None
    space, thickness = spacing
    staves = find_staves(line_ink | thin_lines(flat, space, thickness), space, thickness, gray=flat)
    if len(staves) < 2:
        return None
    upper, lower = min(zip(staves, staves[1:]),
                       key=lambda pair: abs((pair[0].center_y + pair[1].center_y) / 2 - h / 2))
    bar_ink = binarize(flat, along="y").astype(np.int32)  # smoothed down columns: faint barlines survive
    xs = np.arange(w)

    def inked_above(mask: np.ndarray) -> np.ndarray:
        """[y, x]: ink pixels of column x above row y."""
        return np.vstack([np.zeros((1, w), np.int32), np.cumsum(mask.astype(np.int32), axis=0)])

    def share_inked(top: np.ndarray, bottom: np.ndarray, rows_inked: np.ndarray) -> np.ndarray:
        top = np.clip(np.round(top).astype(int), 0, h)
        bottom = np.clip(np.round(bottom).astype(int) + 1, 0, h)
        return (rows_inked[bottom, xs] - rows_inked[top, xs]) / np.maximum(1, bottom - top)

    bar_rows = inked_above(bar_ink)

    def through(staff) -> np.ndarray:
        """Columns inked through every space of the staff (each space may sit a pixel off: tilt)."""
        ok = np.ones(w, dtype=bool)
        for k in range(4):
            share = share_inked(staff.top_at(xs) + k * staff.space, staff.top_at(xs) + (k + 1) * staff.space, bar_rows)
            ok &= cv2.dilate(share[None].astype(np.float32), np.ones((1, 3), np.uint8))[0] >= 0.9
        return ok

    through_upper, through_lower = through(upper), through(lower)
    tilt = max(1, int(np.ceil((lower.center_y - upper.center_y) * np.tan(np.radians(2.0)))))
    both = through_upper & (cv2.dilate(through_lower.astype(np.uint8)[None], np.ones((1, 2 * tilt + 1), np.uint8))[0] > 0)
    # a barline stops at the outer staff lines; a stem through a whole staff runs on past them. Judged on
    # the unsmoothed mask half a space out and beyond: the vertical smoothing (and the blur of a photo)
    # spreads the outer staff line and the barline's own end over the first few pixels
    plain_rows = inked_above(binarize(flat))
    above = share_inked(upper.top_at(xs) - 1.0 * space, upper.top_at(xs) - 0.5 * space, plain_rows)
    below = share_inked(lower.bottom_at(xs) + 0.5 * space, lower.bottom_at(xs) + 1.0 * space, plain_rows)
    clear = (above < 0.15) & (below < 0.15)
    both &= clear & np.r_[clear[1:], True] & np.r_[True, clear[:-1]]
    columns = np.flatnonzero(both)
    if columns.size == 0:
        return None
    groups = np.split(columns, np.flatnonzero(np.diff(columns) > max(2.0, 1.2 * space)) + 1)
    found = thin_strokes(bar_ink, [int(round(group.mean())) for group in groups],
                         [(upper.top_at, upper.space), (lower.top_at, lower.space)], space)
    return found or None


def measure_bounds(gray: np.ndarray, n_measures: int) -> list[tuple[int, int]] | None:
    """(x0, x1) pixel span of each measure, or None when the barlines do not match `n_measures`."""
    found = barlines(gray)
    if found is None or len(found) != n_measures + 1:
        return None
    return list(zip(found[:-1], found[1:]))


def crop_span(bounds: list[tuple[int, int]], first: int, count: int, width: int) -> tuple[int, int]:
    """Pixel columns [x0, x1) of measures first..first+count-1: from the system's left edge for the
    first measure (clefs and key), else 3 px before its barline; to 4 px past the last barline."""
    x0 = 0 if first == 0 else max(0, bounds[first][0] - 3)
    return x0, min(width, bounds[first + count - 1][1] + 4)


def reading_spans(gray: np.ndarray, measures_per_piece: int) -> list[tuple[int, int]]:
    """Column spans [x0, x1) of the pieces a model trained on measure crops reads one at a time.

    The system is cut at its barlines into runs of `measures_per_piece`
    measures with the training crops' margins (`crop_span`), so each piece looks
    like what the model learned from; the last piece runs to the right edge, so
    music after a missed final barline is not lost. Barlines are looked for with
    the clean-render threshold, then as in scans and photos (`barlines_degraded`).
    A missed opening (final) barline is taken to be at the left (right) edge
    when the first (last) one found is more than a tenth of the width in. Where
    none are found, or `measures_per_piece` < 1, the whole image is one piece.
    """
    width = gray.shape[1]
    if measures_per_piece < 1:
        return [(0, width)]
    found = barlines(gray, thin=True)
    if found is None or len(found) < 2:
        found = barlines_degraded(gray)
    return spans_between(found or [], width, measures_per_piece)


def spans_between(found: list[int], width: int, measures_per_piece: int) -> list[tuple[int, int]]:
    """`reading_spans` from given barline columns (sorted; none: the whole width is one piece)."""
    if not found:
        return [(0, width)]
    if found[0] > 0.1 * width:  # the system's opening line was missed: the first measure starts at the left edge
        found = [0, *found]
    if found[-1] < 0.9 * width:  # the final barline was missed: the last measure ends at the right edge
        found = [*found, width]
    bounds = list(zip(found[:-1], found[1:]))
    spans = [crop_span(bounds, first, min(measures_per_piece, len(bounds) - first), width)
             for first in range(0, len(bounds), measures_per_piece)]
    spans[-1] = (spans[-1][0], width)
    return spans
