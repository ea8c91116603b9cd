"""Find every system on a page: `detect_systems(page) -> DetectionResult`, `crop_system(page, box)`.

Pipeline: grayscale -> (photo) page outline to a rectangle -> background-flattened binarization ->
staff spacing from run lengths -> deskew by projection energy -> five-line staves in strips ->
staves joined into systems by vertical lines crossing the gap between them (system start line,
shared barlines, brace) -> boxes grown into the space between systems -> page coordinates.
"""

from __future__ import annotations

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


def detect_systems(image: Image.Image | np.ndarray, cfg: DetectConfig | None = None) -> DetectionResult:
    """Systems on one page image, in reading order (top to bottom, then left to right)."""
    cfg = cfg or DetectConfig()
    gray = normalize.to_gray_array(image)
    h, w = gray.shape
    result = DetectionResult(boxes=[], page_size=(w, h), skew_angle=0.0)
    if min(h, w) < 32:
        result.messages.append(f"page is too small ({w}x{h} pixels) to hold staves")
        return result

    # working resolution: large pages are shrunk, but never so far that staff lines merge
    scale = min(1.0, cfg.work_max_side / max(h, w))
    for _ in range(2):
        M = np.diag([scale, scale, 1.0])
        work = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        quad = normalize.find_page_quad(work) if cfg.perspective else None
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
        scale = min(1.0, scale * (cfg.min_work_space + 2) / spacing[0])
    if spacing is None:
        result.messages.append("no staff lines found: the page looks blank")
        return result
    space, thickness = spacing
    if thickness > cfg.max_line_thickness * space:
        # thick bands: blurred staff lines (the smoothed mask widens them), or lines of text; the
        # pixel-wise mask, cut nearer the lines' core, has the last word (text is then left to
        # the staff check, which wants lines unbroken by the gaps between letters)
        plain = normalize.estimate_spacing(ink)
        if plain is None or plain[1] > cfg.max_line_thickness * space:
            result.messages.append(f"no staff lines found: the most common horizontal strokes are {thickness:.0f}px "
                                   f"thick every {space:.0f}px, like lines of text")
            return result
        thickness = plain[1]

    line_ink |= normalize.thin_lines(flat, space, thickness)
    angle = normalize.estimate_skew(line_ink, space, cfg.max_skew_deg)
    if abs(angle) >= 0.05:
        R, size = normalize.rotation_matrix(work.shape, angle)
        flat = cv2.warpAffine(flat, R[:2], size, flags=cv2.INTER_LINEAR, borderValue=255)
        ink, line_ink, bar_ink = _binarize_all(flat)
        line_ink |= normalize.thin_lines(flat, space, thickness)
        M = R @ M
    result.skew_angle = angle

    staves = find_staves(line_ink, space, thickness, cfg.strip_spaces, cfg.min_line_fill, gray=flat)
    if not staves:
        result.messages.append("no five-line staves found on the page (text or blank page?)")
        return result
    groups = _group_staves(staves, bar_ink, flat)
    rects = _system_rects(groups, _despeckle(ink, space), cfg)
    inverse = np.linalg.inv(M)
    for group, rect in zip(groups, rects):
        result.boxes.append(_to_page_box(group, rect, ink, inverse, (w, h)))
    result.boxes.sort(key=lambda b: (round(b.y0 / max(space / scale, 1) / 4), b.x0))
    kinds = {}
    for b in result.boxes:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    result.messages.append(f"{len(result.boxes)} systems ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                           f"staff space {space / scale:.1f}px, skew {angle:.2f} deg"
                           + (", page outline straightened" if quad is not None else ""))
    return result


def _binarize_all(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ink masks of the flattened page: plain, smoothed along rows (faint staff lines), along columns (barlines)."""
    return normalize.binarize(flat), normalize.binarize(flat, along="x"), normalize.binarize(flat, along="y")


@dataclass
class _Group:
    staves: list[Staff]
    kind: str
    roles: list[str]
    confidence: float


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
    band = cv2.dilate(ink[y_from:y_to, a:b], np.ones((1, 3), np.uint8))  # tolerate slight tilt
    filled = band.mean(axis=0) >= 0.85
    if not filled.any():
        return False, 0
    edges = np.diff(np.concatenate([[0], filled.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # barlines, the system start line and a brace are thin; a wider solid band is something else
    # (the dark edge of the sheet or the table beyond it, a shadow's rim)
    thin = ends - starts <= 1.5 * space + 2
    starts, ends = starts[thin], ends[thin]
    if dark is not None and min(upper.contrast, lower.contrast) > 0:
        need = 0.35 * min(upper.contrast, lower.contrast)
        gap = dark[y_from:y_to, a:b]
        strong = [float(np.median(gap[:, s0:e0], axis=0).max()) >= need for s0, e0 in zip(starts, ends)]
        starts = starts[np.asarray(strong, bool)]
    if starts.size == 0:
        return False, 0
    left_end = max(upper.x0, lower.x0) + 3 * space  # x0 may reach a little left of the start line
    return bool(a + starts[0] <= left_end), int(starts.size)


def _group_staves(staves: list[Staff], ink: np.ndarray, flat: np.ndarray | None = None) -> list[_Group]:
    """Join vertically adjacent staves that a vertical line connects; label the piano's two staves."""
    dark = paper_darkness(flat)[0] if flat is not None else None
    joins = [_connectors(staves[i], staves[i + 1], ink, dark) for i in range(len(staves) - 1)]
    links = [n for _, n in joins]
    groups: list[list[int]] = [[0]]
    for i, (at_left, n) in enumerate(joins):
        horizontally_aligned = (min(staves[i].x1, staves[i + 1].x1) - max(staves[i].x0, staves[i + 1].x0)
                                > 0.5 * (staves[i + 1].x1 - staves[i + 1].x0))
        # the system start line joins a system's staves; elsewhere, stems that happen to line
        # up could fake one stroke, so away from the left end it takes two (shared barlines)
        if (at_left or n >= 2) and horizontally_aligned:
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
            # the piano pair shares barlines (many connectors); the voice only the system start line
            kind = "voice+piano"
            if inner[0] > inner[1]:
                roles = ["piano-upper", "piano-lower", "voice"]
            else:
                roles = ["voice", "piano-upper", "piano-lower"]
        else:
            kind = "ensemble"
            roles = ["staff"] * len(idx)
            best = int(np.argmax(inner[::-1]))  # prefer the lowest pair on ties
            pair = len(inner) - 1 - best
            roles[pair], roles[pair + 1] = "piano-upper", "piano-lower"
        out.append(_Group(members, kind, roles, conf))
    return out


def _despeckle(ink: np.ndarray, space: float) -> np.ndarray:
    """The ink mask without isolated specks (dust, sensor noise): blobs far smaller than a dot."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    small = max(2.0, 0.04 * space * space)
    side = max(2, int(0.35 * space))
    specks = ((stats[:, cv2.CC_STAT_AREA] < small) & (stats[:, cv2.CC_STAT_WIDTH] <= side)
              & (stats[:, cv2.CC_STAT_HEIGHT] <= side))
    specks[0] = False
    if not specks[1:].any():
        return ink
    return np.where(specks[labels], 0, ink).astype(np.uint8)


def _row_profile(ink: np.ndarray, x0: float, x1: float) -> np.ndarray:
    a, b = int(max(0, x0)), int(min(ink.shape[1], x1))
    return ink[:, a:max(b, a + 1)].sum(axis=1)


def _system_rects(groups: list[_Group], ink: np.ndarray, cfg: DetectConfig) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) per system in working coordinates, grown into the space around the staves.

    Between two systems the boundary is the middle of the widest blank band in the gap (or the
    emptiest row), so notes above/below a staff go with their own system. Above the first and
    below the last system, the box follows the ink up to `edge_margin_spaces` staff spaces.
    """
    h, w = ink.shape
    cores = []
    for g in groups:
        sp = float(np.median([s.space for s in g.staves]))
        x0 = min(s.x0 for s in g.staves) - cfg.left_margin_spaces * sp
        x1 = max(s.x1 for s in g.staves) + cfg.right_margin_spaces * sp
        cores.append([max(0.0, x0), g.staves[0].top, min(float(w), x1), g.staves[-1].bottom, sp])

    rects = []
    for i, (x0, top, x1, bottom, sp) in enumerate(cores):
        profile = _row_profile(ink, x0, x1)
        quiet = profile <= max(1, 0.002 * (x1 - x0))

        def split(upper_bottom: float, lower_top: float) -> float:
            a, b = int(np.ceil(upper_bottom)), int(np.floor(lower_top))
            if b - a < 2:
                return (upper_bottom + lower_top) / 2
            q = quiet[a:b].astype(np.int8)
            if q.any():
                edges = np.diff(np.concatenate([[0], q, [0]]))
                starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
                k = int(np.argmax(ends - starts))
                return a + (starts[k] + ends[k]) / 2
            seg = profile[a:b].astype(np.float64)
            centre_bias = np.abs(np.arange(b - a) - (b - a) / 2) / (b - a)
            return a + float(np.argmin(seg / max(seg.max(), 1) + 0.3 * centre_bias))

        def grow(edge: float, direction: int) -> float:
            limit = cfg.edge_margin_spaces * sp
            blank_needed = int(cfg.blank_run_spaces * sp)
            y, blank, last_ink = int(edge), 0, edge
            while abs(y - edge) < limit and 0 <= y + direction < h:
                y += direction
                if quiet[y]:
                    blank += 1
                    if blank >= blank_needed:
                        break
                else:
                    blank = 0
                if profile[y] > 0:  # a near-blank row still holds the tip of a slur or a dot
                    last_ink = y
            return float(np.clip(last_ink + direction * 0.5 * sp, 0, h))

        def shrink(boundary: float, edge: float, direction: int) -> float:
            """From a split row towards the staff: to the first ink, less half a space of margin."""
            a, b = sorted((int(round(boundary)), int(round(edge))))
            rows = np.flatnonzero(profile[max(a, 0):max(b, 0)] > 0) + max(a, 0)
            if rows.size == 0:
                return float(edge) + direction * 0.5 * sp
            first = rows[0] if direction < 0 else rows[-1]
            moved = first + direction * 0.5 * sp
            return float(max(moved, boundary) if direction < 0 else min(moved, boundary))

        if i > 0:
            y0 = shrink(split(cores[i - 1][3], top), top, -1)
        else:
            y0 = grow(top, -1)
        if i + 1 < len(cores):
            y1 = shrink(split(bottom, cores[i + 1][1]), bottom, +1)
        else:
            y1 = grow(bottom, +1)
        rects.append((x0, y0, x1, y1))
    return rects


def _to_page_box(group: _Group, rect, ink: np.ndarray, inverse: np.ndarray, page_wh) -> SystemBox:
    x0, y0, x1, y1 = rect
    pw, ph = page_wh
    quad = normalize.apply_points(inverse, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    staves = []
    for staff, role in zip(group.staves, group.roles):
        pts = normalize.apply_points(inverse, [[staff.x0, staff.top], [staff.x1, staff.top],
                                               [staff.x1, staff.bottom], [staff.x0, staff.bottom]])
        space_page = float(np.linalg.norm(pts[3] - pts[0]) / 4.0)  # staff height is 4 spaces
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
