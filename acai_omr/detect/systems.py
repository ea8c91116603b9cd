"""Find every system on a page: `detect_systems(page) -> DetectionResult`, `crop_system(page, box)`.

Pipeline: grayscale -> (photo) page outline to a rectangle -> background-flattened binarization ->
staff spacing from run lengths -> deskew by projection energy -> five-line staves in strips ->
staves joined into systems by vertical lines crossing the gap between them (system start line,
shared barlines, brace) -> boxes grown into the space between systems -> page coordinates.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

import cv2

from ..config import DetectConfig
from . import normalize
from .staves import Staff, find_staves, paper_darkness


@dataclass
class StaffBox:
    """One staff, axis-aligned in page coordinates; role: piano-upper/piano-lower/voice/staff."""

    x0: float
    y0: float
    x1: float
    y1: float
    space: float  # staff space (line-to-line distance) in page pixels
    role: str = "staff"


@dataclass
class SystemBox:
    """One system: axis-aligned box in page coordinates (x0, y0) - (x1, y1), top-left origin.

    `quad` holds the exact corners (tl, tr, br, bl) of the system's rectangle in the deskewed
    page, mapped back onto the original page; `crop_system` warps it upright.

    A "voice+piano" system (and an "ensemble" one with a clear piano pair) is boxed as its piano
    pair, the unit the transcription model reads: box and quad hold the brace and the two piano
    staves with their notes, not the voice staff or its lyrics. `staves` still lists every staff
    of the system (the voice with role "voice"), so a staff outside the box was left out.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    staves: list[StaffBox] = field(default_factory=list)
    kind: str = "piano"  # "piano" | "single" | "voice+piano" | "ensemble"
    quad: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DetectionResult:
    boxes: list[SystemBox]
    page_size: tuple[int, int]  # (width, height) of the input page
    skew_angle: float  # degrees the page was rotated by to level its staff lines
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"page_size": list(self.page_size), "skew_angle": round(self.skew_angle, 3),
                "messages": list(self.messages), "systems": [b.to_dict() for b in self.boxes]}


# what a user can do when a page of music shows no staff lines the detector can follow
LINES_LOST_HINT = ("if this is music, its staff lines are too faint or broken to follow (a black-and-white scan, "
                   "a dark or blurred photo?): a greyscale scan or a sharper, brighter photo may do")


def detect_systems(image: Image.Image | np.ndarray, cfg: DetectConfig | None = None) -> DetectionResult:
    """Systems on one page image, in reading order (top to bottom, then left to right)."""
    cfg = cfg or DetectConfig()
    gray = normalize.to_gray_array(image)
    h, w = gray.shape
    result = DetectionResult(boxes=[], page_size=(w, h), skew_angle=0.0)
    if min(h, w) < 32:
        result.messages.append(f"page is too small ({w}x{h} pixels) to hold staves")
        return result

    page = _read_lines(gray, cfg)
    if page.straightened and page.found is not None and abs(page.angle) > cfg.max_straightened_skew_deg:
        # the staff lines do not run along the straightened sheet. A page curl bends them, but so does a
        # wrong outline (a bright patch's edge, a corner snapped along a side), whose warp slants and
        # shears the music: then the lines lie straighter on the photo as it is than on the "sheet".
        # Read the page as it lies, and keep that when its lines slant less and it finds as much staff
        plain = _read_lines(gray, cfg, trace_outline=False)
        if (plain.found is not None and abs(plain.angle) < abs(page.angle)
                and _staff_length(plain.staves) >= _staff_length(page.staves)):
            page = plain
    if page.found is None:
        result.messages.append(page.message)
        return result
    M, scale, space = page.M, page.scale, page.space
    staves, angle, R, flat, ink, bar_ink = page.found
    curl = R if isinstance(R, normalize.ColumnShift) else None
    if R is not None and curl is None:
        M = R @ M
    result.skew_angle = angle
    if not staves:
        result.messages.append(f"no five-line staves found on the page; {LINES_LOST_HINT}")
        return result
    clean_ink = _despeckle(ink, space)
    clean_ink = _above_the_grain(clean_ink, flat, staves, cfg.grain_blank_share, speck_density=cfg.grain_speck_density)
    clean_ink = _without_show_through(clean_ink, flat, staves, cfg.show_through_share)
    groups = _join_by_layout(_group_staves(staves, bar_ink, flat), clean_ink)
    units, boxing_ink, left_out = _box_units(groups, clean_ink)
    rects = _system_rects(units, boxing_ink, cfg, left_out)
    inverse = np.linalg.inv(M)

    def to_page(pts) -> np.ndarray:
        return normalize.apply_points(inverse, curl.to_source(pts) if curl is not None else pts)

    for group, rect in zip(groups, rects):
        result.boxes.append(_to_page_box(group, rect, to_page, (w, h), curved=curl is not None))
    result.boxes.sort(key=lambda b: (round(b.y0 / max(space / scale, 1) / 4), b.x0))
    kinds = {}
    for b in result.boxes:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    result.messages.append(f"{len(result.boxes)} systems ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                           f"staff space {space / scale:.1f}px, skew {angle:.2f} deg"
                           + (", page outline straightened" if page.straightened else "")
                           + (", page curl flattened" if curl is not None else ""))
    apart = sum(1 for b in result.boxes if any(st.y1 <= b.y0 or st.y0 >= b.y1 for st in b.staves))
    if apart:
        result.messages.append(f"{apart} system{'s' if apart > 1 else ''} boxed as the piano's two staves: "
                               "the other staves (a voice and its lyrics) are left out")
    return result


@dataclass
class _PageRead:
    """What reading a page's lines gave: `_deskew_and_find`'s tuple, the matrix from the page to the
    working image, whether the sheet's traced outline was straightened, the working scale and the
    staff space there; or only why nothing could be read (`message`)."""

    found: tuple | None = None
    M: np.ndarray | None = None
    straightened: bool = False
    scale: float = 1.0
    space: float = 0.0
    message: str = ""

    @property
    def staves(self) -> list[Staff]:
        return self.found[0]

    @property
    def angle(self) -> float:
        return self.found[1]


def _read_lines(gray: np.ndarray, cfg: DetectConfig, trace_outline: bool = True) -> _PageRead:
    """Working image, spacing, skew and staves of a page. `trace_outline`: straighten the sheet by its
    outline when a clean one is traced (else the table around it is only masked out)."""
    h, w = gray.shape
    # working resolution: large pages are shrunk, but never so far that staff lines merge
    scale = min(1.0, cfg.work_max_side / max(h, w))
    for _ in range(2):
        M = np.diag([scale, scale, 1.0])
        work = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        quad = normalize.find_page_quad(work) if cfg.perspective and trace_outline else None
        sheet = None
        if quad is not None:
            P, size = normalize.perspective_matrix(quad)
            work = cv2.warpPerspective(work, P, size, flags=cv2.INTER_LINEAR, borderValue=255)
            M = P @ M
        elif cfg.perspective:
            sheet = normalize.sheet_mask(work)
        flat = normalize.flatten_background(work)
        # what is not paper goes white (after flattening, whose background estimate would
        # otherwise draw a dark rim along the edge): the table around a sheet not straightened,
        # and the slivers of it that can line a straightened one (its outline is traced on a
        # small thumbnail)
        if sheet is not None:
            flat[sheet == 0] = 255
        elif quad is not None:
            rim = max(2, int(0.015 * max(flat.shape)))
            flat[:rim], flat[-rim:], flat[:, :rim], flat[:, -rim:] = 255, 255, 255, 255
        ink, line_ink, bar_ink = _binarize_all(flat)
        # staff space and line thickness from thin horizontal strokes; a generic top-hat (lines
        # up to ~4 px) keeps faint lines the smoothed threshold loses to noise, and the runs of
        # note heads and beams out of the count
        spacing = normalize.estimate_spacing(line_ink | normalize.thin_lines(flat, 10.0, 2.0))
        if spacing is None or scale == 1.0 or spacing[0] >= cfg.min_work_space:
            break
        if not _spacing_repeats(flat, spacing[0]):
            # a grainy photo's pixel noise breaks its lines into short runs whose spacing reads
            # small; the page's vertical repeat of thin lines does not match it: keep the working
            # size (the retry below tries that repeat) rather than work on the full page for nothing
            break
        scale = min(1.0, scale * (cfg.min_work_space + 2) / spacing[0])
    if spacing is None:
        return _PageRead(message="no staff lines found: the page looks blank")
    space, thickness = spacing
    if thickness > cfg.max_line_thickness * space:
        # thick bands: blurred staff lines (the smoothed mask widens them), or lines of text; the
        # pixel-wise mask, cut nearer the lines' core, has the last word (text is then left to
        # the staff check, which wants lines unbroken by the gaps between letters)
        plain = normalize.estimate_spacing(ink)
        if plain is None or plain[1] > cfg.max_line_thickness * space:
            return _PageRead(message=f"no staff lines found: the most common horizontal strokes are {thickness:.0f}px "
                                     f"thick every {space:.0f}px, like lines of text; {LINES_LOST_HINT}")
        thickness = plain[1]

    masks = (ink, line_ink, bar_ink)
    found = _deskew_and_find(flat, masks, space, thickness, cfg)
    if _staff_length(found[0]) < 1.5 * flat.shape[1] / space:
        # (next to) nothing found: a dark, grainy photo whose staff lines came through faint and broken
        # (the run lengths then misread the spacing too, and the skew). Try again with lines
        # averaged over a few spaces, at the spacing read and at the page's strongest vertical
        # repeat of thin lines (or a fraction of it). The widest spacing that finds a page's worth
        # of staff wins: staves of spacing s also pass for staves of s/2 (every other line lies on
        # ink), never for staves of 2s, so a narrower candidate only adds those impostors;
        # without such a candidate the one with most staff wins.
        tries = [(space, thickness)]
        repeat = normalize.periodic_spacing(flat)
        if repeat is not None:
            for part in (1, 2, 3):
                sp = repeat[0] / part
                if sp >= 4.0 and all(abs(sp / t[0] - 1) > 0.08 for t in tries):
                    tries.append((sp, float(min(thickness, max(1.0, 0.2 * sp)))))
        # Last, on a grainy page, the same spacings on the page smoothed along its rows (about a
        # Gaussian of `cfg.grain_row_sigma_spaces`): under a heavy grain the lines are a dozen levels
        # darker than paper and the grain tens, and only a long average brings them out of it. Not on
        # paper without grain (a render, a black-and-white scan): there the blur finds nothing the
        # retries above missed but lines of text smeared into bars.
        smooths = [0.0]
        if cfg.grain_row_sigma_spaces > 0 and normalize.level_and_noise(flat)[1] >= cfg.grain_min_noise:
            smooths.append(cfg.grain_row_sigma_spaces)
        for smooth in smooths:
            for sp, th in sorted(tries, key=lambda t: -t[0]):
                attempt = _deskew_and_find(flat, masks, sp, th, cfg, faint=True, smooth=smooth)
                if smooth and not _crossed_by_strokes(attempt[0], attempt[5]):
                    continue  # lines of text, smeared into bars: no stem or barline runs through them
                if _staff_length(attempt[0]) > _staff_length(found[0]):
                    found, space, thickness = attempt, sp, th
                if _staff_length(attempt[0]) >= 1.5 * flat.shape[1] / sp:
                    break
            if _staff_length(found[0]) >= 1.5 * flat.shape[1] / space:
                break
    else:
        found = _fill_in_faint(found, space, thickness, cfg)
    return _PageRead(found, M, quad is not None, scale, space)


def _fill_in_faint(found: tuple, space: float, thickness: float, cfg: DetectConfig) -> tuple:
    """`found` with the staves that only lines averaged along the row show, where no staff was found:
    a shadow or dim corner of a grainy photo, whose flattening brings the grain up with the lines.

    Read on the same levelled page (its frame is kept), in each stretch of rows with ink and no staff;
    a staff there must be as dark as a quarter of the page's others, like any staff, and clear of them
    by a space.
    """
    staves, angle, R, flat, ink, bar_ink = found
    if not staves:
        return found
    typical = float(np.median([s.contrast for s in staves]))
    new = []
    for y0, y1 in _rows_without_staff(staves, ink, space):
        part = flat[y0:y1]
        line_ink = _line_mask(part, normalize.binarize(part, along="x"), space, thickness, faint=True)
        for m in find_staves(line_ink, space, thickness, cfg.strip_spaces, cfg.min_line_fill, gray=part):
            m.tops = m.tops + y0
            if m.contrast >= 0.25 * typical and all(m.bottom < s.top - s.space or m.top > s.bottom + s.space
                                                   or min(m.x1, s.x1) <= max(m.x0, s.x0) for s in staves):
                new.append(m)
    if not new:
        return found
    return sorted(staves + new, key=lambda s: s.center_y), angle, R, flat, ink, bar_ink


def _rows_without_staff(staves: list[Staff], ink: np.ndarray, space: float) -> list[tuple[int, int]]:
    """Stretches of the page's rows clear of the staves found by three spaces, six spaces tall or more,
    that have ink in most of their rows (music, or text): (first row, end row) of each."""
    h = ink.shape[0]
    free = np.ones(h, bool)
    for s in staves:
        free[max(0, int(s.top - 3 * s.space)):int(s.bottom + 3 * s.space) + 1] = False
    inked = free & (ink.mean(axis=1) >= 0.01)
    edges = np.diff(np.concatenate([[0], free.astype(np.int8), [0]]))
    out = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if b - a >= 6 * space and inked[a:b].mean() >= 0.6:
            out.append((int(a), int(b)))
    return out


def _deskew_and_find(flat: np.ndarray, masks: tuple, space: float, thickness: float, cfg: DetectConfig,
                     faint: bool = False, smooth: float = 0.0):
    """Level the page by its lines and find its staves: (staves, angle, R, flat, ink, bar_ink), R being the
    rotation's matrix, the `normalize.ColumnShift` that flattened a curled page, or None.

    `faint`: also take thin lines averaged over three and eight spaces along the row (a faint line on
    grainy paper, which the shorter average leaves in pieces), for the skew and the staves.
    `smooth`: read the lines (skew, staves and the staff check's contrast) on the page blurred along its
    rows by this many spaces (`_along_rows`); the ink masks and the page returned stay unblurred.
    """
    ink, line_ink, bar_ink = masks

    def lines_of(page: np.ndarray, row_ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the page the lines are read on, their mask); `row_ink`: the page's row-smoothed ink."""
        lined = _along_rows(page, space, smooth)
        return lined, _line_mask(lined, normalize.binarize(lined, along="x") if smooth else row_ink,
                                 space, thickness, faint)

    lined, line_ink = lines_of(flat, line_ink)
    R = None
    strokes = normalize.horizontal_lines(line_ink, 2 * space)  # the skew's evidence, both ways of reading it
    bands = normalize.band_skews(line_ink, space, cfg.max_skew_deg + 3, lines=strokes)
    slopes = [deg for _, deg in bands]
    if len(bands) >= 3 and max(slopes) - min(slopes) >= cfg.curl_spread_deg:
        # a curled page: the lines' slope changes across the width and no rotation levels them all
        # (one fitted to the fuller half tilts the other further); each column is moved instead
        R = normalize.ColumnShift([c for c, _ in bands], slopes, flat.shape[1])
        angle = float(np.median(slopes))
        flat = R.apply(flat)
    else:
        angle = normalize.estimate_skew(line_ink, space, cfg.max_skew_deg, lines=strokes)
        if abs(angle) >= 0.05:
            R, size = normalize.rotation_matrix(flat.shape, angle)
            flat = cv2.warpAffine(flat, R[:2], size, flags=cv2.INTER_LINEAR, borderValue=255)
    if R is not None:
        ink, line_ink, bar_ink = _binarize_all(flat)
        lined, line_ink = lines_of(flat, line_ink)
    staves = find_staves(line_ink, space, thickness, cfg.strip_spaces, cfg.min_line_fill, gray=lined)
    return staves, angle, R, flat, ink, bar_ink


def _crossed_by_strokes(staves: list[Staff], bar_ink: np.ndarray, cover: float = 0.8) -> bool:
    """Whether at least half of `staves` have some column inked over `cover` of their height (in `bar_ink`,
    the page's ink smoothed along columns): a barline, or a stem or beamed chord across the staff. Music
    has them; five lines of text read as a staff on a page blurred along its rows have none (no stroke of a
    letter spans four lines of text)."""
    if not staves:
        return False
    crossed = 0
    for staff in staves:
        xs = np.arange(max(0, int(staff.x0)), min(bar_ink.shape[1], int(staff.x1)))
        if len(xs) == 0:
            continue
        tops = staff.top_at(xs)
        height = int(round(4 * staff.space))
        inked = np.zeros(len(xs))
        for dy in range(height + 1):
            inked += bar_ink[np.clip(np.round(tops + dy).astype(int), 0, bar_ink.shape[0] - 1), xs]
        crossed += bool((inked >= cover * (height + 1)).any())
    return 2 * crossed >= len(staves)


def _along_rows(page: np.ndarray, space: float, sigma_spaces: float) -> np.ndarray:
    """`page` blurred along its rows only, about as a Gaussian of `sigma_spaces` staff spaces would (0: as it
    is): three passes of a box filter two sigmas wide, whose cost does not grow with the blur as a Gaussian's does."""
    if sigma_spaces <= 0:
        return page
    width = max(1, int(round(2 * sigma_spaces * space)))
    for _ in range(3):
        page = cv2.blur(page, (width, 1))
    return page


def _line_mask(page: np.ndarray, base: np.ndarray, space: float, thickness: float, faint: bool) -> np.ndarray:
    """`base` (the row-smoothed ink) with the page's thin lines; `faint`: also thin lines averaged over
    three and eight spaces along the row, the longer cut nearer the paper (a dim photo's blurred lines, a
    dozen levels darker than paper under a grain of half that, stay in dashes at three)."""
    out = base | normalize.thin_lines(page, space, thickness)
    if faint:
        out |= normalize.thin_lines(page, space, thickness, length=max(5, int(round(3 * space))))
        out |= normalize.thin_lines(page, space, thickness, length=max(5, int(round(8 * space))), floor=6.0)
    return out


def _spacing_repeats(flat: np.ndarray, space: float) -> bool:
    """Whether the page's strongest vertical repeat of thin lines is `space` or twice it (lines a
    space or two apart), or there is no clear repeat to say otherwise. A spacing read off pixel
    noise matches neither (thirds are not taken: a grain's run spacing falls on a third of
    some repeat too easily)."""
    repeat = normalize.periodic_spacing(flat)
    if repeat is None:
        return True
    return any(abs(repeat[0] / (part * space) - 1) <= 0.1 for part in (1, 2))


def _staff_length(staves: list[Staff]) -> float:
    """How much staff a try found, in staff spaces (staves of a wrong spacing come out short or none)."""
    return float(sum((s.x1 - s.x0) / max(s.space, 1.0) for s in staves))


def _binarize_all(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ink masks of the flattened page: plain, smoothed along rows (faint staff lines), along columns (barlines)."""
    return normalize.binarize(flat), normalize.binarize(flat, along="x"), normalize.binarize(flat, along="y")


@dataclass
class _Group:
    staves: list[Staff]
    kind: str
    roles: list[str]
    confidence: float
    # the staves the box holds, first and last index: a voice + piano system (and an ensemble
    # with a clear piano pair) is boxed as its piano pair, the unit the transcription model reads;
    # None: all of them
    unit: tuple[int, int] | None = None

    def parts(self) -> list[tuple[list[Staff], bool]]:
        """The staves top to bottom in runs: (staves, whether the box holds them)."""
        a, b = self.unit or (0, len(self.staves) - 1)
        runs = [(self.staves[:a], False), (self.staves[a:b + 1], True), (self.staves[b + 1:], False)]
        return [(staves, boxed) for staves, boxed in runs if staves]


def _connectors(upper: Staff, lower: Staff, ink: np.ndarray, dark: np.ndarray | None = None) -> tuple[bool, int]:
    """(a stroke joins the staves at their left end, how many vertical strokes join them in all).

    A stroke joins them when it runs all the way from `upper`'s bottom line to `lower`'s top line,
    is thin, and (with `dark`, the page's darkness) is printed about as dark as their lines:
    the ghost of the other side of the sheet, showing through, draws faint barlines anywhere.
    """
    h, w = ink.shape
    space = (upper.space + lower.space) / 2
    a = int(max(0, min(upper.x0, lower.x0) - 3 * space))
    b = int(min(w, max(upper.x1, lower.x1) + space))
    a2, b2 = int(max(upper.x0, lower.x0) - 3 * space), int(min(upper.x1, lower.x1) + space)
    a, b = max(a, a2, 0), min(b, b2, w)
    if b - a < 2:
        return False, 0
    xs = np.arange(a, b)
    y_from = int(np.ceil(upper.bottom_at(xs).max())) + 2
    y_to = int(np.floor(lower.top_at(xs).min())) - 1
    if y_to - y_from < 2:
        return True, 1  # staves touch: nothing between them to check, so treat them as joined
    # the runs are read on a window reaching a few spaces further left, so that a solid dark
    # region cut by the window's edge (the black margin of a scan, the table beyond the sheet)
    # shows its full width rather than passing for a thin stroke
    pad = min(a, int(np.ceil(3 * space)))
    band = cv2.dilate(ink[y_from:y_to, a - pad:b], np.ones((1, 3), np.uint8))  # tolerate slight tilt
    filled = band.mean(axis=0) >= 0.85
    contrast = min(upper.contrast, lower.contrast) if dark is not None else 0.0  # of their lines (0: unmeasured)
    if contrast > 0:
        # the same test in grey levels: a column darker than the paper beside it (within three spaces,
        # so a shadow's step counts as paper) by the staff lines' contrast, in 85% of the gap's rows.
        # A faint start line on a grainy photo comes through the mask in pieces (the pixel cut sits in
        # the noise); its darkness over the gap's rows does not
        shade = cv2.dilate(dark[y_from:y_to, a - pad:b], np.ones((1, 3), np.uint8))
        k = int(0.15 * shade.shape[0])
        level = np.partition(shade, k, axis=0)[k][None, :]
        paper = cv2.morphologyEx(level, cv2.MORPH_OPEN, np.ones((1, int(3 * space) | 1), np.uint8))
        above = (level.astype(np.float32) - paper)[0]
        # and clear of the columns' own scatter: on a grainy photo whole columns of the gap come out dark
        centre = float(np.median(above))
        scatter = 1.4826 * float(np.median(np.abs(above - centre)))
        filled |= above >= max(contrast, centre + 5 * scatter)
    if not filled.any():
        return False, 0
    edges = np.diff(np.concatenate([[0], filled.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1) - pad, np.flatnonzero(edges == -1) - pad
    # barlines, the system start line and a brace are thin; a wider solid band is something else
    # (the dark edge of the sheet or the table beyond it, a shadow's rim). At the left end the brace
    # and the start line can run together into one stroke (a screenshot's 5-pixel staff space)
    left_end = max(upper.x0, lower.x0) + 3 * space  # x0 may reach a little left of the start line
    widest = np.where(a + starts <= left_end, 2.5 * space + 2, 1.5 * space + 2)
    thin = (ends - starts <= widest) & (starts >= 0)
    if a - pad == 0:
        thin &= starts > -pad  # a run from the page's edge: the margin, not a stroke
    starts, ends = starts[thin], ends[thin]
    if contrast > 0:
        # darker than the paper beside it (half a space to two spaces off either side) by a good
        # part of the staff lines' contrast: on a grainy or shadowed photo the mask's columns of
        # noise, and a shadow's darker paper, pass a test against the page's paper level
        need = 0.35 * contrast
        column = np.median(dark[y_from:y_to, a:b], axis=0)
        near, far = int(round(0.5 * space)), int(round(2 * space))
        strong = []
        for s0, e0 in zip(starts, ends):
            beside = np.concatenate([column[max(0, s0 - far):max(0, s0 - near)], column[e0 + near:e0 + far]])
            ground = float(np.median(beside)) if beside.size else 0.0
            strong.append(float(column[s0:e0].max()) - ground >= need)
        strong = np.asarray(strong, bool)
        starts, ends = starts[strong], ends[strong]
    if starts.size == 0:
        return False, 0
    at_left = a + starts <= left_end
    # away from the left end (the brace's place) only barlines count: thin, and on down through both
    # staves (in at least half of each one's rows). Stems of notes high over the lower staff (or low
    # under the upper) can bridge the gap between two close systems too, but they end in their own
    # staff and barely touch the other one
    rows = [np.arange(int(st.top) + 1, int(st.bottom)) for st in (upper, lower)]
    through = np.array([all(ink[r, a + s0:a + e0 + 1].any(axis=1).mean() >= 0.5 for r in rows)
                        for s0, e0 in zip(starts, ends)], bool)
    count = int((at_left | ((ends - starts <= 0.75 * space + 2) & through)).sum())
    return bool(at_left[0]), count


def _group_staves(staves: list[Staff], ink: np.ndarray, flat: np.ndarray | None = None) -> list[_Group]:
    """Join vertically adjacent staves that a vertical line connects; label the piano's two staves."""
    dark = paper_darkness(flat)[0] if flat is not None else None
    joins = [_connectors(staves[i], staves[i + 1], ink, dark) for i in range(len(staves) - 1)]
    links = [n for _, n in joins]
    braced = set(_braced_pairs(staves, ink)) if len(staves) > 1 else set()
    groups: list[list[int]] = [[0]]
    for i, (at_left, n) in enumerate(joins):
        horizontally_aligned = (min(staves[i].x1, staves[i + 1].x1) - max(staves[i].x0, staves[i + 1].x0)
                                > 0.5 * (staves[i + 1].x1 - staves[i + 1].x0))
        # the system start line joins a system's staves; elsewhere, stems that happen to line
        # up could fake one stroke, so away from the left end it takes two (shared barlines)
        if horizontally_aligned and (at_left or n >= 2 or i in braced):
            groups[-1].append(i + 1)
        else:
            groups.append([i + 1])

    out = []
    for idx in groups:
        members = [staves[i] for i in idx]
        conf = float(np.mean([s.score for s in members]))
        inner = [links[i] for i in idx[:-1]]
        if len(idx) == 1:
            kind, roles = "single", ["staff"]
        elif len(idx) == 2:
            kind, roles = "piano", ["piano-upper", "piano-lower"]
        elif len(idx) == 3:
            # the brace stands left of the piano pair alone: a mark crossing the gap between two of
            # the staves and not the other; else the share of each staff's rows it covers (a staff
            # bent by a curled photo spills past its rows, which that share then misses); without
            # either to tell, the piano pair shares barlines (many connectors), the voice only the
            # system start line
            kind = "voice+piano"
            crossed = [k for k in (0, 1) if idx[k] in braced]  # the gaps (below staff k) a brace crosses
            cover = _brace_cover(members, ink)
            if len(crossed) == 1:
                voice_below = crossed[0] == 0
            elif min(cover[1:]) - cover[0] >= 0.35:  # (staff lines and clefs cover a few rows of any staff)
                voice_below = False
            elif min(cover[:2]) - cover[2] >= 0.35:
                voice_below = True
            else:
                voice_below = inner[0] > inner[1]
            if voice_below:
                roles = ["piano-upper", "piano-lower", "voice"]
            else:
                roles = ["voice", "piano-upper", "piano-lower"]
        else:
            kind = "ensemble"
            roles = ["staff"] * len(idx)
            pairs = _braced_pairs(members, ink)
            if len(pairs) == 1:
                pair, clear = pairs[0], True  # the one mark at the left end that spans two staves alone
            else:
                best = int(np.argmax(inner[::-1]))  # prefer the lowest pair on ties
                pair = len(inner) - 1 - best
                # a pair joined by more barlines than any other: a piano
                clear = inner[pair] > max(n for k, n in enumerate(inner) if k != pair)
            roles[pair], roles[pair + 1] = "piano-upper", "piano-lower"
        unit = None
        if kind == "voice+piano":
            unit = (0, 1) if roles[0] == "piano-upper" else (1, 2)
        elif kind == "ensemble" and clear:
            unit = (pair, pair + 1)
        out.append(_Group(members, kind, roles, conf, unit))
    return out


def _join_by_layout(groups: list[_Group], ink: np.ndarray | None = None) -> list[_Group]:
    """Join lone staves into the piano systems the page's layout puts them in, where no stroke was
    seen to join them (grain, blur or a shadow breaks the system start line on a photo).

    The page's own piano pairs give the gap between a system's two staves. Two lone staves aligned
    at both ends, about that gap apart and clearly nearer each other than the staves around them,
    are a piano pair. A lone staff over a piano pair, no more than three such gaps off (a voice's
    lyrics widen the gap), is that system's voice when it is nearer to the pair than to anything
    above (with nothing above: within 1.15 such gaps), or when lyrics (read in `ink`) run under it:
    a song's systems can stand closer together than its voice to its piano. Then the page's songs
    give the gap between a voice and its piano, and a lone staff about that far over a pair (and
    nearer to it than to anything above) is a voice as well, and on such a page of songs so is any lone
    staff starting with a pair (a system's staves share its start line) within three pair gaps over it
    (words lost in the grain leave a wide gap); a staff set further in or out is a system of its own.
    Staves "aligned" start within three spaces of each other (a photo traces a left end two spaces off);
    lyrics, or no staff above, excuse a left end further off (the voice's opening rests, faint on a photo).
    A page without a joined piano pair is left as found: single staves may be all it holds.
    """
    pairs = [g.staves for g in groups if g.kind == "piano"]
    pairs += [g.staves[g.unit[0]:g.unit[1] + 1] for g in groups if g.kind != "piano" and g.unit]
    if not pairs:
        return groups
    inner = float(np.median([lower.top - upper.bottom for upper, lower in pairs]))
    if inner <= 0:
        return groups

    def aligned(a: list[Staff], b: list[Staff], left_spaces: float = 3.0) -> bool:
        sp = float(np.median([s.space for s in a + b]))
        return (abs(min(s.x0 for s in a) - min(s.x0 for s in b)) <= left_spaces * sp
                and abs(max(s.x1 for s in a) - max(s.x1 for s in b)) <= 3 * sp)

    def gap(upper: _Group | None, lower: _Group | None) -> float:
        if upper is None or lower is None:
            return float("inf")
        return lower.staves[0].top - upper.staves[-1].bottom

    def pair_of(a: _Group, b: _Group, before: _Group | None, after: _Group | None) -> bool:
        between = gap(a, b)
        return (a.kind == b.kind == "single" and aligned(a.staves, b.staves)
                and 0.6 * inner <= between <= 1.5 * inner
                and between <= 0.75 * min(gap(before, a), gap(b, after)))

    def voice_of(voice: _Group, piano: _Group, before: _Group | None) -> bool:
        between = gap(voice, piano)
        if voice.kind != "single" or piano.kind != "piano" or not 0 < between <= 3 * inner:
            return False
        staff = voice.staves[0]
        lyrics = ink is not None and (_lyrics_bottom(ink, staff, piano.staves[0].top, staff.space)
                                      > staff.bottom + 0.5 * staff.space)
        # with no staff above there is no neighbour to be nearer than: a voice then sits within
        # about a pair's gap of its piano (engravers set systems further apart than that)
        near = between <= 1.15 * inner if before is None else between < gap(before, voice)
        return aligned(voice.staves, piano.staves, 8.0 if lyrics or before is None else 3.0) and (lyrics or near)

    out = list(groups)
    i = 0
    while i + 1 < len(out):
        a, b = out[i], out[i + 1]
        if pair_of(a, b, out[i - 1] if i > 0 else None, out[i + 2] if i + 2 < len(out) else None):
            out[i:i + 2] = [_Group(a.staves + b.staves, "piano", ["piano-upper", "piano-lower"],
                                   (a.confidence + b.confidence) / 2)]
        i += 1
    i = 1
    while i < len(out):
        voice, piano = out[i - 1], out[i]
        if voice_of(voice, piano, out[i - 2] if i > 1 else None):
            out[i - 1:i + 1] = [_voice_over(voice, piano)]
        else:
            i += 1
    # the page's own songs give the gap between a voice and its piano: a lone staff over a piano pair at
    # about that gap is a voice too, though nothing else says so (its lyrics lost in a photo's grain)
    # (and on a page of songs any lone staff lined up straight over a piano pair is its voice, even where
    # the gap says nothing: a voice stands over its piano, never under it, and lyrics lost in a photo's
    # grain, or a song printed without words under some systems, leave that gap wide)
    sung = [g.staves[1].top - g.staves[0].bottom for g in out if g.kind == "voice+piano" and g.unit == (1, 2)]
    low, high = (0.8 * min(sung), 1.25 * max(sung)) if sung else (float("inf"), 0.0)
    songs = any(g.kind == "voice+piano" for g in out)
    i = 1
    while i < len(out):
        voice, piano = out[i - 1], out[i]
        between = gap(voice, piano)
        if (voice.kind == "single" and piano.kind == "piano" and aligned(voice.staves, piano.staves)
                and ((low <= between <= high and between < gap(out[i - 2] if i > 1 else None, voice))
                     or (songs and 0 < between <= 3 * inner))):
            out[i - 1:i + 1] = [_voice_over(voice, piano)]
        else:
            i += 1
    return out


def _voice_over(voice: _Group, piano: _Group) -> _Group:
    """A lone staff and the piano pair under it as one voice + piano system, boxed as the piano."""
    return _Group(voice.staves + piano.staves, "voice+piano", ["voice", "piano-upper", "piano-lower"],
                  (voice.confidence + 2 * piano.confidence) / 3, unit=(1, 2))


def _left_end(staves: list[Staff], ink: np.ndarray) -> np.ndarray | None:
    """The ink of the columns where a brace or bracket stands (left of where the staves start), the
    columns with ink down every staff (the system start line), and theirs beside them, blanked; None
    if there is no room."""
    h, w = ink.shape
    sp = float(np.median([st.space for st in staves]))
    a = int(max(0, min(st.x0 for st in staves) - 2.5 * sp))
    b = int(min(w, max(st.x0 for st in staves) + 0.6 * sp))
    bands = [(int(max(0, st.top)), int(min(h, st.bottom + 1))) for st in staves]
    if b - a < 2 or any(bottom - top < 2 for top, bottom in bands):
        return None
    rows = np.concatenate([np.arange(top, bottom) for top, bottom in bands])
    left = ink[:, a:b].astype(bool)
    # a slanted start line runs down two or three columns, none of them dark down 90% of the staves
    # alone: judge each column with its neighbours, and blank the neighbours too
    beside = np.ones((1, 3), np.uint8)
    line = cv2.dilate(left[rows].astype(np.uint8), beside).mean(axis=0) >= 0.9
    left[:, cv2.dilate(line.astype(np.uint8)[None], beside)[0] > 0] = False
    return left


def _brace_cover(staves: list[Staff], ink: np.ndarray) -> list[float]:
    """Per staff, the share of its rows with ink at its left end other than lines down all of them: a
    brace (or bracket) there covers its staves' rows, the system start line is down every staff."""
    left = _left_end(staves, ink)
    if left is None:
        return [0.0] * len(staves)
    return [float(left[int(max(0, st.top)):int(st.bottom + 1)].any(axis=1).mean()) for st in staves]


def _braced_pairs(staves: list[Staff], ink: np.ndarray) -> list[int]:
    """Indices i of the staves i, i + 1 that one mark at the system's left end (a brace) spans alone.

    A choir's bracket spans all its voices and the piano's brace its two staves; both cross the gaps
    between the staves they join, where the system start line (down every staff) is not counted. In
    an ensemble whose voices share barlines in pairs, the barline count cannot tell the piano; this can.
    """
    left = _left_end(staves, ink)
    if left is None:
        return []
    tops, bottoms = _strokes_down(left, float(np.median([st.space for st in staves])))
    crossed = [False]
    for upper, lower in zip(staves, staves[1:]):
        y0, y1 = int(np.ceil(upper.bottom)) + 1, int(np.floor(lower.top))
        crossed.append(y1 - y0 < 2 or bool(((tops <= y0 + 1) & (bottoms >= y1 - 1)).any()))
    crossed.append(False)
    return [i for i in range(len(staves) - 1) if crossed[i + 1] and not crossed[i] and not crossed[i + 2]]


def _strokes_down(mask: np.ndarray, space: float) -> tuple[np.ndarray, np.ndarray]:
    """(top rows, bottom rows) of the braces and brackets in `mask`: its parts a staff space tall or more
    and a quarter of a space wide, chained where one ends less than 1.5 spaces above the next in the
    same columns (a brace's thin cusp can break up on a blurred or grainy photo). Grain scattered over
    the mask puts ink in nearly every row, but its specks are too small to chain; what is left of a
    slanted system start line beside the columns blanked for it is too thin."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    stats = stats[1:][(stats[1:, cv2.CC_STAT_HEIGHT] >= space) & (stats[1:, cv2.CC_STAT_WIDTH] >= 0.25 * space)]
    x0, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, bottom = x0 + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    order = np.argsort(top)
    top, bottom, x0, x1 = top[order], bottom[order], x0[order], x1[order]  # copies: the chains rewrite them
    slack = 0.5 * space
    for i in range(1, len(top)):  # by top: each part takes over the extent of the chains it continues
        # (one array step per part: a grainy page's left end can hold thousands of parts)
        joined = (top[i] - bottom[:i] <= 1.5 * space) & (x0[i] < x1[:i] + slack) & (x0[:i] < x1[i] + slack)
        if joined.any():
            top[i], bottom[i] = min(top[i], top[:i][joined].min()), max(bottom[i], bottom[:i][joined].max())
    return top, bottom


@dataclass
class _Reach:
    """A staff left out of every box, as `_system_rects` sees it: how far down its own ink (its lyrics)
    reaches, and where its lines end."""

    x0: float
    top: float
    x1: float
    bottom: float
    space: float
    lines_bottom: float


def _box_units(groups: list[_Group], ink: np.ndarray) -> tuple[list[_Group], np.ndarray, list[_Reach]]:
    """(what each group's box holds, the ink to box it by, the staves left out) for `_system_rects`.

    A voice + piano system is boxed as its piano pair; the voice staff, reaching down over its lyrics,
    stays a neighbour whose ink no box takes. The strokes joining it to the piano (the system start
    line) are taken out of the ink, or the piano's notes would be one blob with the voice's.
    """
    units, left_out = [], []
    for g in groups:
        parts = g.parts()
        for (upper, _), (lower, _) in zip(parts, parts[1:]):
            ink = _without_joins(ink, upper[-1], lower[0])
        for k, (staves, holds) in enumerate(parts):
            if holds:
                a = g.unit[0] if g.unit else 0
                units.append(_Group(staves, g.kind, g.roles[a:a + len(staves)], g.confidence))
                continue
            for j, staff in enumerate(staves):
                below = staves[j + 1] if j + 1 < len(staves) else parts[k + 1][0][0] if k + 1 < len(parts) else None
                bottom = _lyrics_bottom(ink, staff, below.top if below is not None else staff.bottom + 9 * staff.space,
                                        staff.space)
                left_out.append(_Reach(staff.x0, staff.top, staff.x1, bottom, staff.space, staff.bottom))
    return units, ink, left_out


def _without_joins(ink: np.ndarray, upper: Staff, lower: Staff) -> np.ndarray:
    """`ink` (copied when changed) without the vertical strokes that cross the whole gap between two staves."""
    a, b = int(np.ceil(upper.bottom)) + 2, int(np.floor(lower.top)) - 1
    if b - a < 2:
        return ink
    joins = ink[a:b].mean(axis=0) >= 0.9
    if not joins.any():
        return ink
    ink = ink.copy()
    ink[a:b, joins] = 0
    return ink


def _lyrics_bottom(ink: np.ndarray, staff: Staff, next_top: float, sp: float) -> float:
    """The lower edge of the lyrics under `staff` (its bottom line when it has none) above `next_top`.

    A line of lyrics is text: letters (or, blurred, words) of about a staff space or two, their feet on
    one baseline across the staff, in the gap under it, side by side within words. Notes there
    (ledger-line notes of the staff below reaching up) have stems, or stand alone, and a row of
    accents over them stands apart; the letters of one marking (cresc.) are too short a line.
    Verses stack: a second baseline a little lower extends the lyrics.
    """
    h, w = ink.shape
    a, b = int(staff.bottom + 0.5 * sp), int(min(h, next_top - 0.5 * sp))
    xa, xb = int(max(0, staff.x0)), int(min(w, staff.x1))
    if b - a < 2 * sp or xb - xa < 10 * sp:
        return staff.bottom
    _, _, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(ink[a:b, xa:xb]), connectivity=8)
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    width, height = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    foot = top + height
    # letters: text-sized, not cut by the band's edges (stems and beams of the staves' own notes are)
    text = (height >= 0.45 * sp) & (height <= 2.8 * sp) & (width <= 12 * sp) & (top > 0) & (foot < b - a)
    left, top, width, foot = left[text], top[text], width[text], foot[text]
    if foot.size < 4:
        return staff.bottom
    tol = max(1.5, 0.2 * sp)
    bottom, last = None, None
    for base in np.sort(foot):
        if last is not None and (base <= last + sp or base > last + 4.5 * sp):
            continue  # the line found, or too far below it to be its next verse
        on = np.abs(foot - base) <= tol
        spread = (left[on] + width[on]).max() - left[on].min()
        if on.sum() < (4 if last is None else 3) or spread < 6 * sp:
            continue
        # text, not a row of accents or note heads: letters side by side within words, or (blurred)
        # whole words
        order = np.argsort(left[on])
        gaps = left[on][order][1:] - (left[on] + width[on])[order][:-1]
        if ((gaps > -0.2 * sp) & (gaps <= 0.4 * sp)).sum() < 2 and (width[on] >= 2.5 * sp).sum() < 3:
            continue
        line = float(np.median(foot[on]))
        hang = (foot >= line - tol) & (foot <= line + 0.9 * sp) & (top >= line - 2.8 * sp)  # descenders
        bottom, last = float(foot[hang].max()), line
    return a + bottom if bottom is not None else staff.bottom


def _despeckle(ink: np.ndarray, space: float, grainy_share: float = 2.0) -> np.ndarray:
    """The ink mask without isolated specks (dust, sensor noise): blobs far smaller than a dot.

    On a grainy page (more than `grainy_share` dot-sized blobs per 100 square staff spaces,
    tens of times what any engraving holds: its dots sit by the notes they belong to) the
    noise leaves specks up to a dot's size all over the paper, which would carry a box across
    the blank between systems. There a small blob (under a square space, at most 1.5 spaces
    across) stays only where it has a core that the majority of 5x5 neighbourhoods covers: a
    note head, a dot, a stem with its note do; the grain's specks and their loose clusters do not.
    Where a shadow's flattening has swollen the grain (over `grainy_share` per 100 square spaces
    even of the dot-sized blobs a tenth of a square space or more) the core must be solid, a spot
    0.7 of a space across that is 70% ink: a note head or a stem with its note has one, a swollen
    speck does not, and neither does a dot on its own or a thin fingering digit, which is why the
    stricter test waits for such pages.
    """
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    width, height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    small = max(2.0, 0.04 * space * space)
    side = max(2, int(0.35 * space))
    specks = (area < small) & (width <= side) & (height <= side)
    dots = (area < 0.3 * space * space) & (np.maximum(width, height) <= 0.8 * space)
    dots[0] = False
    grainy = grainy_share / 100 * ink.size / (space * space)
    if dots.sum() > grainy:
        if (dots & (area >= 0.1 * space * space)).sum() > grainy:
            window = max(5, int(round(0.7 * space)) | 1)
            core = cv2.blur(ink.astype(np.float32), (window, window)) >= 0.7
        else:
            core = cv2.medianBlur(ink * np.uint8(255), 5) > 0
        held = np.zeros(len(area), bool)
        held[np.unique(labels[core])] = True
        loose = (area < space * space) & (np.maximum(width, height) <= 1.5 * space)
        specks |= loose & ~held
    specks[0] = False
    if not specks[1:].any():
        return ink
    return np.where(specks[labels], 0, ink).astype(np.uint8)


def _speck_density(mask: np.ndarray, space: float) -> float:
    """Blobs under a square staff space per 100 square spaces of `mask`."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(mask), connectivity=8)
    small = int((stats[1:, cv2.CC_STAT_AREA] < space * space).sum())
    return 100.0 * small * space * space / max(1, mask.size)


def _above_the_grain(ink: np.ndarray, flat: np.ndarray, staves: list[Staff], blank_share: float,
                     smooth_spaces: float = 0.35, speck_density: float = 4.0,
                     speck_smooth_spaces: float = 0.25) -> np.ndarray:
    """The (despeckled) ink mask, cut again from a smoothed page when the plain cut fell into the paper's grain.

    On a dark, grainy photo the threshold can sit inside the paper's noise: the mask is then speckled
    all over, the specks join into blobs no despeckling parts from the music, and every box runs on
    into its neighbours. The blank between systems tells: rows over three spaces from every staff
    hold a few lyrics, marks and slurs (on the tune pages of seed 2, at most 9% of their pixels are
    ink), while a grain-flooded mask covers a quarter or more of them. Such a page is cut again
    after a Gaussian blur of `smooth_spaces` staff spaces, which averages the grain away and keeps
    note heads, beams, stems and braces (thin staff lines may go; they are found already).
    So is a page whose blank keeps over `speck_density` small blobs per 100 square spaces after
    despeckling (grain clumped into blobs with a core): they cover little of it, but lie close
    enough to chain a lone system's box out over the whole page. Such clumps average away under a
    lighter blur (`speck_smooth_spaces`), which keeps more of the thin slurs and ledger lines a box
    must reach; a flooded mask needs the heavier one (on the tune photos of seeds 2 and 4, the
    lighter blur lost two systems there).
    """
    if blank_share <= 0 or not staves:
        return ink
    h = ink.shape[0]
    far = np.ones(h, bool)
    for staff in staves:
        far[max(0, int(staff.top - 3 * staff.space)):max(0, int(np.ceil(staff.bottom + 3 * staff.space)))] = False
    x0, x1 = int(min(s.x0 for s in staves)), int(np.ceil(max(s.x1 for s in staves)))
    blank = ink[far, x0:x1]
    if blank.size == 0:
        return ink
    space = float(np.median([s.space for s in staves]))
    if blank.mean() > blank_share:
        sigma = smooth_spaces * space
    elif _speck_density(blank, space) > speck_density:
        sigma = speck_smooth_spaces * space
    else:
        return ink
    return _despeckle(normalize.binarize(cv2.GaussianBlur(flat, (0, 0), max(1.0, sigma))), space)


def _without_show_through(ink: np.ndarray, flat: np.ndarray, staves: list[Staff], share: float) -> np.ndarray:
    """The ink mask without what is fainter than the page's own print: the ghost of the sheet's other side.

    Show-through is the reverse's music, mirrored, blurred and a fraction as dark; the plain threshold
    takes its notes and staves as ink, and a box would grow over them into the next system. Nothing
    printed on the page is much fainter than its staff lines, the thinnest strokes on it, so a pixel
    under `share` of the staves' median line contrast (`Staff.contrast`, in the same paper-minus-pixel
    units) is not the page's ink. Pixels, not blobs: where the ghost touches the page's notes a blob
    holds both. Measured on the tune photo that showed it (MuseScore 47, seed 2): the ghost's blobs
    peak at 0.4-0.8 of the line contrast, the page's own at 1.2 or more.
    """
    contrasts = [s.contrast for s in staves if s.contrast > 0]
    if share <= 0 or not contrasts:
        return ink
    dark, noise = paper_darkness(flat)
    need = share * float(np.median(contrasts))
    if need <= 3 * noise:  # faint lines on noisy paper: the noise alone reaches that darkness
        return ink
    # the page's strokes keep their soft edges (the rim a box is measured to): what lies within two
    # pixels of their dark cores stays
    core = cv2.dilate((dark >= need).astype(np.uint8), np.ones((5, 5), np.uint8))
    return ink & core


def _column_span(mask: np.ndarray, row0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of `mask` (a band of rows starting at page row `row0`): whether it holds any pixel,
    its first row and the row after its last."""
    return mask.any(axis=0), row0 + mask.argmax(axis=0), row0 + mask.shape[0] - mask[::-1].argmax(axis=0)


def _system_rects(groups: list[_Group], ink: np.ndarray, cfg: DetectConfig,
                  left_out: list[_Reach] | None = None) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) per system in working coordinates: its staves and the ink attached to them.

    The ink is taken by connected component. A component crossing one system's staff band (notes,
    stems, beams, slurs, the brace, a ledger-line note whose stem reaches the staff) is that
    system's. A component outside every band (a whole note on ledger lines, a dynamic, a pedal
    mark, "cresc.", a tempo mark) goes to the nearer of the two staff bands around it, measured
    to the band's ink pixels in the same columns, so where the low notes of one system and the high
    notes of the next interlock each keeps its own. Loose components are placed nearest first, and a
    placed one counts as its system's ink (up to the middle of the gap) for those beyond it: a
    dynamic under a whole note on ledger lines goes with the note. Above the first and below the
    last system components are taken while they follow on from the system's ink with less than
    `blank_run_spaces` of blank between (a title or a footer further off stays out). Text that
    runs on past the staves' right end (a tempo or expression mark) widens the box to its end.
    Detected staves that belong to no system (`left_out`, e.g. a voice staff left out of a
    voice + piano box) hold their own ink, which then goes to no box, but for the next system's high
    notes reaching up among a voice's lyrics.
    """
    h, w = ink.shape
    n_sys = len(groups)
    if n_sys == 0:
        return []
    bands = []  # (x0, top, x1, bottom, space, owner or -1, bottom staff line)
    for i, g in enumerate(groups):
        sp = float(np.median([s.space for s in g.staves]))
        bands.append((min(s.x0 for s in g.staves), g.staves[0].top, max(s.x1 for s in g.staves),
                      g.staves[-1].bottom, sp, i, g.staves[-1].bottom))
    for r in left_out or []:
        bands.append((r.x0, r.top, r.x1, r.bottom, r.space, -1, r.lines_bottom))
    bands.sort(key=lambda b: (b[1] + b[3]) / 2)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    cx0, cy0 = stats[1:, cv2.CC_STAT_LEFT].astype(np.float64), stats[1:, cv2.CC_STAT_TOP].astype(np.float64)
    cx1, cy1 = cx0 + stats[1:, cv2.CC_STAT_WIDTH], cy0 + stats[1:, cv2.CC_STAT_HEIGHT]
    bx0 = np.array([b[0] for b in bands]) - cfg.left_margin_spaces * np.array([b[4] for b in bands])
    bx1 = np.array([b[2] for b in bands]) + cfg.right_margin_spaces * np.array([b[4] for b in bands])
    btop, bbot = np.array([b[1] for b in bands]), np.array([b[3] for b in bands])
    bsp = np.array([b[4] for b in bands])
    owner_of = np.array([b[5] for b in bands])
    blines = np.array([b[6] for b in bands])
    # (components, bands): overlaps the band's columns / rows
    in_x = (cx1[:, None] > bx0[None, :]) & (cx0[:, None] < bx1[None, :])
    crosses = in_x & (cy1[:, None] > btop[None, :]) & (cy0[:, None] < bbot[None, :])
    n_cross = crosses.sum(axis=1)
    tall = (cy1 - cy0) > (bbot - btop).max() + 16 * bsp.max()  # a page edge, a shadow's rim: no one's
    owner = np.full(cx0.size, -2)  # band index, -2: none
    one = (n_cross == 1) & ~tall
    owner[one] = np.argmax(crosses[one], axis=1)
    # a system's high note reaching up among the lyrics of the voice left out above it is the system's,
    # not the voice's (the lyrics' lower edge is no staff line): one crossing into the lyrics from the
    # system's staves, and one standing among them that reaches out below their letters by more than
    # half its height (a note on ledger lines, its stem up)
    firm = crosses & ((owner_of >= 0)[None, :] | (cy0[:, None] < blines[None, :]))
    into_lyrics = (n_cross == 2) & (firm.sum(axis=1) == 1) & ~tall
    owner[into_lyrics] = np.argmax(firm[into_lyrics], axis=1)
    band = np.maximum(owner, 0)
    below_lyrics = cy1 - bbot[band] > np.maximum(0.25 * bsp[band], 0.5 * (cy1 - cy0))
    for c in np.flatnonzero(one & (owner_of[band] < 0) & (cy0 >= blines[band]) & below_lyrics):
        under = np.flatnonzero((owner_of >= 0) & in_x[c] & (btop >= cy1[c]) & (btop < cy1[c] + 4 * bsp))
        if under.size:
            owner[c] = under[np.argmin(btop[under])]
    # the bands' own ink extent per column, for the distance of loose components
    ext_top = np.full((len(bands), w), np.inf)
    ext_bot = np.full((len(bands), w), -np.inf)
    for k in range(len(bands)):
        a, b = int(max(0, bx0[k])), int(min(w, bx1[k]))
        ext_top[k, a:b], ext_bot[k, a:b] = btop[k], bbot[k]
    # by pixel, not by the components' boxes: on a clean page the staff lines join a system's notes
    # into one component whose box spans every column at the height of its highest note
    band_of = np.concatenate([[-1], owner])
    for k in range(len(bands)):
        own = np.flatnonzero(owner == k)
        if not own.size:
            continue
        r0 = int(cy0[own].min())
        cols, top, bot = _column_span(band_of[labels[r0:int(cy1[own].max())]] == k, r0)
        ext_top[k, cols] = np.minimum(ext_top[k, cols], top[cols])
        ext_bot[k, cols] = np.maximum(ext_bot[k, cols], bot[cols])
    loose = np.flatnonzero((n_cross == 0) & in_x.any(axis=1) & ~tall)
    comp_boxes = (cx0, cy0, cx1, cy1)
    elongated = (cx1 - cx0) > 4 * (cy1 - cy0)  # slurs, ties, hairpins, lines; never a letter or a word
    centre = (btop + bbot) / 2
    # which bands lie above / below a component: any band within a few spaces of its columns
    # (a first system indented further than the next one is still above that one's text)
    wide = (cx1[:, None] > bx0[None, :] - 6 * bsp[None, :]) & (cx0[:, None] < bx1[None, :] + 6 * bsp[None, :])
    pad = int(2 * bsp.max())

    def nearest(c: int) -> tuple[float, int, int] | None:
        """(how near, band, the other band around it or -1) for a loose component, by the ink placed so far."""
        mid = (cy0[c] + cy1[c]) / 2
        above = np.flatnonzero((centre < mid) & wide[c])
        below = np.flatnonzero((centre > mid) & wide[c])
        a, b = int(cx0[c]), int(max(cx1[c], cx0[c] + 1))
        lo, hi = max(0, a - pad), min(w, b + pad)
        cands = []
        if above.size:
            k = above[-1]
            cands.append((cy0[c] - float(np.max(ext_bot[k, lo:hi])), cy0[c] - bbot[k], k))
        if below.size:
            k = below[0]
            cands.append((float(np.min(ext_top[k, lo:hi])) - cy1[c], btop[k] - cy1[c], k))
        if not cands:
            return None
        # nearest by the ink in these columns; the staff lines break a near tie
        score, k = min(((max(d, 0) + 0.25 * d_staff) / bsp[k], k) for d, d_staff, k in cands)
        other = [kk for _, _, kk in cands if kk != k]
        return score, int(k), int(other[0]) if other else -1

    # nearest first, and what is placed between two systems counts as its system's ink from then on:
    # a dynamic under a whole note on ledger lines (itself loose) follows the note, however near
    # the next system's own staff ink comes
    key = np.full(cx0.size, np.inf)
    for c in loose:
        r = nearest(c)
        if r is not None:
            key[c] = r[0]
    waiting = np.zeros(cx0.size, bool)
    waiting[loose] = np.isfinite(key[loose])
    heap = [(key[c], int(c)) for c in np.flatnonzero(waiting)]
    heapq.heapify(heap)
    while heap:
        score, c = heapq.heappop(heap)
        if not waiting[c] or score != key[c]:
            continue  # placed already, or a nearer key is queued
        waiting[c] = False
        _, k, other = nearest(c)
        # between two bands: that system's; above the top one / below the bottom one: the
        # system's only if it follows on from its ink (decided below)
        owner[c] = k + (10_000 if other >= 0 else 20_000)
        if other < 0:
            continue
        a, b, t = int(cx0[c]), int(cx1[c]), int(cy0[c])
        cols, top, bot = _column_span(labels[t:int(cy1[c]), a:b] == c + 1, t)
        # never past the middle of the gap, though: through a photo's grain, one speck after another,
        # a system would otherwise reach out to the next one's staff
        if centre[k] < centre[other]:
            bot = np.minimum(bot, (bbot[k] + btop[other]) / 2)
            ext_bot[k, a:b][cols] = np.maximum(ext_bot[k, a:b][cols], bot[cols])
        else:
            top = np.maximum(top, (bbot[other] + btop[k]) / 2)
            ext_top[k, a:b][cols] = np.minimum(ext_top[k, a:b][cols], top[cols])
        # the components waiting in these columns nearby may now be nearer to it
        reach = 6 * bsp[k]
        near = np.flatnonzero(waiting & (cx1 > a - pad) & (cx0 < b + pad)
                              & (cy1 > cy0[c] - reach) & (cy0 < cy1[c] + reach))
        for n_c in near:
            r = nearest(n_c)
            if r is not None and r[0] < key[n_c] - 1e-9:
                key[n_c] = r[0]
                heapq.heappush(heap, (r[0], int(n_c)))
    rects = []
    for i in range(n_sys):
        k = int(np.flatnonzero(owner_of == i)[0])
        sp = bsp[k]
        x0, x1 = max(0.0, bx0[k]), min(float(w), bx1[k])
        y0, y1 = btop[k], bbot[k]
        own = np.flatnonzero(owner == k)
        if own.size:
            y0, y1 = min(y0, cy0[own].min()), max(y1, cy1[own].max())
        free = np.flatnonzero((owner == k + 10_000) | (owner == k + 20_000))
        edge = owner == k + 20_000
        gap = cfg.blank_run_spaces * sp
        reach = cfg.edge_margin_spaces * 2 * sp
        # between systems everything assigned is taken; above the first / below the last, what
        # follows on from the system's ink
        take = []
        over_staves = np.flatnonzero((cy1 <= btop[k]) & ~tall)  # with what runs on past the staves' ends
        for c in free[np.argsort(-cy1[free])]:  # above: nearest first
            if cy1[c] <= btop[k]:
                if edge[c] and (cy1[c] < y0 - gap or cy0[c] < btop[k] - reach):
                    continue
                credits = _credits_line_bottom(c, over_staves, comp_boxes, elongated, bands[k][0], bands[k][2],
                                               sp) if edge[c] else None
                if credits is not None:
                    # the composer's / arranger's line: it, all above it and the words that reach up beside
                    # it (a subtitle centred lower than the names) are the page's heading; a slur is not
                    take = [t for t in take if cy0[t] >= credits - 0.5 * sp or elongated[t]]
                    break
                take.append(c)
                y0 = min(y0, cy0[c])
        for c in free[np.argsort(cy0[free])]:  # below: nearest first
            if cy0[c] >= bbot[k] - 1:
                if edge[c] and (cy0[c] > y1 + gap or cy1[c] > bbot[k] + reach):
                    continue
                take.append(c)
                y1 = max(y1, cy1[c])
        taken = np.asarray(take, int)
        mine = np.concatenate([own, taken])
        # the box's height from what was kept (y0 / y1 above only steered the chaining); a speck (a dot's
        # size: grain, dust) widens it only beside the system's other ink: on a photo's grain one is
        # assigned in every gap, and took the box out to the middle of it
        speck = ((cx1[taken] - cx0[taken]) < 0.8 * sp) & ((cy1[taken] - cy0[taken]) < 0.6 * sp)
        body = np.concatenate([own, taken[~speck]])
        y0, y1 = min([btop[k]] + [cy0[c] for c in body]), max([bbot[k]] + [cy1[c] for c in body])
        near = taken[speck & (cy0[taken] >= y0 - sp) & (cy1[taken] <= y1 + sp)]
        y0, y1 = min([y0] + [cy0[c] for c in near]), max([y1] + [cy1[c] for c in near])
        if mine.size:
            # text running on past the staves' right end: words, dashes, chained while close
            right = x1
            cand = mine[cx0[mine] < x1]
            if cand.size:
                right = max(right, float(cx1[cand].max()))
            rest = np.flatnonzero((cx0 >= x1) & (cy1 > y0) & (cy0 < y1) & (n_cross <= 1) & ~tall)
            for c in rest[np.argsort(cx0[rest])]:
                if cx0[c] > right + 1.5 * sp:
                    break
                right = max(right, float(cx1[c]))
            x1 = min(float(w), max(x1, right + 0.25 * sp))
        margin = 0.5 * sp
        # never past a neighbour's staff lines: on a grainy photo the noise chains specks into
        # blobs that cross one staff and run on over the blank and the next system
        over = (np.minimum(bx1, x1) - np.maximum(bx0, x0)) > 0.3 * np.minimum(bx1 - bx0, x1 - x0)
        over[k] = False
        lo = float(blines[over & (centre < centre[k])].max(initial=-1.0)) + 1
        hi = float(btop[over & (centre > centre[k])].min(initial=h + 1.0)) - 1
        rects.append([x0, max(lo, y0 - margin), x1, min(hi, y1 + margin)])
    return [tuple(r) for r in rects]


def _credits_line_bottom(c: int, above: np.ndarray, boxes: tuple, elongated: np.ndarray, staves_x0: float,
                         staves_x1: float, sp: float) -> float | None:
    """The lower edge of the line of credits a loose component over a page's first system lies on, or
    None where it lies on none.

    A composer's, arranger's or editor's name is set flush with the staves' right end, in a row of
    its own above the first system; a tempo or expression mark starts at the left or over its note,
    and may run on past the staves' end. So a row of letters (among `above`, every component over
    the staves) whose last block of words ends at the staves' right end and starts right of their
    middle is the page's heading, with whatever shares its row ("Transcribed by ..." on the left).
    `elongated` marks the components too long and thin to be letters (slurs, lines).
    """
    x0, y0, x1, y1 = boxes
    h = y1 - y0
    if h[c] > 3 * sp or elongated[c]:
        return None
    overlap = np.minimum(y1[above], y1[c]) - np.maximum(y0[above], y0[c])
    row = above[(overlap > 0.5 * np.minimum(h[above], h[c])) & (h[above] <= 3 * sp) & ~elongated[above]]
    if row.size < 4:
        return None
    row = row[np.argsort(-x1[row])]
    if abs(x1[row[0]] - staves_x1) > 2 * sp:
        return None
    left, block = x0[row[0]], [row[0]]
    for r in row[1:]:
        if x1[r] < left - 1.5 * sp:
            break
        left = min(left, x0[r])
        block.append(r)
    width = x1[row[0]] - left
    if len(block) >= 4 and width >= 5 * sp and left > (staves_x0 + staves_x1) / 2:
        return float(y1[block].max())
    return None


def _to_page_box(group: _Group, rect, to_page, page_wh, curved: bool = False) -> SystemBox:
    """The system's box, its staves' boxes and its quad (the crop's corners) in page pixels. On a
    flattened curl (`curved`) a straight edge of the working image is a curve on the page: edges are
    sampled, and the quad is the page-aligned box around them."""
    pw, ph = page_wh

    def outline(x0, y0, x1, y1) -> np.ndarray:
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        if not curved:
            return to_page(corners)
        t = np.linspace(0.0, 1.0, 17)[:, None]
        edges = np.concatenate([corners[i] + t * (corners[(i + 1) % 4] - corners[i]) for i in range(4)])
        pts = to_page(edges)
        (ax, ay), (bx, by) = pts.min(axis=0), pts.max(axis=0)
        return np.array([[ax, ay], [bx, ay], [bx, by], [ax, by]])

    quad = outline(*rect)
    staves = []
    for staff, role in zip(group.staves, group.roles):
        pts = outline(staff.x0, staff.top, staff.x1, staff.bottom)
        mid = (staff.x0 + staff.x1) / 2
        top, bottom = to_page(np.array([[mid, staff.top], [mid, staff.bottom]], np.float64))
        space_page = float(np.linalg.norm(bottom - top) / 4.0)  # staff height is 4 spaces
        staves.append(StaffBox(*_clip_box(pts, pw, ph), space=round(space_page, 2), role=role))
    bx0, by0, bx1, by1 = _clip_box(quad, pw, ph)
    return SystemBox(bx0, by0, bx1, by1, confidence=round(group.confidence, 3), staves=staves,
                     kind=group.kind, quad=[[round(float(x), 1), round(float(y), 1)] for x, y in quad])


def _clip_box(pts: np.ndarray, pw: int, ph: int) -> tuple[float, float, float, float]:
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return (round(float(np.clip(x0, 0, pw)), 1), round(float(np.clip(y0, 0, ph)), 1),
            round(float(np.clip(x1, 0, pw)), 1), round(float(np.clip(y1, 0, ph)), 1))


def crop_system(page: Image.Image | np.ndarray, box: SystemBox) -> Image.Image:
    """The system upright (deskewed, perspective removed) as a grayscale PIL image, white outside the page."""
    gray = normalize.to_gray_array(page)
    if len(box.quad) == 4:
        # corners off the page are clipped to it: a quad is client input, and an unclipped 20000-px one
        # made a warp of 20000 x 20000 pixels (15 GB) from an ordinary page
        height, width = gray.shape[:2]
        quad = np.clip(np.asarray(box.quad, np.float64), [0, 0], [width, height]).astype(np.float32)
        out_w = int(round(np.linalg.norm(quad[1] - quad[0])))
        out_h = int(round(np.linalg.norm(quad[3] - quad[0])))
        if out_w >= 1 and out_h >= 1:
            dst = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], np.float32)
            T = cv2.getPerspectiveTransform(quad, dst)
            crop = cv2.warpPerspective(gray, T, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=255)
            return Image.fromarray(crop, mode="L")
    x0, y0, x1, y1 = (int(round(v)) for v in (box.x0, box.y0, box.x1, box.y1))
    return Image.fromarray(gray[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)], mode="L")
