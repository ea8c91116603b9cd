"""`acai-omr detect PAGE.png|DOC.pdf [--pages 1-3] -o boxes.json [--draw overlay.png]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect", help="find the systems (piano, single staff, voice+piano) on page images or PDF pages",
        description="Detect every system on each page and write their boxes (page pixel coordinates, "
                    "reading order) as JSON. PDF pages are rasterized at --dpi; the boxes refer to "
                    "that raster.")
    p.add_argument("input", type=Path, help="PAGE.png/.jpg/.tif or DOC.pdf")
    p.add_argument("--pages", help="pages to read, e.g. '1-3,5' (1-based; default: all)")
    p.add_argument("--dpi", type=int, help="PDF rasterization resolution (default: DetectConfig.pdf_dpi)")
    p.add_argument("-o", "--output", type=Path, help="boxes.json (default: standard output)")
    p.add_argument("--draw", type=Path,
                   help="overlay.png with the detections drawn (several pages: overlay_p2.png, ...)")
    p.add_argument("--crops", type=Path, help="also save each system's deskewed crop into this folder")
    p.set_defaults(func=run_detect)


def _overlay_path(base: Path, page: int, n_pages: int) -> Path:
    return base if n_pages == 1 else base.with_name(f"{base.stem}_p{page}{base.suffix}")


def run_detect(args: argparse.Namespace) -> int:
    from ..config import DetectConfig
    from .draw import draw_detections
    from .pages_io import PageInputError, load_page_images, parse_pages
    from .systems import crop_system, detect_systems

    cfg = DetectConfig()
    try:
        pages = parse_pages(args.pages)
        images = load_page_images(args.input, pages=pages, dpi=args.dpi, cfg=cfg)
    except PageInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    numbers = pages or list(range(1, len(images) + 1))
    report = {"input": str(args.input), "dpi": args.dpi or cfg.pdf_dpi, "pages": []}
    for number, image in zip(numbers, images):
        result = detect_systems(image, cfg)
        entry = {"page": number, **result.to_dict()}
        report["pages"].append(entry)
        for message in result.messages:
            print(f"page {number}: {message}", file=sys.stderr)
        if args.draw:
            args.draw.parent.mkdir(parents=True, exist_ok=True)
            draw_detections(image, result).save(_overlay_path(args.draw, number, len(images)))
        if args.crops:
            args.crops.mkdir(parents=True, exist_ok=True)
            for i, box in enumerate(result.boxes, 1):
                crop_system(image, box).save(args.crops / f"page{number:03d}_system{i:02d}.png")
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")
    return 0
