"""Page normalization: grayscale, page outline (perspective), binarization, staff spacing, deskew.

Every geometric step is a 3x3 matrix, so page coordinates and working coordinates map both ways
exactly: `M` takes a point of the original page to the normalized (working) image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import cv2


def to_gray_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or array (gray, RGB, RGBA) -> uint8 grayscale; transparency counts as paper."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(image, dtype=np.float64)
            hi = arr.max() or 1.0
            return np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8)
        return np.asarray(image.convert("L"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha))
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.clip(arr, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale or 3-D color image array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return np.where(arr, 0, 255).astype(np.uint8)  # True = ink
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Divide by an estimated paper background so shadows and lighting gradients vanish (paper ~ 255).

    The background is a closing (max-filter, then min-filter: ink is dark and thin, so it
    disappears, while the edge of a large dark area such as a sharp shadow stays where it is)
    of a 1/8 thumbnail, smoothed and scaled back up. A max-filter alone would carry the bright
    side of a shadow's edge a few pixels into the shadow, leaving a dark band that reads as a
    long vertical stroke.
    """
    h, w = gray.shape
    small = cv2.resize(gray, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    bg = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    bg = cv2.medianBlur(bg, 5)
    bg = cv2.resize(np.maximum(bg, 1), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, bg, scale=255.0)  # saturates at 255


def binarize(flat: np.ndarray, along: str | None = None, length: int = 5) -> np.ndarray:
    """Ink mask (uint8, 1 = ink) of a background-flattened page.

    `along="x"` (or "y") first averages `length` pixels along rows (columns): a thin, faint or noisy
    horizontal (vertical) line keeps its darkness while paper noise averages out, so staff lines
    (barlines) survive that a pixel-wise threshold would break up.
    """
    if along == "x":
        flat = cv2.blur(flat, (length, 1))
    elif along == "y":
        flat = cv2.blur(flat, (1, length))
    otsu, _ = cv2.threshold(flat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Thin staff lines drawn between two pixel rows are only half dark, so the cut sits halfway
    # between Otsu and paper white, but safely outside the paper's own noise.
    paper, spread = level_and_noise(flat)
    # smoothed views look for faint thin lines, so they cut closer to the paper
    toward_paper = 0.5 if along is None else 0.75
    level = max(float(otsu), min(otsu + toward_paper * (paper - otsu), paper - 5 * spread - 4))
    return (flat < min(level, 235)).astype(np.uint8)


def level_and_noise(image: np.ndarray) -> tuple[float, float]:
    """(median, noise) of a uint8 image (every third pixel of every third row): the median grey and the
    median absolute deviation around it, scaled to a standard deviation. On a background-flattened page
    that is the paper's level and its pixel noise: none on a clean render or a black-and-white scan,
    tens of levels in a dim phone photo's grain."""
    counts = np.bincount(image[::3, ::3].ravel(), minlength=256)
    paper = _histogram_median(counts)
    # median absolute deviation from the histogram: fold it around the paper level
    deviation = np.bincount(np.abs(np.arange(256) - int(paper)), weights=counts, minlength=256)
    return paper, 1.4826 * _histogram_median(deviation)


def thin_lines(flat: np.ndarray, space: float, thickness: float, length: int | None = None,
               floor: float = 10.0) -> np.ndarray:
    """Mask (uint8, 1 = line) of thin horizontal strokes (staff lines) on a background-flattened page.

    A vertical top-hat keeps only what is thinner than a few line thicknesses (staff lines,
    ledger lines, slurs; not note heads, stems or letters' stems), averaging along rows over
    `length` pixels (default ~ half a staff space) then lets a faint line on noisy paper stand
    out of the noise; the cut sits at the paper's own noise level after those two steps, so a
    line a plain threshold breaks up (faint, grey, thin, on grainy paper) stays whole. `floor`: the
    least darkness over that level a line must show (a long average may take a lower one).
    """
    tall = max(2 * int(round(thickness)) + 1, int(round(0.5 * space)), 3)
    length = length or max(5, int(round(0.5 * space)))
    dark = 255 - flat
    response = cv2.morphologyEx(dark, cv2.MORPH_TOPHAT, np.ones((tall, 1), np.uint8))
    response = cv2.blur(response, (length, 1))
    centre, spread = level_and_noise(response)
    level = centre + max(4.0 * spread, floor)
    return (response > level).astype(np.uint8)


def _histogram_median(counts: np.ndarray) -> float:
    cumulative = np.cumsum(counts)
    return float(np.searchsorted(cumulative, cumulative[-1] / 2.0))


def estimate_spacing(ink: np.ndarray, column_step: int = 3) -> tuple[float, float] | None:
    """(staff space, line thickness) in pixels from vertical run lengths, or None without staff-like ink.

    The most common black run is the staff-line thickness; the most common distance between the
    starts of consecutive black runs in a column is the line-to-line distance.
    """
    h, w = ink.shape
    cols = ink[:, ::column_step].T  # (columns, rows)
    if cols.size == 0 or cols.sum() < 50:
        return None
    padded = np.zeros((cols.shape[0], h + 2), np.int8)
    padded[:, 1:-1] = cols
    flat = padded.ravel()
    d = np.diff(flat)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    black = ends - starts
    max_space = max(8, h // 12)
    tally = np.bincount(np.minimum(black, max_space), minlength=max_space + 1)
    thickness = float(np.argmax(tally[1:max_space]) + 1)
    # consecutive starts of line-thin runs within the same column (separators guarantee runs never
    # straddle columns): beams, note heads and text are thicker, and stacks of beams would
    # otherwise pass their own spacing off as the staff space
    thin = black <= max(2 * thickness, thickness + 2)
    starts = starts[thin]
    same_col = (starts[1:] // (h + 2)) == (starts[:-1] // (h + 2))
    dist = (starts[1:] - starts[:-1])[same_col]
    dist = dist[(dist >= 4) & (dist < max_space)]
    if dist.size < 20:
        return None
    hist = np.bincount(dist, minlength=max_space).astype(np.float64)
    # sub-pixel: weighted mean around the mode
    mode = int(np.argmax(hist))
    lo, hi = max(mode - 1, 0), min(mode + 2, hist.size)
    space = float((np.arange(lo, hi) * hist[lo:hi]).sum() / max(hist[lo:hi].sum(), 1.0))
    return space, thickness


def horizontal_lines(ink: np.ndarray, length: float, bridge: int = 3) -> np.ndarray:
    """Keep only horizontal strokes at least `length` pixels long (staff lines, beams, slurs).

    Gaps up to `bridge` pixels (a line broken by noise or faint printing) are closed first.
    """
    if bridge > 1:
        ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((1, int(bridge)), np.uint8))
    return cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, max(3, int(length))), np.uint8))


def estimate_skew(ink: np.ndarray, space: float, max_deg: float = 5.0, bands: int = 4,
                  lines: np.ndarray | None = None) -> float:
    """Page rotation in degrees (positive = lines fall to the right) maximizing row-projection energy.

    The energy is summed over `bands` vertical bands, each projected on its own: on a curled page
    (lines bowed like a smile) no single angle lines up the whole width, and the whole-page
    projection can then prefer an angle that suits neither half (5 degrees on a level page); each
    band's lines are near straight, and the bands together settle on their mean slope.
    `lines`: `horizontal_lines(ink, 2 * space)` when the caller has it already.
    """
    if lines is None:
        lines = horizontal_lines(ink, 2 * space)
    ys, xs = np.nonzero(lines)
    if ys.size < 100:
        return 0.0
    if ys.size > 120_000:
        pick = np.random.default_rng(0).choice(ys.size, 120_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    band = np.minimum(xs * bands // ink.shape[1], bands - 1).astype(np.int64)
    xs = xs.astype(np.float64) - ink.shape[1] / 2
    ys = ys.astype(np.float64)
    offset = ink.shape[1] * np.tan(np.radians(max_deg)) + 2
    stride = int(ink.shape[0] + 2 * offset + 2)  # each band's projection in a range of its own
    band_start = band * stride
    row = np.empty_like(ys)  # reused by every angle tried: this loop is most of the skew search's time
    at = np.empty(ys.size, np.int64)

    def energy(deg: float) -> float:
        np.multiply(xs, -np.tan(np.radians(deg)), out=row)  # ys - xs * tan + offset, rounded
        np.add(row, ys, out=row)
        np.add(row, offset, out=row)
        np.rint(row, out=row)
        at[:] = row
        np.add(at, band_start, out=at)
        counts = np.bincount(at)
        return float(np.dot(counts, counts))

    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.25)
    best = coarse[int(np.argmax([energy(a) for a in coarse]))]
    fine = np.arange(best - 0.25, best + 0.25 + 1e-9, 0.025)
    return float(fine[int(np.argmax([energy(a) for a in fine]))])


def band_skews(ink: np.ndarray, space: float, max_deg: float = 8.0, bands: int = 6,
               min_share: float = 0.05, lines: np.ndarray | None = None) -> list[tuple[float, float]]:
    """(centre x, skew in degrees) of each vertical band holding at least `min_share` of the page's
    long horizontal strokes: how the lines' slope changes across a curled page. `lines`: as for
    `estimate_skew`."""
    if lines is None:
        lines = horizontal_lines(ink, 2 * space)
    total = int(lines.sum())
    w = ink.shape[1]
    out = []
    for b in range(bands):
        a, z = b * w // bands, (b + 1) * w // bands
        part = lines[:, a:z]
        if total and part.sum() >= max(100, min_share * total):
            out.append(((a + z) / 2, estimate_skew(part, space, max_deg, bands=1)))
    return out


class ColumnShift:
    """A curled page flattened: column x of the image moved up by `shift[x]` pixels (on a canvas `pad`
    pixels taller at top and bottom), so lines that bow or wave across the page come out level.

    A page bent like a book's (or waved) bends every column by a smooth amount, which no single
    rotation undoes: its lines' slope changes across the width. The shift is that slope, measured in
    bands, interpolated and summed along x.
    """

    def __init__(self, centres: list[float], degrees: list[float], width: int):
        slope = np.tan(np.radians(np.interp(np.arange(width) + 0.5, centres, degrees)))
        shift = np.cumsum(slope)
        self.shift = shift - shift[width // 2]
        self.pad = int(np.ceil(np.abs(self.shift).max())) + 2

    def apply(self, image: np.ndarray, fill: int = 255) -> np.ndarray:
        h, w = image.shape
        ys = np.arange(h + 2 * self.pad, dtype=np.float32)[:, None] - self.pad + self.shift[None, :].astype(np.float32)
        xs = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], ys.shape)
        return cv2.remap(image, np.ascontiguousarray(xs), ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=fill)

    def to_source(self, pts: np.ndarray) -> np.ndarray:
        """Points of the flattened image in the image it was made from."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        cols = np.clip(np.round(pts[:, 0]).astype(int), 0, self.shift.size - 1)
        return np.stack([pts[:, 0], pts[:, 1] - self.pad + self.shift[cols]], axis=1)


def rotation_matrix(shape: tuple[int, int], deg: float) -> tuple[np.ndarray, tuple[int, int]]:
    """3x3 matrix rotating an image by `deg` (undoing a skew of `deg`) on an enlarged canvas."""
    h, w = shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    rad = np.radians(deg)
    cos, sin = abs(np.cos(rad)), abs(np.sin(rad))
    new_w, new_h = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    rot[0, 2] += new_w / 2 - w / 2
    rot[1, 2] += new_h / 2 - h / 2
    return np.vstack([rot, [0, 0, 1]]), (new_w, new_h)


def _thumbnail_levels(gray: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """(blurred ~600 px thumbnail, its scale, Otsu's cut, the level of the picture's rim)."""
    h, w = gray.shape
    f = 600.0 / max(h, w)
    small = cv2.resize(gray, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    otsu, _ = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    rim = np.concatenate([small[:3].ravel(), small[-3:].ravel(), small[:, :3].ravel(), small[:, -3:].ravel()])
    return small, f, float(otsu), float(np.median(rim))


def find_page_quad(gray: np.ndarray) -> np.ndarray | None:
    """Corners (tl, tr, br, bl) of a paper sheet lying on a darker background, or None.

    Only a clear case counts: one convex four-sided bright region covering 25-97% of the photo,
    shaped like a sheet seen in mild perspective. A scan (paper fills the frame) has no outline
    and gets None. Besides Otsu's cut, lower cuts towards the background's level are tried, so
    a shadow over part of the sheet does not cut that part off; the largest sheet wins. A bright
    region past one of whose sides the music goes on is only the lit part of a sheet that a shadow
    darkens as deep as the table (`_music_past_a_side`): it does not count.
    """
    small, f, otsu, background = _thumbnail_levels(gray)
    cuts = [otsu] + [background + k * (otsu - background) for k in (0.75, 0.5, 0.3) if otsu > background + 8]
    ink = _thumbnail_ink(small, _light_level(small))
    best, best_area = None, 0.0
    for cut in cuts:
        bright = (small > cut).astype(np.uint8) * 255
        bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
        contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            continue
        biggest = max(contours, key=cv2.contourArea)
        area = cv2.contourArea(biggest) / float(small.shape[0] * small.shape[1])
        if not 0.25 <= area <= 0.97 or area <= best_area:
            continue
        approx = cv2.approxPolyDP(biggest, 0.02 * cv2.arcLength(biggest, True), True)
        if len(approx) != 4 or not cv2.isContourConvex(approx):
            continue
        pts = approx.reshape(4, 2).astype(np.float64)
        sh, sw = small.shape
        if (pts.min() <= 2 or (pts[:, 0] >= sw - 3).any() or (pts[:, 1] >= sh - 3).any()):
            continue  # a corner on the frame: the sheet runs out of the picture, its corner is unseen
        if _music_past_a_side(ink, pts):
            continue  # the lit part of a sheet whose other part a shadow darkens as deep as the table
        pts /= f
        # order: top-left, top-right, bottom-right, bottom-left
        s, d = pts.sum(axis=1), pts[:, 1] - pts[:, 0]
        quad = np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]])
        if _plausible_sheet(quad):
            best, best_area = quad, area
    return best


SHEET_EDGE_STEP = 0.3  # log-brightness rise across a sheet's edge: paper at least ~1.35x the table's level
SHEET_INK_STEP = 0.25  # log-darkness under the light around it that counts as ink on the thumbnail


def sheet_mask(gray: np.ndarray) -> np.ndarray | None:
    """Mask (uint8, 1 = paper) of the paper sheet when a sheet on a darker background is in view
    (a photo whose outline is no clean quadrilateral: a corner out of the picture, a shadow
    across an edge); else None.

    The sheet is bounded by its edges, not by a brightness cut: a shadow can leave half the paper
    as dark as the table, but it darkens paper and table alike behind a soft edge, so in log
    brightness (ink closed away) the sheet's edge stays a sharp rise of the same height while
    the shadow's is a ramp. Each side of the picture is searched for the first such rise from the
    frame inwards, row by row; a side whose rises line up along one smooth curve bounds the sheet
    (a side with none is where the sheet runs out of the picture). The bound is pulled in a
    little so the sheet's dark edge goes too. Left in, a table edge reads as a long vertical
    stroke, which can look like a barline joining staves. A sharp shadow's edge rises as steeply,
    but the music goes on beyond it (`_music_beyond`): that side bounds nothing.
    """
    small = _thumbnail_levels(gray)[0]
    h, w = gray.shape
    level = _light_level(small)
    sheet = np.ones(small.shape, np.uint8)
    sides = 0
    ink = _thumbnail_ink(small, level)
    for view, restore in _SIDE_VIEWS:
        inside = _inside_of_edge(view(level))
        if inside is not None and not _music_beyond(view(ink), inside):
            sheet &= restore(inside)
            sides += 1
    if not sides or not 0.25 <= sheet.mean() <= 0.995:
        return None
    sheet = cv2.erode(sheet, np.ones((13, 13), np.uint8))  # ~1% of the picture
    return cv2.resize(sheet, (w, h), interpolation=cv2.INTER_NEAREST)


def _light_level(small: np.ndarray) -> np.ndarray:
    """Log brightness of the light on paper and table: the thumbnail with its ink closed away."""
    return np.log(cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)).astype(np.float32) + 8.0)


def _thumbnail_ink(small: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Ink on the thumbnail (darker than the light `level` around it): notes and staves, which a table
    does not hold."""
    return (level - np.log(small.astype(np.float32) + 8.0)) > SHEET_INK_STEP


def _music_past_a_side(ink: np.ndarray, corners: np.ndarray, depth: float = 0.12, share: float = 0.3,
                       rim: int = 8) -> bool:
    """Whether, past one side of a bright quadrilateral (thumbnail pixels), a band `depth` of the picture
    deep holds ink like the quadrilateral does: then that side is a shadow's edge with the music going
    on under the shadow, not the sheet's edge against a table (`_music_beyond`, for one side).

    A grainy table reads as ink too: what the table shows where it surely is (along the picture's
    frame, `rim` pixels deep, outside the quadrilateral) is taken off the band's ink first.
    """
    h, w = ink.shape
    inside = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(inside, np.round(corners).astype(np.int32), 1)
    within = ink[inside > 0].mean() if inside.any() else 0.0
    if within <= 0:
        return False
    frame = np.ones((h, w), bool)
    frame[rim:h - rim, rim:w - rim] = False
    frame &= inside == 0
    grain = ink[frame].mean() if frame.any() else 0.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre = corners.mean(axis=0)
    band = depth * max(h, w)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        length = float(np.hypot(*(b - a)))
        along = (b - a) / max(length, 1e-6)
        normal = np.array([-along[1], along[0]])
        if np.dot(centre - a, normal) < 0:
            normal = -normal  # pointing into the quadrilateral
        across = (xx - a[0]) * normal[0] + (yy - a[1]) * normal[1]
        run = (xx - a[0]) * along[0] + (yy - a[1]) * along[1]
        past = (across < 0) & (across >= -band) & (run >= 0) & (run <= length)
        if past.mean() >= 0.02 and ink[past].mean() - grain >= share * within:
            return True
    return False


def _music_beyond(ink: np.ndarray, inside: np.ndarray, share: float = 0.3, min_part: float = 0.08) -> bool:
    """Whether what lies outside a side's edge holds ink like the sheet does: then the edge is a sharp
    shadow's across the page (the shadowed music goes on beyond it), not the sheet's against a table.

    Only a shadow over a real part of the picture (`min_part` of it) is judged: in a thin strip along
    the frame (a scanner's bed, a table's rim) the sheet's dark edge and the bed's grain read as ink.
    """
    outside = inside == 0
    if outside.mean() < min_part or not inside.any():
        return False
    within = ink[inside > 0].mean()
    return bool(within > 0 and ink[outside].mean() >= share * within)


# each side of the picture seen as the left side of a view, and the way back
_SIDE_VIEWS = (
    (lambda a: a, lambda a: a),
    (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    (lambda a: a.T, lambda a: a.T),
    (lambda a: a.T[:, ::-1], lambda a: a[:, ::-1].T),
)


def _inside_of_edge(level: np.ndarray, reach: float = 0.4, k: int = 3, min_share: float = 0.3) -> np.ndarray | None:
    """On a view whose left side is searched: the mask (uint8) right of the sheet's edge, or None when
    the rows' first sharp rises of log brightness (SHEET_EDGE_STEP over 2k px) do not line up along one
    curve (x = a quadratic in y, for a curled page) over `min_share` of the rows."""
    rows, cols = level.shape
    span = int(reach * cols)
    if span <= 2 * k + 2:
        return None
    rise = level[:, 2 * k:span] - level[:, :span - 2 * k]  # rise[r, c] is centred on column c + k
    ys = np.arange(0, rows, 2)
    xs, keep = [], []
    for y in ys:
        over = np.flatnonzero(rise[y] > SHEET_EDGE_STEP)
        if over.size:
            c0 = over[0]
            c = c0 + int(np.argmax(rise[y, c0:c0 + 2 * k + 1]))  # the steepest point of this rise
            # the table runs from the frame to the edge: darker all the way out than the paper inside
            # (on a plain page a dark mark's far side rises too, with paper between it and the frame)
            outside = _median(level[y, :c + 1])
            inside = _median(level[y, c + 2 * k:c + 6 * k + 1])
            if inside - outside >= 0.8 * SHEET_EDGE_STEP:
                xs.append(c + k)
                keep.append(y)
    if len(keep) < min_share * len(ys):
        return None
    y, x = np.asarray(keep, np.float64), np.asarray(xs, np.float64)
    rng = np.random.default_rng(0)
    best = None
    for _ in range(150):
        pick = rng.choice(len(y), 3, replace=False)
        if len(set(y[pick])) < 3:
            continue
        coef = np.polyfit(y[pick], x[pick], 2)
        inliers = np.abs(np.polyval(coef, y) - x) <= 2.5
        if best is None or inliers.sum() > best.sum():
            best = inliers
    if best is None or best.sum() < min_share * len(ys) or np.ptp(y[best]) < 0.3 * rows:
        return None
    coef = np.polyfit(y[best], x[best], 2)
    edge = np.polyval(coef, np.arange(rows))
    return (np.arange(cols)[None, :] >= edge[:, None]).astype(np.uint8)


def _median(values: np.ndarray) -> float:
    """np.median of a short 1-D array, to the bit, without its wrapping: the sheet-edge search takes
    two per row of each side, which made np.median's overhead about 6% of a scan's detection time."""
    n = values.size
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return float((part[half - 1] + part[half]) / part.dtype.type(2))


def _plausible_sheet(quad: np.ndarray, max_corner_deg: float = 20.0, min_side_ratio: float = 0.75) -> bool:
    """A sheet seen in mild perspective: four distinct corners, each near 90 degrees, opposite
    sides of similar length. A shadow across a corner cuts the bright region into some other
    four-sided shape, and straightening that would distort the page."""
    if len({(round(x), round(y)) for x, y in quad}) < 4:
        return False
    sides = [np.linalg.norm(quad[(i + 1) % 4] - quad[i]) for i in range(4)]
    if min(sides) <= 0:
        return False
    for i in range(4):
        u, v = quad[i - 1] - quad[i], quad[(i + 1) % 4] - quad[i]
        cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
        if abs(np.degrees(np.arccos(np.clip(cos, -1, 1))) - 90) > max_corner_deg:
            return False
    return (min(sides[0], sides[2]) / max(sides[0], sides[2]) >= min_side_ratio
            and min(sides[1], sides[3]) / max(sides[1], sides[3]) >= min_side_ratio)


def perspective_matrix(quad: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """3x3 homography taking the page quad to an upright rectangle of its mean side lengths."""
    tl, tr, br, bl = quad
    out_w = int(round((np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2))
    out_h = int(round((np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2))
    dst = np.array([[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1], [0, out_h - 1]], np.float32)
    return cv2.getPerspectiveTransform(quad.astype(np.float32), dst).astype(np.float64), (out_w, out_h)


def apply_points(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 3x3 homography."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    hom = np.hstack([pts, np.ones((len(pts), 1))]) @ matrix.T
    return hom[:, :2] / hom[:, 2:3]


def periodic_spacing(flat: np.ndarray, strip: int = 48, min_space: float = 4.0) -> tuple[float, float] | None:
    """(staff space, strength) from the vertical periodicity of thin horizontal strokes, or None.

    Run lengths (`estimate_spacing`) read the space off single columns, which pixel noise on a
    dark, grainy photo breaks into short runs of its own. Here the page's thin-line response
    (vertical top-hat) is averaged over narrow strips (noise averages out, a staff line does
    not), high-passed along y, and the strips' autocorrelations summed: five evenly spaced
    lines give a peak at their spacing. `strength`: that peak over the autocorrelation at 0
    (0..1). The lag found may be a multiple of the spacing: try its fractions as well.
    """
    h, w = flat.shape
    if h < 64 or w < strip:
        return None
    dark = 255 - flat
    response = cv2.morphologyEx(dark, cv2.MORPH_TOPHAT, np.ones((9, 1), np.uint8)).astype(np.float32)
    n = max(1, w // strip)
    edges = np.linspace(0, w, n + 1).astype(int)
    prof = np.add.reduceat(response, edges[:-1], axis=1) / np.diff(edges)[None, :]  # (h, strips)
    prof -= cv2.blur(prof, (1, 31))
    size = 1 << int(np.ceil(np.log2(2 * h)))
    spec = np.fft.rfft(prof, n=size, axis=0)
    ac = np.fft.irfft((spec * np.conj(spec)).real.sum(axis=1), n=size)[: h // 8]
    if ac[0] <= 0:
        return None
    lo = int(np.ceil(min_space))
    if ac.size <= lo + 2:
        return None
    seg = ac[lo:]
    # the strongest repeat: the spacing or a multiple of it (lines two or three spaces apart);
    # callers try its fractions too and let the staves found decide
    peaks = [i for i in range(1, seg.size - 1) if seg[i] >= seg[i - 1] and seg[i] > seg[i + 1] and seg[i] > 0]
    if not peaks:
        return None
    k = max(peaks, key=lambda i: seg[i])
    y0, y1, y2 = seg[k - 1], seg[k], seg[k + 1]
    curve = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / curve if curve < 0 else 0.0
    return float(lo + k + offset), float(y1 / ac[0])
