"""SVG -> grayscale pixels, in-process.

Verovio writes plain SVG (paths, polygons, glyphs as <use>), so a fast
rasterizer is the difference between ~1 and ~10 systems per second. Skia
(skia-python) renders a page in ~50 ms; resvg and cairo take ~0.5-1.5 s and are
kept only as fallbacks. Skia's SVG module ignores CSS, and Verovio colours its
strokes through CSS (``stroke:currentColor``), so strokes are made explicit first.
"""

from __future__ import annotations

import io
import re

import numpy as np

_STROKED = re.compile(r"<(path|polygon|polyline|rect|ellipse|line) (?![^>]*\bstroke=)")


class RasterError(RuntimeError):
    """No rasterizer is installed, or the SVG could not be drawn."""


def _explicit_strokes(svg: str) -> str:
    return _STROKED.sub(r'<\1 stroke="black" ', svg)


def _skia(svg: str, zoom: float, width: int, height: int) -> np.ndarray:
    import skia

    data = _explicit_strokes(svg).encode()
    stream = skia.MemoryStream(data, True)  # copy: skia must not outlive the bytes
    dom = skia.SVGDOM.MakeFromStream(stream)
    if dom is None:
        raise RasterError("skia could not parse the SVG")
    surface = skia.Surface(width, height)
    with surface as canvas:
        canvas.clear(skia.ColorWHITE)
        canvas.scale(zoom, zoom)
        dom.render(canvas)
    pixels = surface.makeImageSnapshot().toarray()
    return np.ascontiguousarray(pixels[..., 1])  # black ink on white: every channel is the gray


def _resvg(svg: str, zoom: float) -> np.ndarray:
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_string=svg, background="#ffffff", zoom=zoom)
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("L"))


def _cairo(svg: str, zoom: float) -> np.ndarray:
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(bytestring=svg.encode(), scale=zoom, background_color="white")
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def svg_size(svg: str) -> tuple[float, float]:
    """The outer width/height of an SVG in px (its root width/height attributes)."""
    head = svg[: svg.find(">", svg.find("<svg")) + 1]
    width = re.search(r'width="([\d.]+)(px)?"', head)
    height = re.search(r'height="([\d.]+)(px)?"', head)
    if not width or not height:
        raise RasterError("the SVG root has no width/height")
    return float(width.group(1)), float(height.group(1))


def available_backend() -> str | None:
    """Name of the first installed rasterizer: skia, resvg or cairo (None when none is)."""
    for name, module in (("skia", "skia"), ("resvg", "resvg_py"), ("cairo", "cairosvg")):
        try:
            __import__(module)
            return name
        except ImportError:
            continue
    return None


def rasterize_svg(svg: str, zoom: float = 1.0, backend: str | None = None) -> np.ndarray:
    """Draw an SVG on white at ``zoom`` x its px size; returns a uint8 (H, W) gray array."""
    backend = backend or available_backend()
    if backend is None:
        raise RasterError("no SVG rasterizer: install skia-python (or resvg-py / cairosvg)")
    width, height = svg_size(svg)
    out_w, out_h = max(1, round(width * zoom)), max(1, round(height * zoom))
    try:
        if backend == "skia":
            return _skia(svg, zoom, out_w, out_h)
        if backend == "resvg":
            return _resvg(svg, zoom)
        if backend == "cairo":
            return _cairo(svg, zoom)
    except RasterError:
        raise
    except Exception as error:  # the libraries raise their own types
        raise RasterError(f"{backend} failed to rasterize: {error}") from error
    raise RasterError(f"unknown rasterizer {backend!r}")
