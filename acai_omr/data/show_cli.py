"""`acai-omr data show`: a contact sheet of built systems, each clean beside a degraded version.

What the model is trained on, at a glance: left the engraved system, right the
same system after the training-time scan/photo simulation.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser("show", help="contact sheet (PNG) of clean and degraded samples of a split")
    show.add_argument("root", type=Path, help="dataset root (holding <split>/manifest.jsonl)")
    show.add_argument("--split", default="train")
    show.add_argument("--n", type=int, default=16, help="systems on the sheet")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--width", type=int, default=700, help="width of each tile in pixels")
    show.add_argument("--preset", default="default", help="degradation preset: light, default, strong")
    show.add_argument("-o", "--output", type=Path, default=Path("sheet.png"))
    show.set_defaults(func=run_show)


def contact_sheet(root: Path, split: str, n: int, seed: int, tile_width: int, preset: str):
    """A grayscale PIL image: n rows of (clean, degraded) tiles, labelled with source and engraver."""
    import numpy as np
    from PIL import Image, ImageDraw

    from acai_omr.config import DegradeConfig
    from acai_omr.data.dataset import read_manifest
    from acai_omr.data.preprocess import load_gray
    from acai_omr.data.degrade import degrade

    split_dir = Path(root) / split
    records = read_manifest(split_dir / "manifest.jsonl")
    picked = random.Random(seed).sample(records, min(n, len(records)))
    config = DegradeConfig.preset(preset)
    rows = []
    for index, record in enumerate(picked):
        clean = load_gray(split_dir / record["image"])
        degraded = degrade(clean, np.random.default_rng([seed, index]), config)
        tiles = []
        for image in (clean, degraded):
            scale = tile_width / image.shape[1]
            tile = Image.fromarray(image).resize((tile_width, max(1, round(image.shape[0] * scale))))
            tiles.append(tile)
        height = max(t.height for t in tiles) + 18
        row = Image.new("L", (2 * tile_width + 10, height), 255)
        for column, tile in enumerate(tiles):
            row.paste(tile, (column * (tile_width + 10), 18))
        ImageDraw.Draw(row).text((4, 2), f"{record.get('source', '')}  [{record.get('engraver', '')}]  "
                                          f"-> degraded ({preset})", fill=0)
        rows.append(row)
    sheet = Image.new("L", (2 * tile_width + 10, sum(r.height + 6 for r in rows)), 200)
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + 6
    return sheet


def run_show(args: argparse.Namespace) -> int:
    try:
        sheet = contact_sheet(args.root, args.split, args.n, args.seed, args.width, args.preset)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")
    return 0
