"""Scan and phone-photo simulation for clean system images, applied on the fly at training time.

The renderer gives perfect grayscale systems (uint8, paper = 255); the model is judged on
photos and scans it never saw. Degradation is split in two parts:

* geometry (``crop``, ``neighbours``, ``warp``, ``curl``): where the music lands in the
  picture. It is applied to both the degraded image and the clean target, so the two stay
  aligned pixel for pixel (the MAE reconstructs the clean image from the degraded one);
* appearance (``ink`` ... ``binarize``): what paper, light, lens, sensor and file format do
  to the pixels. Only the degraded image gets it.

A `Plan` (which steps, with which parameters) is drawn first by `sample_plan`; per-pixel
random fields (noise, grain, stains) are drawn from the same generator while applying it.
Everything random comes from the numpy Generator passed in, so a seed gives the same pixels.
Two styles: a flatbed *scan* (mild skew, even light, maybe binarized) or a phone *photo*
(perspective, page curl, shadows, motion blur, camera tone curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from acai_omr.config import DegradeConfig

__all__ = ["Plan", "sample_plan", "degrade", "degrade_pair", "degrade_with_points", "apply_geometry",
           "apply_appearance", "as_gray"]

Step = tuple[str, dict]

# Hard ceilings so that strength > 1 stays physically plausible and the picture stays readable.
MAX_PAD_VERTICAL = 0.45  # per side, fraction of the height (keeps the output below 1.9x the height)
MAX_PAD_HORIZONTAL = 0.1
MAX_CLIP_FRACTION = 0.025  # a too-tight box never cuts more than this of a side
MAX_STRETCH = 0.3
# OpenCV's remap/warpPerspective refuse sides of 32767 px or more; a long **kern measure can render
# wider than that, and loose crops and stretch grow an image further. Larger inputs are shrunk first.
MAX_SIDE = 16384
MAX_PERSPECTIVE = 0.15
MAX_CURL = 0.15
SCAN_SKEW = 0.15  # scans get this share of the photo perspective: a barely visible skew
SCAN_LIGHTING = 0.35  # a scanner lamp is far more even than a room
SCAN_NOISE = 0.5
MIN_LOWRES_SCALE = 0.25
MIN_JPEG_QUALITY = 5
P_SHARPEN = 0.35  # phones sharpen; no config field, it only adds halos


@dataclass
class Plan:
    """The steps one degradation will run, each ``(name, params)``, in order."""

    style: str  # "scan", "photo" or "clean"
    geometry: list[Step] = field(default_factory=list)
    appearance: list[Step] = field(default_factory=list)


# ------------------------------------------------------------------------------ public API


def as_gray(image: np.ndarray) -> np.ndarray:
    """Validate an input image and return it as 2-D uint8 grayscale (BGR/BGRA converted with cv2)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2 and image.size:
        return image
    if image.ndim == 3 and image.size:
        channels = image.shape[2]
        if channels == 1:
            return np.ascontiguousarray(image[:, :, 0])
        if channels == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if channels == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected an image of shape (H, W) or (H, W, 1|3|4), got shape {image.shape}")


def degrade(image: np.ndarray, rng: np.random.Generator, cfg: DegradeConfig | None = None,
            plan: Plan | None = None) -> np.ndarray:
    """A scanned- or photographed-looking copy of a clean system image (uint8, 2-D).

    ``plan``: steps already drawn from ``rng`` with `sample_plan` (rng then only feeds the
    per-pixel random fields); by default one is drawn here from ``cfg``.
    """
    return _run(image, rng, cfg, plan)[0]


def degrade_pair(image: np.ndarray, rng: np.random.Generator,
                 cfg: DegradeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, clean): the image `degrade` gives for this rng, and the same geometry without damage."""
    return _run(image, rng, cfg, None)[:2]


def degrade_with_points(image: np.ndarray, points: np.ndarray, rng: np.random.Generator,
                        cfg: DegradeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, moved points): the image `degrade` gives for this rng, and where the geometry took
    each (x, y) of ``points`` [N, 2] (pixel coordinates, 0 at the image's top-left corner). Points
    may land outside the output when a too-tight box cut them off."""
    degraded, _, moved = _run(image, rng, cfg, None, np.asarray(points, np.float64).reshape(-1, 2))
    return degraded, moved


def sample_plan(rng: np.random.Generator, cfg: DegradeConfig, height: int, width: int) -> Plan:
    """Draw which effects one image gets, and how strongly, for an input of this size."""
    if not cfg.enabled or (cfg.p_clean > 0 and rng.random() < cfg.p_clean):
        return Plan("clean")
    s = cfg.strength
    photo = bool(rng.random() < cfg.p_photo)
    plan = Plan("photo" if photo else "scan")

    crop = _plan_crop(rng, cfg, s, height, width)
    plan.geometry.append(("crop", crop))
    if rng.random() < cfg.p_neighbour:
        neighbours = _plan_neighbours(rng, crop, height, width)
        if neighbours:
            plan.geometry.append(("neighbours", neighbours))
    warp = _plan_warp(rng, cfg, s, photo)
    if warp:
        plan.geometry.append(("warp", warp))
    if photo and rng.random() < cfg.p_curl:
        plan.geometry.append(("curl", _plan_curl(rng, cfg, s)))

    steps = plan.appearance
    if rng.random() < cfg.p_ink:
        steps.append(("ink", _plan_ink(rng, cfg, s)))
    if rng.random() < cfg.p_bleed:
        steps.append(("bleed", _plan_bleed(rng, cfg, s)))
    if rng.random() < cfg.p_paper:
        steps.append(("paper", _plan_paper(rng, cfg, s)))
    if rng.random() < cfg.p_lighting:
        steps.append(("lighting", _plan_lighting(rng, cfg, s, photo)))
    if photo and rng.random() < cfg.p_shadow:
        steps.append(("shadow", _plan_shadow(rng, cfg, s)))
    if rng.random() < cfg.p_blur:
        steps.append(("blur", _plan_blur(rng, cfg, s)))
    if rng.random() < cfg.p_defocus:
        steps.append(("defocus", {"radius": _amount(rng, cfg.max_defocus_px, s, 0.3),
                                  "uneven": bool(photo and rng.random() < 0.5)}))
    if photo and rng.random() < cfg.p_motion:
        steps.append(("motion", {"length": max(1.0, _amount(rng, cfg.max_motion_px, s, 0.2)),
                                 "angle": float(rng.uniform(0, 180))}))
    if rng.random() < cfg.p_lowres:
        steps.append(("lowres", _plan_lowres(rng, cfg, s)))
    if rng.random() < cfg.p_noise:
        steps.append(("noise", _plan_noise(rng, cfg, s, photo)))
    if photo and rng.random() < P_SHARPEN:
        steps.append(("sharpen", {"sigma": float(rng.uniform(0.8, 2.0)), "amount": _amount(rng, 0.8, s, 0.3)}))
    steps.append(("gamma", _plan_gamma(rng, s, photo)))
    if rng.random() < cfg.p_jpeg:
        low = int(np.clip(100 - (100 - cfg.min_jpeg_quality) * s, MIN_JPEG_QUALITY, 95))
        steps.append(("jpeg", {"quality": int(rng.integers(low, 96))}))
    if not photo and rng.random() < cfg.p_binarize:
        steps.append(("binarize", _plan_binarize(rng)))  # always last: the output is pure 0/255
    return plan


def apply_geometry(image: np.ndarray, steps: list[Step]) -> np.ndarray:
    """Run the geometry steps on a uint8 image (a new array; the input is untouched)."""
    return _geometry(image, steps, None)[0]


def apply_geometry_with_points(image: np.ndarray, steps: list[Step],
                               points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, points) after the geometry steps, the whole image taken as the system's box; points
    [N, 2] (x, y) move as the pixels under them do (e.g. a page's curl, with its ground truth)."""
    return _geometry(image, steps, np.asarray(points, np.float64).reshape(-1, 2))


def _geometry(image: np.ndarray, steps: list[Step], points: np.ndarray | None):
    """(image, points) after the geometry steps; points [N, 2] (x, y) move as the pixels under them do."""
    box = (0, 0, image.shape[1], image.shape[0])  # where the system itself lies in the canvas
    out = image.copy()
    for name, params in steps:
        out, box, points = GEOMETRY[name](out, box, params, points)
    return out, points


def apply_appearance(image: np.ndarray, rng: np.random.Generator, steps: list[Step]) -> np.ndarray:
    """Run the appearance steps on a uint8 image (a new uint8 array; the input is untouched)."""
    x = image
    for name, params in steps:
        if name in UINT8_STEPS:
            x = _to_uint8(x)
        elif x.dtype == np.uint8:
            x = x.astype(np.float32) * np.float32(1 / 255)
        x = APPEARANCE[name](x, rng, params)
    out = _to_uint8(x)
    return out.copy() if out is image else out


def _run(image, rng, cfg, plan, points=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    gray = as_gray(image)
    if max(gray.shape) > MAX_SIDE:
        scale = MAX_SIDE / max(gray.shape)
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        if points is not None:
            points = points * [size[0] / gray.shape[1], size[1] / gray.shape[0]]
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    cfg = DegradeConfig() if cfg is None else cfg
    if plan is None:
        if not cfg.enabled:
            return gray.copy(), gray.copy(), points
        plan = sample_plan(rng, cfg, *gray.shape)
    clean, points = _geometry(gray, plan.geometry, points)
    return apply_appearance(clean, rng, plan.appearance), clean, points


# ------------------------------------------------------------------------------ sampling helpers


def _amount(rng: np.random.Generator, maximum: float, strength: float, low: float = 0.2,
            cap: float | None = None) -> float:
    """A magnitude between ``low`` and 1 times ``maximum * strength``, capped."""
    value = float(rng.uniform(low, 1.0)) * maximum * strength
    return min(value, cap) if cap is not None else value


def _plan_crop(rng, cfg: DegradeConfig, s: float, height: int, width: int) -> dict:
    """The box a person draws: loose white margins, sometimes an edge cut, plus engraving stretch."""
    stretch = 1.0 + float(rng.uniform(-1, 1)) * min(cfg.max_stretch * s, MAX_STRETCH)
    pads = [0, 0, 0, 0]  # top, bottom, left, right; negative = pixels cut off
    if rng.random() < cfg.p_loose_crop:
        vertical = min(cfg.max_pad_vertical * s, MAX_PAD_VERTICAL)
        horizontal = min(cfg.max_pad_horizontal * s, MAX_PAD_HORIZONTAL)
        top, bottom = rng.uniform(0, vertical, 2) * height
        left, right = rng.uniform(0, horizontal, 2) * width
        pads = [int(top), int(bottom), int(left), int(right)]
    if rng.random() < cfg.p_clip:
        sides = rng.random(4) < 0.5
        if not sides.any():
            sides[rng.integers(4)] = True
        for side in np.flatnonzero(sides):
            extent = height if side < 2 else width
            most = int(min(cfg.max_clip_px * s, MAX_CLIP_FRACTION * extent))
            if most >= 1:
                pads[side] = -int(rng.integers(1, most + 1))
    return {"stretch": stretch, "top": pads[0], "bottom": pads[1], "left": pads[2], "right": pads[3]}


def _plan_neighbours(rng, crop: dict, height: int, width: int) -> dict | None:
    """Adjacent systems show in a loose margin: their bottom above us, their top below us."""
    params = {}
    for side in ("top", "bottom"):
        if crop[side] >= max(3, 0.05 * height):
            params[side] = {
                "gap": float(rng.uniform(0.08, 0.45)),  # blank between the two systems' ink, x our ink height
                "dx": int(rng.uniform(-0.03, 0.03) * width),
                "flip": bool(rng.random() < 0.5),  # different notes, same staff extent
                "span": _neighbour_span(rng),
            }
    return params or None


def _neighbour_span(rng) -> list[float]:
    """Which part of the width the neighbour covers: all of it, or it is a short last / indented first system."""
    kind = rng.random()
    if kind < 0.7:
        return [0.0, 1.0]
    if kind < 0.85:
        return [0.0, float(rng.uniform(0.3, 0.9))]
    return [float(rng.uniform(0.05, 0.2)), 1.0]


def _plan_warp(rng, cfg: DegradeConfig, s: float, photo: bool) -> dict | None:
    """Rotation plus a perspective (photos) or a barely visible skew (scans)."""
    angle = float(rng.uniform(-1, 1)) * cfg.max_rotate_deg * s if rng.random() < cfg.p_rotate else 0.0
    corners = np.zeros((4, 2))
    if rng.random() < cfg.p_perspective:
        magnitude = min(cfg.max_perspective * s, MAX_PERSPECTIVE) * (1.0 if photo else SCAN_SKEW)
        corners = rng.uniform(-1, 1, (4, 2)) * magnitude
    if angle == 0.0 and not corners.any():
        return None
    return {"angle": angle, "corners": corners.tolist()}  # corner shifts in system heights


def _plan_curl(rng, cfg: DegradeConfig, s: float) -> dict:
    """Page curl: near the spine the page lifts, elsewhere it waves gently."""
    params = {"amplitude": _amount(rng, cfg.max_curl, s, 0.3, MAX_CURL) * float(rng.choice([-1.0, 1.0])),
              "shape": "edge" if rng.random() < 0.5 else "wave"}
    if params["shape"] == "edge":
        params.update(side=str(rng.choice(["left", "right"])), power=float(rng.uniform(1.5, 4.0)))
    else:
        params.update(period=float(rng.uniform(0.8, 3.0)), phase=float(rng.uniform(0, 2 * math.pi)))
    return params


def _plan_ink(rng, cfg: DegradeConfig, s: float) -> dict:
    morph = str(rng.choice(["spread", "thin", "none"], p=[0.45, 0.35, 0.2]))
    return {
        "morph": morph,
        "kernel": "rect" if morph == "spread" and rng.random() < 0.4 else "cross",
        "amount": float(min(rng.uniform(0.3, 1.0) if morph == "spread" else rng.uniform(0.2, 0.6), 1.0) * min(s, 1.0)),
        "fade": _amount(rng, cfg.max_ink_fade, s, 0.0, 0.6),
        "patchy": bool(rng.random() < 0.5),
    }


def _plan_bleed(rng, cfg: DegradeConfig, s: float) -> dict:
    return {"darkness": _amount(rng, cfg.max_bleed, s, 0.3, 0.4), "sigma": float(rng.uniform(0.8, 2.5)),
            "dy": float(rng.uniform(-0.5, 0.5)), "dx": float(rng.uniform(-0.1, 0.1))}


def _plan_paper(rng, cfg: DegradeConfig, s: float) -> dict:
    return {"tint": _amount(rng, cfg.max_paper_tint, s, 0.1, 0.5), "unevenness": float(rng.uniform(0, 0.6)),
            "grain": _amount(rng, cfg.max_paper_grain, s, 0.1, 0.15)}


def _plan_lighting(rng, cfg: DegradeConfig, s: float, photo: bool) -> dict:
    weights = rng.dirichlet([1.0, 1.0, 0.6 if photo else 0.2])
    return {"depth": _amount(rng, cfg.max_lighting, s, 0.2, 0.7) * (1.0 if photo else SCAN_LIGHTING),
            "gradient": float(weights[0]), "blotches": float(weights[1]), "vignette": float(weights[2]),
            "direction": float(rng.uniform(0, 2 * math.pi))}


def _plan_shadow(rng, cfg: DegradeConfig, s: float) -> dict:
    return {"darkness": _amount(rng, cfg.max_shadow, s, 0.25, 0.7), "softness": float(rng.uniform(0.02, 0.3)),
            "point": rng.uniform(0.1, 0.9, 2).tolist(), "angle": float(rng.uniform(0, 2 * math.pi)),
            "corner_angle": float(rng.uniform(0.3, 1.3) * rng.choice([-1, 1])) if rng.random() < 0.4 else None}


def _plan_blur(rng, cfg: DegradeConfig, s: float) -> dict:
    sigma = _amount(rng, cfg.max_blur_sigma, s, 0.2)
    return {"sigma_x": sigma, "sigma_y": sigma * float(rng.uniform(0.7, 1.3))}


def _plan_lowres(rng, cfg: DegradeConfig, s: float) -> dict:
    lowest = max(1.0 - (1.0 - cfg.min_lowres_scale) * s, MIN_LOWRES_SCALE)
    scale = float(rng.uniform(min(lowest, 1.0), 1.0))
    return {"scale": scale, "aspect": float(rng.uniform(0.9, 1.1)),
            "upsample": str(rng.choice(["linear", "cubic"]))}


def _plan_noise(rng, cfg: DegradeConfig, s: float, photo: bool) -> dict:
    return {"sigma": _amount(rng, cfg.max_noise, s, 0.2, 0.2) * (1.0 if photo else SCAN_NOISE),
            "shot": float(rng.uniform(0.3, 1.0)), "grain": int(rng.choice([1, 2])) if photo else 1,
            "specks": 0.0 if photo else float(rng.uniform(0, 20 * s))}


def _plan_gamma(rng, s: float, photo: bool) -> dict:
    return {"gamma": float(math.exp(rng.uniform(-1, 1) * 0.35 * s)),
            "black": float(rng.uniform(0, 0.15 if photo else 0.06) * s),
            "white": float(rng.uniform(0.8, 1.0)) if photo else float(rng.uniform(1.0, 1.15)),
            "auto_exposure": photo}


def _plan_binarize(rng) -> dict:
    if rng.random() < 0.5:
        return {"method": "otsu", "bias": float(rng.uniform(-25, 10))}
    return {"method": "adaptive", "block": float(rng.uniform(0.15, 0.6)), "offset": float(rng.uniform(5, 25))}


# ------------------------------------------------------------------------------ geometry
# Each takes (uint8 image, box of the system in it, params) and returns (image, box).


def _crop(image: np.ndarray, box, p: dict, points=None):
    """Engravers space music differently; people draw loose boxes, or cut an edge off."""
    height, width = image.shape
    new_width = max(1, round(width * p["stretch"]))
    if new_width != width:
        interpolation = cv2.INTER_AREA if new_width < width else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_width, height), interpolation=interpolation)
    top, bottom, left, right = (p[k] for k in ("top", "bottom", "left", "right"))
    image = image[max(0, -top): height - max(0, -bottom), max(0, -left): new_width - max(0, -right)]
    pads = [max(0, v) for v in (top, bottom, left, right)]
    image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_CONSTANT, value=255)
    box = (pads[2], pads[0], image.shape[1] - pads[3], image.shape[0] - pads[1])
    if points is not None:
        points = points * [new_width / width, 1.0] + [pads[2] - max(0, -left), pads[0] - max(0, -top)]
    return image, box, points


def _neighbours(image: np.ndarray, box, p: dict, points=None):
    """Fragments of the systems above and below, copied from this one, in the loose margins."""
    x0, y0, x1, y1 = box
    content = image[y0:y1, x0:x1]
    ink_rows = np.flatnonzero((content < 128).any(axis=1))
    if ink_rows.size == 0:
        return image, box, points
    ink_top, ink_bottom = int(ink_rows[0]), int(ink_rows[-1]) + 1
    ink_height = ink_bottom - ink_top
    height, width = image.shape
    for side, q in p.items():
        source = content[:, ::-1] if q["flip"] else content
        gap = round(q["gap"] * ink_height)
        if side == "top":  # its last ink row sits `gap` above our first
            at, margin = y0 + ink_top - gap - ink_bottom, (0, y0)
        else:  # its first ink row sits `gap` below our last
            at, margin = y0 + ink_bottom + gap - ink_top, (y1, height)
        r0, r1 = max(at, margin[0]), min(at + source.shape[0], margin[1])
        c0 = max(x0 + q["dx"], round(x0 + q["span"][0] * content.shape[1]))
        c1 = min(x0 + q["dx"] + source.shape[1], round(x0 + q["span"][1] * content.shape[1]), width)
        c0 = max(c0, 0)
        if r1 > r0 and c1 > c0:
            fragment = source[r0 - at: r1 - at, c0 - x0 - q["dx"]: c1 - x0 - q["dx"]]
            np.minimum(image[r0:r1, c0:c1], fragment, out=image[r0:r1, c0:c1])
    return image, box, points  # the system itself does not move


def _warp(image: np.ndarray, box, p: dict, points=None):
    """A scanned page lies a little askew; a photo sees it in perspective. The canvas grows if needed."""
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    rotation = np.vstack([cv2.getRotationMatrix2D(centre, p["angle"], 1.0), [0, 0, 1]])
    corners = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    moved = corners + np.float32(p["corners"]) * (y1 - y0)
    matrix = cv2.getPerspectiveTransform(corners, moved) @ rotation
    warped = cv2.perspectiveTransform(corners[None], matrix)[0]
    bx0, by0 = np.floor(warped.min(axis=0)).astype(int)
    bx1, by1 = np.ceil(warped.max(axis=0)).astype(int)
    height, width = image.shape
    ox, oy = min(0, bx0), min(0, by0)  # keep the whole system in view
    size = (max(width, bx1) - ox, max(height, by1) - oy)
    matrix = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], np.float64) @ matrix
    image = cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=255)
    if points is not None and len(points):
        # warpPerspective maps pixel centres: move (x, y) as the centre (x - 0.5, y - 0.5) moves
        points = cv2.perspectiveTransform((points - 0.5)[None], matrix)[0] + 0.5
    return image, (bx0 - ox, by0 - oy, bx1 - ox, by1 - oy), points


def _curl(image: np.ndarray, box, p: dict, points=None):
    """A book page is not flat: each column of the system is bent up or down by a smooth amount."""
    x0, y0, x1, y1 = box
    height, width = image.shape
    t = (np.arange(width, dtype=np.float32) - x0) / max(x1 - x0, 1)
    if p["shape"] == "edge":
        u = np.clip(t if p["side"] == "right" else 1 - t, 0, 1)
        bend = u ** p["power"]
    else:
        bend = np.sin(2 * np.pi * t / p["period"] + p["phase"])
    shift = (p["amplitude"] * (y1 - y0) * bend).astype(np.float32)  # output row y shows input row y + shift
    top = max(0, math.ceil(float(shift.max()) - y0))
    bottom = max(0, math.ceil(y1 - float(shift.min()) - height))
    if top or bottom:
        image = cv2.copyMakeBorder(image, top, bottom, 0, 0, cv2.BORDER_CONSTANT, value=255)
        height += top + bottom
    map_x = np.empty((height, width), np.float32)
    map_x[:] = np.arange(width, dtype=np.float32)
    map_y = np.arange(height, dtype=np.float32)[:, None] + shift[None, :]
    image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    new_y0 = max(0, int(y0 + top - shift.max()))
    if points is not None and len(points):  # output row y shows padded input row y + shift[x]
        column = np.clip(points[:, 0].astype(np.int64), 0, width - 1)
        points = np.stack([points[:, 0], points[:, 1] + top - shift[column]], axis=1)
    return image, (x0, new_y0, x1, min(height, int(math.ceil(y1 + top - shift.min())))), points


# ------------------------------------------------------------------------------ appearance
# Each takes (image, rng, params): float32 in 0..1 (1 = paper), or uint8 for UINT8_STEPS.


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Random smooth field in about [0, 1]: a coarse grid of random values, upscaled bicubically."""
    height, width = shape
    grid_h = max(2, cells)
    grid_w = int(np.clip(round(cells * width / max(height, 1)), 2, 32))
    grid = rng.random((grid_h, grid_w), dtype=np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _coarse_coordinates(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Row and column coordinates in 0..1 on a grid `step` times coarser than `shape`."""
    height, width = shape
    small = (max(2, height // step), max(2, width // step))
    ys = np.linspace(0, 1, small[0], dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, small[1], dtype=np.float32)[None, :]
    return ys, xs, small


def _upscale(field_small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(field_small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _ink(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Printing and toner vary: strokes spread or thin by a pixel, and ink fades, often unevenly."""
    if p["morph"] != "none" and p["amount"] > 0:
        shape = cv2.MORPH_RECT if p["kernel"] == "rect" else cv2.MORPH_CROSS
        kernel = cv2.getStructuringElement(shape, (3, 3))
        # paper is bright: eroding the image thickens the ink, dilating thins it
        morphed = cv2.erode(x, kernel) if p["morph"] == "spread" else cv2.dilate(x, kernel)
        x = cv2.addWeighted(x, 1 - p["amount"], morphed, p["amount"], 0)
    if p["fade"] > 0:
        fade = p["fade"]
        if p["patchy"]:
            fade = fade * (0.3 + 0.7 * np.clip(_smooth_field(rng, x.shape, 3), 0, 1))
        x = 1 - (1 - x) * (1 - fade)
    return x


def _bleed(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Thin paper shows the other side through: a faint, blurred, mirrored ghost of music."""
    height, width = x.shape
    mirror = np.float32([[-1, 0, width - 1 + p["dx"] * width], [0, 1, p["dy"] * height]])
    ghost = cv2.warpAffine(x, mirror, (width, height), flags=cv2.INTER_LINEAR, borderValue=1.0)
    ghost = cv2.GaussianBlur(ghost, (0, 0), p["sigma"])
    return x * (1 - p["darkness"] * (1 - ghost))


def _paper(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Paper is never pure white: tinted (old, recycled), unevenly stained, and grainy."""
    height, width = x.shape
    half = (height // 2 + 1, width // 2 + 1)  # fibres span more than a pixel: build at half size
    stain = 1 - p["unevenness"] + p["unevenness"] * np.clip(_smooth_field(rng, half, 4), 0, 1)
    grain = rng.standard_normal(half, dtype=np.float32)
    level = (1 - p["tint"] * stain) * (1 + p["grain"] * 1.5 * grain)
    return x * cv2.resize(level, (width, height), interpolation=cv2.INTER_LINEAR)


def _lighting(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Light is uneven: a window or lamp on one side, blotchy room light, darker lens corners."""
    ys, xs, small = _coarse_coordinates(x.shape, 16)
    aspect = x.shape[1] / max(x.shape[0], 1)
    ramp = math.cos(p["direction"]) * xs * aspect + math.sin(p["direction"]) * ys
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    vignette = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) * 2
    blotches = np.clip(_smooth_field(rng, small, 3), 0, 1)
    darkness = p["gradient"] * ramp + p["blotches"] * blotches + p["vignette"] * vignette
    return x * _upscale(1 - p["depth"] * np.clip(darkness, 0, 1), x.shape)


def _shadow(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """The phone or a hand casts a shadow: part of the page darker, behind a soft edge."""
    ys, xs, small = _coarse_coordinates(x.shape, 4)

    def half_plane(angle: float) -> np.ndarray:
        distance = (xs - p["point"][0]) * math.cos(angle) + (ys - p["point"][1]) * math.sin(angle)
        return np.clip(distance / p["softness"] + 0.5, 0, 1)

    mask = half_plane(p["angle"])
    if p["corner_angle"] is not None:
        mask = mask * half_plane(p["angle"] + p["corner_angle"])
    mask = mask * mask * (3 - 2 * mask)  # smoothstep: no visible kink at the edge
    return x * _upscale(1 - p["darkness"] * mask, x.shape)


def _blur(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Scanner optics and slight misfocus: a Gaussian, a little stronger along one axis."""
    return cv2.GaussianBlur(x, (0, 0), p["sigma_x"], sigmaY=p["sigma_y"])


def _defocus(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """A lens out of focus spreads points into disks, not Gaussians; in photos it varies over the page."""
    radius = p["radius"]
    half = int(math.ceil(radius))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.clip(radius + 0.5 - np.hypot(yy, xx), 0, 1).astype(np.float32)
    blurred = cv2.filter2D(x, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)
    if not p["uneven"]:
        return blurred
    weight = np.clip(_smooth_field(rng, x.shape, 2), 0, 1)  # depth of field: sharp somewhere only
    return x + (blurred - x) * weight


def _motion(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """A hand-held phone moves during the exposure: a short straight smear, centred (no shift)."""
    length, angle = p["length"], math.radians(p["angle"])
    half = int(math.ceil(length / 2)) + 1
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    dx, dy = length / 2 * math.cos(angle), length / 2 * math.sin(angle)
    scale = 16  # cv2.line's fixed-point sub-pixel coordinates (shift=4)
    start = (round((half - dx) * scale), round((half - dy) * scale))
    end = (round((half + dx) * scale), round((half + dy) * scale))
    cv2.line(canvas, start, end, 255, 1, cv2.LINE_AA, 4)
    kernel = canvas.astype(np.float32)
    kernel = (kernel + kernel[::-1, ::-1]) / 2  # exactly symmetric about the centre
    return cv2.filter2D(x, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def _lowres(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """A small sensor or a distant shot loses detail; the picture is then scaled back up."""
    height, width = x.shape
    small = (max(1, round(width * p["scale"] * p["aspect"])), max(1, round(height * p["scale"])))
    x = cv2.resize(x, small, interpolation=cv2.INTER_AREA)
    upsample = cv2.INTER_CUBIC if p["upsample"] == "cubic" else cv2.INTER_LINEAR
    return cv2.resize(x, (width, height), interpolation=upsample)


def _noise(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Sensor noise (stronger in bright areas: shot noise), sometimes coarse; dust specks on scans."""
    height, width = x.shape
    grain = p["grain"]
    noise = rng.standard_normal((-(-height // grain), -(-width // grain)), dtype=np.float32)
    if grain > 1:  # demosaicing and denoising leave blotchy, not per-pixel, noise
        noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(1.6)
    level = np.sqrt(np.clip(x, 0, 1)) * p["shot"] + (1 - p["shot"])
    x = x + noise * (p["sigma"] * level)
    count = int(rng.poisson(p["specks"] * height * width / 1e5)) if p["specks"] > 0 else 0
    if count:
        xs = rng.integers(0, width, count)
        ys = rng.integers(0, height, count)
        radii = rng.integers(0, 2, count)
        shades = rng.uniform(0.0, 0.5, count)
        for cx, cy, r, shade in zip(xs, ys, radii, shades):
            cv2.circle(x, (int(cx), int(cy)), int(r), float(shade), -1)
    return x


def _sharpen(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Phone cameras sharpen: bright and dark halos along strokes, amplified noise."""
    blurred = cv2.GaussianBlur(x, (0, 0), p["sigma"])
    return cv2.addWeighted(x, 1 + p["amount"], blurred, -p["amount"], 0)


def _gamma(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """The tone curve: auto-exposure (photos), gamma, and a lifted black (ink is grey in a photo)."""
    gain = p["white"]
    if p["auto_exposure"]:  # the camera maps bright paper close to white
        brightest = float(np.percentile(x[::4, ::4], 99)) / 255
        gain = float(np.clip(p["white"] / max(brightest, 1e-3), 1.0, 1.8))
    levels = np.clip(np.arange(256, dtype=np.float32) / 255 * gain, 0, 1) ** p["gamma"]
    lut = np.clip((p["black"] + (1 - p["black"]) * levels) * 255 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(x, lut)


def _jpeg(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Photos and scans are saved as JPEG: 8x8 block artefacts and ringing around strokes."""
    ok, encoded = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, p["quality"]])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE) if ok else x


def _binarize(x: np.ndarray, rng, p: dict) -> np.ndarray:
    """Black-and-white scan mode: a hard threshold, global (Otsu, biased) or adaptive."""
    if p["method"] == "otsu":
        threshold, _ = cv2.threshold(x, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return cv2.threshold(x, float(np.clip(threshold + p["bias"], 1, 254)), 255, cv2.THRESH_BINARY)[1]
    block = max(3, int(p["block"] * min(x.shape)) | 1)
    return cv2.adaptiveThreshold(x, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block, p["offset"])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


GEOMETRY = {"crop": _crop, "neighbours": _neighbours, "warp": _warp, "curl": _curl}
APPEARANCE = {"ink": _ink, "bleed": _bleed, "paper": _paper, "lighting": _lighting, "shadow": _shadow,
              "blur": _blur, "defocus": _defocus, "motion": _motion, "lowres": _lowres, "noise": _noise,
              "sharpen": _sharpen, "gamma": _gamma, "jpeg": _jpeg, "binarize": _binarize}
UINT8_STEPS = {"gamma", "jpeg", "binarize"}
