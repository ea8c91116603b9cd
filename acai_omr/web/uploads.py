"""Accepting an uploaded file: type by content, size limits before decoding, pages + detected boxes on disk.

An upload lives in <work_dir>/uploads/<id>/: the original bytes, one lossless
PNG per page (what systems are cropped from), one small JPEG per page for the
browser, and meta.json (page sizes, detected boxes, detector messages).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from acai_omr.config import DetectConfig, WebConfig
from acai_omr.detect import PageInputError, detect_systems, load_page_images, parse_pages
from acai_omr.detect.pages_io import (
    SINGLE_PICTURE_FORMATS,  # importing it also lets Pillow open HEIC
    open_header,
)

ID_PATTERN = r"[0-9a-f]{32}"
VIEW_MAX_SIDE = 1600  # pixels: the page image sent to the browser

# leading bytes -> our name for the type; WebP is RIFF....WEBP and checked apart
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"%PDF-", "pdf"),
)
# an iPhone's JPEG is often an MPO (a JPEG followed by a preview or depth picture)
PILLOW_FORMATS = {"png": {"PNG"}, "jpeg": {"JPEG", "MPO"}, "tiff": {"TIFF"}, "webp": {"WEBP"}, "heic": {"HEIF"}}
ACCEPTED = "PNG, JPEG, HEIC, WebP, TIFF or PDF"
# ISO base media brands of HEIC/HEIF still pictures (bytes 8-12, after "ftyp")
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


class UploadError(Exception):
    """A refused upload: `message` is shown to the user, `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def new_id() -> str:
    return secrets.token_hex(16)


def sniff_type(head: bytes) -> str | None:
    """The file type from its first bytes (never from its name or the browser's claim)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heic"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if b"%PDF-" in head[:1024]:  # PDF readers accept junk before the header
        return "pdf"
    return None


def check_image_header(path: Path, kind: str, cfg: WebConfig, name: str = "The image") -> None:
    """Refuse images whose header claims too many pixels, before any pixel is decoded. Messages name the
    file (`name`) and the limit that applies, in the user's words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_header(path) as image:  # our own size check below, not Pillow's bomb error
                if image.format not in PILLOW_FORMATS[kind]:
                    raise UploadError(f"{name} looks like a {kind.upper()} file but is not a valid one.", 415)
                frames = 1 if image.format in SINGLE_PICTURE_FORMATS else getattr(image, "n_frames", 1)
                if frames > cfg.max_pdf_pages:
                    raise UploadError(f"{name} has {frames} pages; at most {cfg.max_pdf_pages} are accepted.", 413)
                width, height = image.size
                if max(width, height) > cfg.max_side or width * height > cfg.max_pixels:
                    raise UploadError(
                        f"{name} is {width}×{height} pixels ({width * height / 1e6:.0f} megapixels); the limit is "
                        f"{limits_text(cfg)}. Scale it down first (a photo at 12 megapixels is plenty).", 413)
                image.verify()  # structure and checksums, without decoding everything
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadError(f"{name} could not be read as an image: the file is damaged or incomplete.", 400)


def limits_text(cfg: WebConfig) -> str:
    """The page-size limit as the page and the docs state it."""
    return f"{cfg.max_side:,} pixels a side and {cfg.max_pixels / 1e6:.0f} megapixels"


def display_name(filename: str | None) -> str:
    """The uploaded file's name as the user knows it (no folders), for messages."""
    name = Path((filename or "").replace("\\", "/")).name.strip()
    return f"‘{name[:80]}’" if name else "The file"


def title_from(filename: str | None) -> str:
    """A score title from the uploaded file's name: its stem, underscores as spaces ("" when none)."""
    stem = Path((filename or "").replace("\\", "/")).stem
    stem = re.sub(r"[\x00-\x1f<>:\"/\\|?*]+", "", stem).replace("_", " ").strip(" .")
    return stem[:80]


@dataclass
class StoredUpload:
    id: str
    directory: Path
    meta: dict


def save_upload(file_storage, work_dir: Path, cfg: WebConfig, pages_spec: str | None = None) -> StoredUpload:
    """Validate an uploaded file, decode its pages, detect systems; raise UploadError when refused."""
    upload_id = new_id()
    directory = work_dir / "uploads" / upload_id
    directory.mkdir(parents=True)
    name = display_name(getattr(file_storage, "filename", None))
    try:
        source = directory / "source"
        file_storage.save(source)
        size = source.stat().st_size
        if size == 0:
            raise UploadError(f"{name} is empty.")
        if size > cfg.max_upload_bytes:
            raise UploadError(f"{name} is {size / 2**20:.1f} MiB; the limit is {cfg.max_upload_bytes / 2**20:.0f} MiB.",
                              413)
        with open(source, "rb") as handle:
            head = handle.read(1024)
        kind = sniff_type(head)
        if kind is None:
            raise UploadError(f"{name} is not a file type this page reads: please upload a {ACCEPTED} file "
                              "(checked from the file's content, not its name).", 415)
        if kind != "pdf":
            check_image_header(source, kind, cfg, name)
        detect_cfg = DetectConfig(max_pixels=cfg.max_pixels, max_pdf_pages=cfg.max_pdf_pages, pdf_dpi=cfg.pdf_dpi)
        try:
            pages = load_page_images(source, pages=pages_spec or None, dpi=cfg.pdf_dpi, cfg=detect_cfg)
        except PageInputError as error:
            message = str(error).replace(str(source) + ": ", "")
            status = 413 if ("limit" in message or "too large" in message) else 400
            raise UploadError(f"{name} was refused: {message}", status)
        if not pages:
            raise UploadError("The file has no pages.")

        numbers = parse_pages(pages_spec) if kind == "pdf" and pages_spec else None
        meta = {"id": upload_id, "created": time.time(), "kind": kind, "pages": [],
                "title": title_from(getattr(file_storage, "filename", None))}
        for index, page in enumerate(pages):
            page.save(directory / f"page-{index}.png")
            view = page.convert("RGB" if page.mode in ("RGB", "RGBA", "P", "CMYK") else "L")  # a copy
            view.thumbnail((VIEW_MAX_SIDE, VIEW_MAX_SIDE))
            view.save(directory / f"page-{index}.jpg", quality=85)
            detection = detect_systems(page)
            meta["pages"].append({
                "index": index,
                "number": numbers[index] if numbers else index + 1,  # the page's own number in the document
                "width": page.width,
                "height": page.height,
                "boxes": [_box_json(box) for box in detection.boxes],
                "messages": list(detection.messages),
            })
            page.close()
        (directory / "meta.json").write_text(json.dumps(meta))
        return StoredUpload(upload_id, directory, meta)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _box_json(box) -> dict:
    return {
        "x0": round(float(box.x0), 1), "y0": round(float(box.y0), 1),
        "x1": round(float(box.x1), 1), "y1": round(float(box.y1), 1),
        "confidence": round(float(box.confidence), 3), "kind": box.kind,
        "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in box.quad],
    }


def load_upload(work_dir: Path, upload_id: str) -> StoredUpload | None:
    directory = work_dir / "uploads" / upload_id
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return None
    return StoredUpload(upload_id, directory, json.loads(meta_path.read_text()))


def remove_expired(work_dir: Path, ttl_seconds: float, now: float | None = None) -> list[str]:
    """Delete upload and job folders older than the TTL (all of them when ttl_seconds <= 0); return their ids."""
    import re

    now = time.time() if now is None else now
    removed = []
    for sub in ("uploads", "jobs"):
        root = work_dir / sub
        if not root.is_dir():
            continue
        for folder in root.iterdir():
            if not (folder.is_dir() and re.fullmatch(ID_PATTERN, folder.name)):
                continue  # only ever delete what we created
            try:
                age = now - folder.stat().st_mtime
            except FileNotFoundError:
                continue
            if ttl_seconds <= 0 or age > ttl_seconds:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
    return removed
