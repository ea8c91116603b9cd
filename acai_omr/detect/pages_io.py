"""Load page images from an image file or a PDF, refusing oversized or broken input with a clear message."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DetectConfig

try:  # iPhones save HEIC by default; pillow-heif teaches Pillow to open it
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a dependency; without it HEIC is refused like any unknown format
    pass

# Formats holding one picture in several frames: an iPhone's MPO (multi-picture JPEG) keeps a preview or
# depth map after the photo, and a HEIF file may keep thumbnails or a burst. The first frame is the page.
SINGLE_PICTURE_FORMATS = {"MPO", "HEIF", "AVIF"}


class PageInputError(ValueError):
    """The input cannot be read as pages (missing, corrupt, too large, bad page selection)."""


MAX_PAGE_NUMBER = 100_000  # no document has more; a larger number in a selection is a typo or an attack


def parse_pages(spec: str | None, limit: int | None = None) -> list[int] | None:
    """'1-3,5' -> [1, 2, 3, 5] (1-based, in the order given, each page once); None/'' -> None (all pages).

    Sizes are checked before anything is allocated: page numbers above MAX_PAGE_NUMBER are refused, and
    with `limit` so is a selection of more than `limit` pages."""
    if spec is None or not spec.strip():
        return None
    pages: dict[int, None] = {}  # ordered, without repeats
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, hi = (int(v) for v in part.split("-", 1)) if "-" in part else (int(part), int(part))
        except ValueError:
            raise PageInputError(f"bad page selection {spec!r}: use e.g. '1-3,5'") from None
        if lo < 1 or hi < lo:
            raise PageInputError(f"bad page selection {spec!r}: pages are numbered from 1, ranges go upwards")
        if hi > MAX_PAGE_NUMBER:
            raise PageInputError(f"bad page selection {spec!r}: page {hi} is beyond any document")
        pages.update(dict.fromkeys(range(lo, hi + 1)))  # at most MAX_PAGE_NUMBER entries, whatever the spec
        if limit is not None and len(pages) > limit:
            raise PageInputError(f"{spec!r} chooses more than {limit} pages; at most {limit} are read at a time")
    return list(pages)


def _is_pdf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(1024).lstrip().startswith(b"%PDF") or path.suffix.lower() == ".pdf"


def load_page_images(path: str | Path, pages: list[int] | str | None = None, dpi: int | None = None,
                     cfg: DetectConfig | None = None) -> list[Image.Image]:
    """Pages of an image file (EXIF orientation applied; every frame of a multi-page TIFF, the first picture
    of a phone's MPO or HEIC) or a PDF.

    Sizes are checked from the file header / PDF page size before any pixels are decoded.
    """
    cfg = cfg or DetectConfig()
    dpi = dpi or cfg.pdf_dpi
    if isinstance(pages, str):
        pages = parse_pages(pages, cfg.max_pdf_pages)
    path = Path(path)
    if not path.is_file():
        raise PageInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PageInputError(f"{path}: the file is empty")
    if _is_pdf(path):
        return _load_pdf(path, pages, dpi, cfg)
    return _load_image(path, pages, cfg)


_HEADER_LOCK = threading.Lock()


def open_header(path: Path) -> Image.Image:
    """Image.open (reads the header, decodes nothing) without Pillow's own bomb check, so the
    size check below can name the size; the limit is restored at once."""
    with _HEADER_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _load_image(path: Path, pages: list[int] | None, cfg: DetectConfig) -> list[Image.Image]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_header(path)
    except (UnidentifiedImageError, OSError):
        raise PageInputError(f"{path}: not a readable image or PDF") from None
    w, h = im.size
    if w * h > cfg.max_pixels:
        im.close()
        raise PageInputError(f"{path}: image is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the limit of "
                             f"{cfg.max_pixels / 1e6:.0f} megapixels; scale it down first")
    n_frames = 1 if im.format in SINGLE_PICTURE_FORMATS else getattr(im, "n_frames", 1)
    wanted = pages or list(range(1, n_frames + 1))
    if any(p > n_frames for p in wanted):
        raise PageInputError(f"{path}: has {n_frames} page(s); asked for page {max(wanted)}")
    out = []
    try:
        for p in wanted:
            im.seek(p - 1)
            if im.size[0] * im.size[1] > cfg.max_pixels:
                raise PageInputError(f"{path}: page {p} is {im.size[0]}x{im.size[1]} pixels, over the limit")
            frame = ImageOps.exif_transpose(im)
            frame.load()
            out.append(displayable(frame))
    except PageInputError:
        raise
    except (OSError, ValueError, SyntaxError):  # truncated or corrupt pixel data
        raise PageInputError(f"{path}: the image data is corrupt or truncated (the file is damaged or "
                             f"incomplete)") from None
    finally:
        im.close()
    return out


# modes a page keeps as they are; every other one (CMYK, YCbCr, 16- and 32-bit and float greys, ...) is
# converted on load, in this one place, so nothing downstream meets a mode PNG or the detector cannot take
KEPT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}


def displayable(image: Image.Image) -> Image.Image:
    """The page in an 8-bit mode: colour spaces as RGB, wide greys (I;16, I, F) scaled into 0..255 as L."""
    import numpy as np

    if image.mode in KEPT_MODES:
        return image.copy()
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    values = np.asarray(image.convert("F") if image.mode.startswith("I;16") else image, dtype=np.float64)
    if values.ndim != 2:
        return image.convert("RGB")
    top = float(values.max()) if values.size else 0.0
    # floats in 0..1; 8-bit values in a wide container as they are; wider data by its own brightest value
    # (a 16-bit scan's paper is rarely at 65535), so paper is white and ink stays dark
    scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
    return Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), mode="L")


def _load_pdf(path: Path, pages: list[int] | None, dpi: int, cfg: DetectConfig) -> list[Image.Image]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError:
        raise PageInputError(f"{path}: not a readable PDF (it is damaged, or not a PDF)") from None
    try:
        n = len(pdf)
        if n == 0:
            raise PageInputError(f"{path}: the PDF has no pages")
        if pages is None:
            if n > cfg.max_pdf_pages:
                raise PageInputError(f"{path}: the PDF has {n} pages, over the limit of {cfg.max_pdf_pages}; "
                                     f"choose pages, e.g. --pages 1-{cfg.max_pdf_pages}")
            pages = list(range(1, n + 1))
        if any(p > n for p in pages):
            raise PageInputError(f"{path}: the PDF has {n} page(s); asked for page {max(pages)}")
        scale = dpi / 72.0
        out = []
        for p in pages:
            page = pdf[p - 1]
            w_pt, h_pt = page.get_size()
            px = (w_pt * scale) * (h_pt * scale)
            if px > cfg.max_pixels:
                raise PageInputError(f"{path}: page {p} at {dpi} dpi would be {w_pt * scale:.0f}x{h_pt * scale:.0f} "
                                     f"pixels, over the limit of {cfg.max_pixels / 1e6:.0f} megapixels; "
                                     f"use a lower dpi")
            try:
                out.append(page.render(scale=scale, grayscale=True).to_pil().convert("L"))
            except pdfium.PdfiumError:
                raise PageInputError(f"{path}: page {p} of the PDF could not be drawn (it may be damaged)") from None
        return out
    finally:
        pdf.close()
