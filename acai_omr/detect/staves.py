"""Five-line staff detection in vertical strips.

Each strip (a few staff spaces wide) gets a row profile of long horizontal ink. A "comb" score
at row y is the weakest of the five profile values at y, y+s, ..., y+4s, so it is high only where
five evenly spaced lines are all present. Peaks of the comb in neighbouring strips are chained
into staves, which lets a staff bend (photos, page curl) and survive broken lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import cv2

from .normalize import horizontal_lines


@dataclass
class Staff:
    """A staff in working coordinates: its top line's y sampled at strip centres."""

    xs: np.ndarray  # strip centres (x) where the staff was seen
    tops: np.ndarray  # y of the top line at those x
    space: float  # line-to-line distance
    x0: float = 0.0
    x1: float = 0.0
    score: float = 0.0  # 0..1: how clearly all five lines were present

    def top_at(self, x) -> np.ndarray:
        return np.interp(x, self.xs, self.tops)

    def bottom_at(self, x) -> np.ndarray:
        return self.top_at(x) + 4 * self.space

    @property
    def top(self) -> float:
        return float(self.tops.min())

    @property
    def bottom(self) -> float:
        return float(self.tops.max() + 4 * self.space)

    @property
    def center_y(self) -> float:
        return float(np.median(self.tops) + 2 * self.space)


def _comb(profile: np.ndarray, space: float, tolerance: int,
          allowance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Best five-line comb score per (row, strip) over a few spacings near `space`, and that spacing.

    Score = the weakest of the five lines, less how far the mean ink of the four spaces between
    them exceeds `allowance`.
    """
    h = profile.shape[0]
    k = 2 * tolerance + 1
    widened = cv2.dilate(profile.astype(np.float32), np.ones((k, 1), np.uint8))
    best = np.zeros_like(widened)
    best_space = np.full(widened.shape, space, np.float32)
    raw = profile.astype(np.float32)

    def shifted(arr: np.ndarray, offset: float) -> np.ndarray:
        out = np.zeros_like(arr)
        shift = int(round(offset))
        if shift < h:
            out[: h - shift] = arr[shift:]
        return out

    for factor in (0.92, 0.96, 1.0, 1.04, 1.08):
        sp = space * factor
        score = np.full(widened.shape, np.inf, np.float32)
        for line in range(5):
            np.minimum(score, shifted(widened, line * sp), out=score)
        # the four spaces must be lighter than the lines, right next to them too: a dark band
        # is not a staff, and neither are lines of text (thick bands of ink, evenly spaced)
        near = min(tolerance + 2.0, 0.35 * sp)  # just off the line, as the line's thickness allows
        spaces = sum(shifted(raw, k * sp + off) for k in range(4) for off in (near, 0.5 * sp, sp - near)) / 12.0
        score -= np.maximum(spaces - allowance, 0)
        better = score > best
        best[better] = score[better]
        best_space[better] = sp
    return best, best_space


def _strip_profile(mask: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(rows, strips) share of each strip's row that is ink."""
    h = mask.shape[0]
    col_sums = np.concatenate([np.zeros((h, 1), np.int32), np.cumsum(mask, axis=1, dtype=np.int32)], axis=1)
    return (col_sums[:, edges[1:]] - col_sums[:, edges[:-1]]) / np.diff(edges)[None, :]


def find_staves(ink: np.ndarray, space: float, thickness: float, strip_spaces: float = 8.0,
                min_fill: float = 0.4, plain: np.ndarray | None = None) -> list[Staff]:
    """All five-line staves on a deskewed ink mask, top to bottom.

    `plain`: the page's pixel-wise ink mask; with it, each candidate must also look like five
    thin, unbroken lines there (`line_evidence`), which rules out lines of text.
    """
    h, w = ink.shape
    lines = horizontal_lines(ink, 2 * space, bridge=max(3, int(round(space / 4))))
    strip_w = max(16, int(round(strip_spaces * space)))
    n_strips = max(1, w // strip_w)
    edges = np.linspace(0, w, n_strips + 1).astype(int)
    tolerance = max(1, int(round(min(thickness, 0.25 * space) / 2)))
    # two views of the lines: long horizontal strokes only (clean pages: ignores note heads and
    # text), and all ink (dashed lines from a poor scan, which the first view loses)
    comb_long, space_long = _comb(_strip_profile(lines, edges), space, tolerance, allowance=0.25)
    comb_all, space_all = _comb(_strip_profile(ink, edges), space, tolerance, allowance=0.0)
    comb = np.maximum(comb_long, comb_all)
    comb_space = np.where(comb_long >= comb_all, space_long, space_all)

    # peaks per strip: above threshold and the maximum within +-2 spaces
    window = int(2 * space) * 2 + 1
    local_max = cv2.dilate(comb, np.ones((window, 1), np.uint8))
    peaks = (comb >= min_fill) & (comb >= local_max - 1e-6)
    ys, js = np.nonzero(peaks)
    centres = (edges[:-1] + edges[1:]) / 2.0

    # chain peaks across strips, left to right, into staves
    chains: list[dict] = []
    for j in range(n_strips):
        rows = ys[js == j]
        # collapse plateaus (equal maxima on adjacent rows)
        picked: list[int] = []
        for y in rows:
            if picked and y - picked[-1] < space:
                continue
            picked.append(int(y))
        used: set[int] = set()
        for y in picked:
            best, best_d = None, 0.8 * space
            for ci, chain in enumerate(chains):
                if ci in used or j - chain["j"][-1] > 3:
                    continue
                d = abs(chain["y"][-1] - y)
                if d < best_d:
                    best, best_d = ci, d
            if best is None:
                chains.append({"j": [j], "y": [y], "score": [float(comb[y, j])], "sp": [float(comb_space[y, j])]})
                used.add(len(chains) - 1)
            else:
                chain = chains[best]
                chain["j"].append(j)
                chain["y"].append(y)
                chain["score"].append(float(comb[y, j]))
                chain["sp"].append(float(comb_space[y, j]))
                used.add(best)

    staves = []
    for chain in chains:
        if len(chain["j"]) < 2 and n_strips > 2:
            continue
        _extend_chain(chain, comb, comb_space, space, low=0.5 * min_fill)
        staff = Staff(xs=centres[chain["j"]], tops=np.asarray(chain["y"], np.float64),
                      space=float(np.median(chain["sp"])),
                      score=float(np.clip(np.median(chain["score"]) / 0.85, 0, 1)))
        _measure_extent(staff, ink, edges, chain["j"], thickness)
        if staff.x1 - staff.x0 < 10 * space:
            continue
        if plain is not None and not looks_like_staff(line_evidence(staff, plain)):
            continue
        staves.append(staff)
    staves = _drop_overlapping(staves)
    return sorted(staves, key=lambda s: s.center_y)


def _extend_chain(chain: dict, comb: np.ndarray, comb_space: np.ndarray, space: float, low: float) -> None:
    """Follow a staff into strips where it is weaker (broken or faint lines), with a lower threshold.

    Seeds need a clear comb peak; once a staff is known, a neighbouring strip only has to show a
    weaker five-line response at (nearly) the same height. Fills gaps and extends both ends.
    """
    h, n_strips = comb.shape
    found = dict(zip(chain["j"], chain["y"]))

    def near(j: int, y_ref: float) -> tuple[int, float]:
        a, b = int(max(0, y_ref - 0.6 * space)), int(min(h, y_ref + 0.6 * space + 1))
        if b <= a:
            return int(y_ref), 0.0
        k = int(np.argmax(comb[a:b, j]))
        return a + k, float(comb[a + k, j])

    def take(j: int, y_ref: float) -> bool:
        y, v = near(j, y_ref)
        if v < low:
            return False
        found[j] = y
        chain["score"].append(v)
        chain["sp"].append(float(comb_space[y, j]))
        return True

    first, last = min(found), max(found)
    for j in range(first + 1, last):
        if j not in found:
            known = sorted(found)
            take(j, float(np.interp(j, known, [found[k] for k in known])))
    for j in range(first - 1, -1, -1):
        if not take(j, found[j + 1]):
            break
    for j in range(last + 1, n_strips):
        if not take(j, found[j - 1]):
            break
    order = sorted(found)
    chain["j"], chain["y"] = order, [found[j] for j in order]


def _measure_extent(staff: Staff, lines: np.ndarray, edges: np.ndarray, strips: list[int],
                    thickness: float) -> None:
    """Set x0/x1 to where four of the five line positions carry ink, around the strips found."""
    h, w = lines.shape
    a = edges[max(min(strips) - 1, 0)]
    b = edges[min(max(strips) + 2, len(edges) - 1)]
    xs = np.arange(a, b)
    tol = max(1, int(round(thickness / 2)))
    hits = np.zeros(xs.size, np.int32)
    for line in range(5):
        ys = np.round(staff.top_at(xs) + line * staff.space).astype(int)
        seen = np.zeros(xs.size, bool)
        for dy in range(-tol, tol + 1):
            yy = np.clip(ys + dy, 0, h - 1)
            seen |= lines[yy, xs] > 0
        hits += seen
    on = hits >= 4
    # close small gaps (a note or a break in a line) before taking the run containing the staff
    gap = max(2, int(2 * staff.space))
    on = cv2.morphologyEx(on.astype(np.uint8)[None, :], cv2.MORPH_CLOSE, np.ones((1, gap), np.uint8))[0] > 0
    centre = int(np.clip(np.median(staff.xs) - a, 0, xs.size - 1))
    idx = np.flatnonzero(on)
    if idx.size == 0:
        staff.x0, staff.x1 = float(staff.xs.min()), float(staff.xs.max())
        return
    # the run containing (or nearest to) the middle strip
    breaks = np.flatnonzero(np.diff(idx) > 1)
    run_starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    run_ends = np.concatenate([idx[breaks], [idx[-1]]])
    lengths = run_ends - run_starts
    inside = np.flatnonzero((run_starts <= centre) & (run_ends >= centre))
    r = inside[0] if inside.size else int(np.argmax(lengths))
    staff.x0, staff.x1 = float(xs[run_starts[r]]), float(xs[run_ends[r]])


def _drop_overlapping(staves: list[Staff]) -> list[Staff]:
    """Two chains of one staff (e.g. split by a wide gap) -> keep the wider, stronger one."""
    staves = sorted(staves, key=lambda s: -(s.x1 - s.x0) * (0.5 + s.score))
    kept: list[Staff] = []
    for s in staves:
        clash = False
        for k in kept:
            overlap_y = min(s.bottom, k.bottom) - max(s.top, k.top)
            if overlap_y > 2 * s.space:
                overlap_x = min(s.x1, k.x1) - max(s.x0, k.x0)
                if overlap_x > 0:
                    clash = True
                    break
                # side by side: merge into one staff
                k.xs = np.concatenate([k.xs, s.xs])
                k.tops = np.concatenate([k.tops, s.tops])
                order = np.argsort(k.xs)
                k.xs, k.tops = k.xs[order], k.tops[order]
                k.x0, k.x1 = min(k.x0, s.x0), max(k.x1, s.x1)
                clash = True
                break
        if not clash:
            kept.append(s)
    return kept


def line_evidence(staff: Staff, plain: np.ndarray) -> dict:
    """How much the five lines of `staff` look like staff lines in the pixel-wise ink mask `plain`.

    The staff is cut into blocks a few spaces wide; in each block the five line rows are re-found
    (the comb's rows can be off by its tolerance) and the blocks' row profiles are stacked
    aligned. Per line:

    * spread: ink 0.15-0.4 spaces above or below the line's peak row, relative to the peak
      (both less the paper's own level, the emptiest rows between the lines). A staff line is
      thin, so its neighbourhood is nearly empty (~0.1; a blurred low-resolution line ~0.3);
      a line of text is a band as thick as its x-height (~0.3-0.45 of the line pitch): ~0.9.
    * continuity: share of the staff's width covered by unbroken runs of ink at least one space
      long along the line row. A staff line is one long stroke (symbols crossing it add ink,
      they do not break it); a line of text is broken into letters and gives ~0.

    Returns the medians over the five lines: {"spread", "continuity", "fill"} (fill: the peak
    row's share of ink).
    """
    h, w = plain.shape
    sp = staff.space
    a, b = int(max(0, staff.x0)), int(min(w, staff.x1))
    if b - a < 4:
        return {"spread": 1.0, "continuity": 0.0, "fill": 0.0}
    xs = np.arange(a, b)
    reach = int(np.ceil(0.5 * sp)) + 1
    ds = np.arange(-reach, int(np.ceil(4 * sp)) + reach + 1)
    base = np.round(staff.top_at(xs)).astype(int)
    rows = np.clip(base[None, :] + ds[:, None], 0, h - 1)
    stack = plain[rows, xs[None, :]] > 0  # (offsets, columns)
    line_at = reach + np.round(np.arange(5) * sp).astype(int)  # row index of each line in `stack`

    # per block, the shift (within +-reach/2) that puts the most ink on the five line rows
    block = max(8, int(round(4 * sp)))
    shift = max(1, reach // 2)
    n_blocks = max(1, (b - a) // block)
    bounds = np.linspace(0, b - a, n_blocks + 1).astype(int)
    profile = np.zeros(ds.size, np.float64)
    offsets = np.zeros(b - a, int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        prof = stack[:, lo:hi].mean(axis=1)
        sums = [float(prof[np.clip(line_at + o, 0, ds.size - 1)].sum()) for o in range(-shift, shift + 1)]
        o = int(np.argmax(sums)) - shift
        offsets[lo:hi] = o
        profile += np.roll(prof, -o) * (hi - lo)
    profile /= b - a

    s0, s1 = max(1, int(round(0.15 * sp))), int(np.ceil(0.4 * sp))
    between = np.concatenate([profile[int(line_at[k] + 0.3 * sp):int(line_at[k] + 0.7 * sp) + 1] for k in range(4)])
    floor = float(np.percentile(between, 10)) if between.size else 0.0
    cols = np.arange(b - a)
    spreads, conts, fills = [], [], []
    for k in range(5):
        c = int(line_at[k])
        win = max(1, int(round(0.2 * sp)))
        lo_i, hi_i = max(0, c - win), min(ds.size, c + win + 1)
        peak = lo_i + int(np.argmax(profile[lo_i:hi_i]))
        v = float(profile[peak])
        fills.append(v)
        above = profile[max(0, peak - s1):max(0, peak - s0 + 1)]
        below = profile[peak + s0:peak + s1 + 1]
        side = max(above.max() if above.size else 0.0, below.max() if below.size else 0.0)
        spreads.append(max(side - floor, 0.0) / (v - floor) if v > floor else 1.0)
        # the line's own rows (+-1) in every column, at that column's block offset
        r = np.clip(peak + offsets[None, :] + np.array([-1, 0, 1])[:, None], 0, ds.size - 1)
        on = stack[r, cols[None, :]].any(axis=0)
        edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        conts.append(float(runs[runs >= sp].sum()) / (b - a))
    return {"spread": float(np.median(spreads)), "continuity": float(np.median(conts)),
            "fill": float(np.median(fills))}


def looks_like_staff(evidence: dict, max_spread: float = 0.45, min_continuity: float = 0.25) -> bool:
    """Thin lines, or lines that run unbroken: either way not lines of text (thick *and* broken).

    A faint or noisy staff may break up in the ink mask, but its lines stay thin; a blurred,
    low-resolution staff may look thick, but its lines stay unbroken.
    """
    return evidence["spread"] <= max_spread or evidence["continuity"] >= min_continuity
