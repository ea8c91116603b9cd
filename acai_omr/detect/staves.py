"""Five-line staff detection in vertical strips.

Each strip (a few staff spaces wide) gets a row profile of long horizontal ink. A "comb" score
at row y is the weakest of the five profile values at y, y+s, ..., y+4s, so it is high only where
five evenly spaced lines are all present. Peaks of the comb in neighbouring strips are chained
into staves, which lets a staff bend (photos, page curl) and survive broken lines.

With the page's grey levels at hand, each candidate's lines are then re-found to a fraction
of a pixel and must prove to be staff lines there (`line_evidence`): thin lines running
through the staff's whole width. Evenly spaced lines of text pass the comb (their letters
merge into thick bands in the masks) but not that test, since text is broken into letters.
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
    contrast: float = 0.0  # how much darker than the paper its lines are (0: not measured)

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
    sums = np.add.reduceat(mask[:, :edges[-1]], edges[:-1], axis=1, dtype=np.int32)
    return sums / np.diff(edges)[None, :]


def find_staves(ink: np.ndarray, space: float, thickness: float, strip_spaces: float = 8.0,
                min_fill: float = 0.4, gray: np.ndarray | None = None, faint_share: float = 0.25) -> list[Staff]:
    """All five-line staves on a deskewed ink mask, top to bottom.

    `gray`: the background-flattened page (paper ~255); with it, each candidate's lines must
    also run unbroken through its width (`line_evidence`), which rules out lines of text, and
    be at least `faint_share` as dark as the page's typical staff (show-through is fainter).
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

    dark, noise = paper_darkness(gray) if gray is not None else (None, 0.0)
    # a page holds at most one staff per ~6 spaces of height, in a piece or two; on grainy
    # paper (or at a misread spacing) the comb chains thousands of short pieces of noise, which
    # are not worth proving one by one: the longest, clearest chains go first, the rest never
    chains = [c for c in chains if len(c["j"]) >= 2 or n_strips <= 2]
    cap = max(40, int(2 * h / (6 * space)))
    if len(chains) > cap:
        chains = sorted(chains, key=lambda c: -len(c["j"]) * float(np.median(c["score"])))[:cap]
    staves, strengths = [], []
    for chain in chains:
        if len(chain["j"]) < 2 and n_strips > 2:
            continue
        _extend_chain(chain, comb, comb_space, space, low=0.5 * min_fill)
        staff = Staff(xs=centres[chain["j"]], tops=np.asarray(chain["y"], np.float64),
                      space=float(np.median(chain["sp"])),
                      score=float(np.clip(np.median(chain["score"]) / 0.85, 0, 1)))
        if dark is not None:
            _refine_lines(staff, dark, edges[1] - edges[0])
        _measure_extent(staff, ink, edges, chain["j"], thickness)
        if staff.x1 - staff.x0 < 10 * space:
            continue
        if dark is not None:
            evidence = line_evidence(staff, dark, noise)
            if not looks_like_staff(evidence):
                continue
            staff.contrast = float(np.median(evidence["contrast"]))
            strengths.append(staff.contrast)
        staves.append(staff)
    if strengths:
        # the ghost of the other side of the sheet (show-through) draws staves too, far fainter
        # than the page's own; a staff is never that much fainter than its page's others
        typical = float(np.median(strengths))
        staves = [st for st, v in zip(staves, strengths) if v >= faint_share * typical]
    staves = _drop_overlapping(staves)
    return sorted(staves, key=lambda s: s.center_y)


def _refine_lines(staff: Staff, dark: np.ndarray, strip_w: int) -> None:
    """Re-find the staff's five lines to a fraction of a pixel, block by block, in the darkness.

    The comb knows a staff's top to within its tolerance and its spacing only to a few percent
    (it tries five spacings), which puts the bottom line up to two pixels off: enough to miss
    thin lines when measuring the staff's extent. Per block (~4 spaces wide) the darkest row
    near each expected line is taken (to sub-pixel by a parabola), and a line fitted through the
    five gives the block's top and spacing; blocks where the five do not line up are skipped.
    """
    h, w = dark.shape
    sp = staff.space
    a = int(max(0, staff.xs.min() - strip_w / 2))
    b = int(min(w, staff.xs.max() + strip_w / 2))
    block = max(8, int(round(4 * sp)))
    if b - a < block:
        return
    reach = int(np.ceil(0.5 * sp)) + 1
    ds = np.arange(-reach, int(np.ceil(4 * sp)) + reach + 1)
    xs = np.arange(a, b)
    base = np.round(staff.top_at(xs)).astype(int)
    stack = dark[np.clip(base[None, :] + ds[:, None], 0, h - 1), xs[None, :]].astype(np.float32)
    line_at = reach + np.arange(5) * sp
    win = max(1, int(round(0.25 * sp)))
    shift = max(1, reach // 2)
    bounds = np.linspace(0, b - a, max(1, (b - a) // block) + 1).astype(int)
    centres, tops, spaces = [], [], []
    shifts = np.arange(-shift, shift + 1)
    at = np.clip(np.round(line_at[None, :] + shifts[:, None]).astype(int), 0, ds.size - 1)  # (shifts, 5)
    near = np.arange(-win, win + 1)
    k5 = np.arange(5)
    # block profiles, all at once: (offsets, blocks); every block's five lines found together
    sums = np.add.reduceat(stack, bounds[:-1], axis=1) / np.diff(bounds)[None, :]
    n_blocks = sums.shape[1]
    cols = np.arange(n_blocks)
    o = shifts[np.argmax(sums[at].sum(axis=1), axis=0)]  # (blocks,)
    # each line's darkest row within +-win of where it should be
    cand = np.clip(np.round(line_at[None, :, None] + o[:, None, None]).astype(int) + near[None, None, :],
                   1, ds.size - 2)  # (blocks, 5, 2win+1)
    vals = sums[cand, cols[:, None, None]]
    p = np.take_along_axis(cand, np.argmax(vals, axis=2)[:, :, None], axis=2)[:, :, 0]  # (blocks, 5)
    y0, y1, y2 = sums[p - 1, cols[:, None]], sums[p, cols[:, None]], sums[p + 1, cols[:, None]]
    curve = y0 - 2 * y1 + y2
    peaks = p + np.where(curve < 0, 0.5 * (y0 - y2) / np.where(curve < 0, curve, -1), 0.0)
    # least-squares line through the five (x = 0..4, centred at 2)
    mean = peaks.mean(axis=1)
    slope = ((k5 - 2)[None, :] * (peaks - mean[:, None])).sum(axis=1) / 10.0
    icept = mean - 2 * slope
    residual = np.abs(peaks - (icept[:, None] + slope[:, None] * k5[None, :])).max(axis=1)
    ok = ((y1 > 0).all(axis=1) & (np.abs(slope / sp - 1) <= 0.08)
          & (residual <= max(1.0, 0.12 * sp)))
    x_mid = (bounds[:-1] + bounds[1:]) // 2
    centres = list(a + x_mid[ok])
    tops = list(base[x_mid[ok]] + ds[0] + icept[ok])
    spaces = list(slope[ok])
    if len(centres) < 2:
        return
    tops = np.asarray(tops)
    if tops.size >= 3:  # a block fooled by a beam along the staff: its neighbours outvote it
        padded = np.concatenate([[tops[0]], tops, [tops[-1]]])
        tops = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    staff.xs = np.asarray(centres, np.float64)
    staff.tops = tops.astype(np.float64)
    staff.space = float(np.median(spaces))


def paper_darkness(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(paper level minus `gray`, clipped at 0, as uint8; the paper's pixel noise as a robust sigma).

    The noise is the median absolute deviation from the paper level (most pixels are paper),
    so it also holds on a flattened page whose paper is clipped at white.
    """
    counts = np.bincount(gray[::3, ::3].ravel(), minlength=256)
    cumulative = np.cumsum(counts)
    paper = int(np.searchsorted(cumulative, cumulative[-1] / 2.0))
    deviation = np.bincount(np.abs(np.arange(256) - paper), weights=counts, minlength=256)
    cumulative = np.cumsum(deviation)
    noise = 1.4826 * float(np.searchsorted(cumulative, cumulative[-1] / 2.0))
    dark = cv2.subtract(np.full_like(gray, paper), gray)
    return dark, noise


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
    dash = np.ones((1, max(3, int(round(staff.space)))), np.uint8)
    for line in range(5):
        ys = np.round(staff.top_at(xs) + line * staff.space).astype(int)
        seen = np.zeros(xs.size, bool)
        for dy in range(-tol, tol + 1):
            yy = np.clip(ys + dy, 0, h - 1)
            seen |= lines[yy, xs] > 0
        # a faint line on noisy paper comes through dashed: bridge gaps up to a space per line
        seen = cv2.morphologyEx(seen.astype(np.uint8)[None, :], cv2.MORPH_CLOSE, dash)[0] > 0
        hits += seen
    on = hits >= 4
    # close small gaps (a note or a break in a line) before taking the run containing the staff
    gap = max(2, int(2 * staff.space))
    on = cv2.morphologyEx(on.astype(np.uint8)[None, :], cv2.MORPH_CLOSE, np.ones((1, gap), np.uint8))[0] > 0
    idx = np.flatnonzero(on)
    if idx.size == 0:
        staff.x0, staff.x1 = float(staff.xs.min()), float(staff.xs.max())
        return
    # the runs reaching in between the centres of the outermost strips the staff was found in:
    # the comb saw all five lines there, so a gap between them (lines under a dense run of
    # beams, a faint stretch) is still staff; the outermost of those runs give its ends
    breaks = np.flatnonzero(np.diff(idx) > 1)
    run_starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    run_ends = np.concatenate([idx[breaks], [idx[-1]]])
    lo, hi = staff.xs.min() - a, staff.xs.max() - a  # the outermost strips' centres
    inside = np.flatnonzero((run_ends >= lo) & (run_starts <= hi))
    if inside.size == 0:
        staff.x0, staff.x1 = float(edges[min(strips)]), float(edges[max(strips) + 1] - 1)
        return
    staff.x0, staff.x1 = float(xs[run_starts[inside[0]]]), float(xs[run_ends[inside[-1]]])


def _drop_overlapping(staves: list[Staff]) -> list[Staff]:
    """Staves sharing rows -> keep the wider, stronger one; two chains of one staff (split by a
    wide gap) side by side are merged."""
    staves = sorted(staves, key=lambda s: -(s.x1 - s.x0) * (0.5 + s.score))
    kept: list[Staff] = []
    for s in staves:
        clash = False
        for k in kept:
            # staves never share rows: a comb shifted by a few lines onto one staff (its lines plus
            # ledger lines or beams) overlaps it, however little
            overlap_y = min(s.bottom, k.bottom) - max(s.top, k.top)
            overlap_x = min(s.x1, k.x1) - max(s.x0, k.x0)
            if overlap_y <= 0.5 * s.space:
                near = -s.space if s.x1 - s.x0 >= 0.5 * (k.x1 - k.x0) else -2 * s.space
                if overlap_y > near and overlap_x > 0:
                    # less than a space under or over a stronger staff (two, for a short one): no
                    # engraver sets staves that close; a comb fitted to the ledger lines, beams and
                    # stems in the gap between two staves
                    clash = True
                    break
                continue
            clash = True
            edge = k.x0 if s.x1 <= k.x0 else k.x1
            if overlap_x <= 0 and abs(float(s.top_at(edge)) - float(k.top_at(edge))) < 0.5 * s.space:
                # side by side, lines continuing each other: one staff
                k.xs = np.concatenate([k.xs, s.xs])
                k.tops = np.concatenate([k.tops, s.tops])
                order = np.argsort(k.xs)
                k.xs, k.tops = k.xs[order], k.tops[order]
                k.x0, k.x1 = min(k.x0, s.x0), max(k.x1, s.x1)
            break
        if not clash:
            kept.append(s)
    return kept


def line_evidence(staff: Staff, dark: np.ndarray, noise: float, quantile: float = 0.25) -> dict:
    """How clearly the five lines of `staff` show as thin, unbroken lines in the page's darkness.

    `dark`: paper level minus the background-flattened page (0 = paper, uint8); `noise`: the
    paper's pixel noise (robust sigma) in the same units.

    The staff is cut into blocks a few spaces wide; in each block every line's own darkest row
    is found (within a quarter space of where the comb put it). Then, per line and for each row
    around it, the darkness that 75% of the staff's columns reach (the `quantile`). A staff line
    runs through every column (symbols crossing it only add ink), so it stands out in that
    profile however faint or noisy, while the rows 0.2-0.4 spaces (two pixels at least) off it stay
    at the paper level: note heads, stems and beams cover far less of any row. A line of text is broken
    into letters, none of its rows is dark in 75% of the columns, and it vanishes: the
    contrast of text is ~0, that of a staff line is its darkness.

    Returns {"contrast": per line, darkness of its row over the darker of its two sides
    (units of `dark`), "lines": how many lines stand out (by 6 levels, and by four times the quantile's
    own standard error, at most the pixel noise)}.
    """
    h, w = dark.shape
    sp = staff.space
    a, b = int(max(0, staff.x0)), int(min(w, staff.x1))
    if b - a < 4:
        return {"contrast": [0.0] * 5, "lines": 0}
    xs = np.arange(a, b)
    reach = int(np.ceil(0.5 * sp)) + 1
    ds = np.arange(-reach, int(np.ceil(4 * sp)) + reach + 1)
    base = np.round(staff.top_at(xs)).astype(int)
    rows = np.clip(base[None, :] + ds[:, None], 0, h - 1)
    stack = dark[rows, xs[None, :]]  # (offsets, columns)
    line_at = reach + np.round(np.arange(5) * sp).astype(int)  # row of each line in `stack`

    # the sides from two rows off at least: at a small spacing (a screenshot) an anti-aliased line
    # that falls between two pixel rows darkens both, and the next row is still the line
    s0 = max(2, int(round(0.2 * sp)))
    s1 = max(s0, int(np.ceil(0.4 * sp)))
    win = max(1, int(round(0.25 * sp)))
    block = max(8, int(round(4 * sp)))
    shift = max(1, reach // 2)
    n_blocks = max(1, (b - a) // block)
    bounds = np.linspace(0, b - a, n_blocks + 1).astype(int)
    offsets = np.arange(-s1, s1 + 1)
    shifts = np.arange(-shift, shift + 1)
    at = np.clip(line_at[None, :] + shifts[:, None], 0, ds.size - 1)  # (shifts, 5)
    near = np.arange(-win, win + 1)
    block_means = np.add.reduceat(stack.astype(np.float32), bounds[:-1], axis=1) / np.diff(bounds)[None, :]
    cols = np.arange(block_means.shape[1])
    o = shifts[np.argmax(block_means[at].sum(axis=1), axis=0)]  # (blocks,)
    # each line's own darkest row per block (the spacing is only known to a pixel or so)
    cand = np.clip((line_at[None, :, None] + o[:, None, None]) + near[None, None, :], 0, ds.size - 1)
    peaks = np.take_along_axis(cand, np.argmax(block_means[cand, cols[:, None, None]], axis=2)[:, :, None],
                               axis=2)[:, :, 0]  # (blocks, 5)
    per_col = np.repeat(peaks, np.diff(bounds), axis=0)  # (columns, 5)
    rows = np.clip(per_col[:, :, None] + offsets[None, None, :], 0, ds.size - 1)  # (columns, 5, 2*s1+1)
    around = stack[rows, np.arange(b - a)[:, None, None]].transpose(1, 2, 0)  # (5, 2*s1+1, columns)
    kq = int(quantile * (b - a))
    contrast = []
    for k in range(5):
        profile = np.partition(around[k], kq, axis=1)[:, kq].astype(np.float64)
        side = max(profile[:s1 - s0 + 1].max(), profile[s1 + s0:].max())
        contrast.append(float(profile[s1] - side))
    # the quantile of many columns is far steadier than one pixel: its standard error for Gaussian
    # noise is ~1.4 sigma / sqrt(n), n counted in independent columns (neighbours share blur)
    error = 1.4 * noise / np.sqrt(max(1.0, (b - a) / 3.0))
    need = max(min(noise, 4.0 * error), 6.0)
    return {"contrast": contrast, "lines": int(sum(v >= need for v in contrast))}


def looks_like_staff(evidence: dict) -> bool:
    """Four of the five lines stand out as thin lines running through the staff's width."""
    return evidence["lines"] >= 4
