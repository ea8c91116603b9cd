"""Is the score a page turns into one a musician can open and use? Pages of several lieder-dev systems
of one piece go through `acai-omr transcribe` (detection, reading, assembly), and the MusicXML is checked
for what makes a score usable whatever the notes: a time signature in its first measure, no key change
the gold does not have, and inner measures full in both staves (the first and last measure may be a
pickup and its complement).

    poetry run python bench/coherent_pages.py --weights weights --out runs/coherent
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from acai_omr.inference.assemble import staff_ends
from acai_omr.inference.evaluate import lieder_dev_folder


def pages_of_pieces(folder: Path, per_page: int) -> list[tuple[str, list[Path]]]:
    """(page name, system PNGs in reading order): each piece's systems by first measure, `per_page` a page."""
    pieces = defaultdict(list)
    for png in sorted(folder.glob("*.png")):
        piece, measures = png.stem.rsplit("_m", 1)
        pieces[piece].append((int(measures.split("-")[0]), png))
    pages = []
    for piece, systems in sorted(pieces.items()):
        systems = [png for _, png in sorted(systems)]
        if len(systems) < 2:
            continue
        for start in range(0, len(systems), per_page):
            chunk = systems[start:start + per_page]
            if len(chunk) >= 2:
                pages.append((f"{piece}_p{start // per_page + 1}", chunk))
    return pages


def stack(pngs: list[Path]) -> Image.Image:
    """The systems one under another on white paper, a margin around and a gap between."""
    images = [np.asarray(Image.open(p).convert("L")) for p in pngs]
    width = max(i.shape[1] for i in images) + 160
    gap = max(i.shape[0] for i in images) // 2
    height = sum(i.shape[0] for i in images) + gap * (len(images) + 1)
    page = np.full((height, width), 255, np.uint8)
    y = gap
    for image in images:
        page[y:y + image.shape[0], 80:80 + image.shape[1]] = image
        y += image.shape[0] + gap
    return Image.fromarray(page)


def check_score(path: Path) -> dict:
    part = ET.parse(path).getroot().find("part")
    measures = part.findall("measure")
    first_time = measures[0].find("attributes/time") is not None if measures else False
    keys = [k.findtext("fifths") for k in part.iter("key")]
    divisions, bar, full, inner = None, None, 0, 0
    for number, measure in enumerate(measures):
        for attributes in measure.findall("attributes"):
            if attributes.find("divisions") is not None:
                divisions = int(attributes.findtext("divisions"))
            if attributes.find("time") is not None:
                time = attributes.find("time")
                bar = Fraction(4 * int(time.findtext("beats")), int(time.findtext("beat-type")))
        if 0 < number < len(measures) - 1:
            inner += 1
            ends = staff_ends(measure)
            if bar is not None and divisions and all(ends.get(s) == bar * divisions for s in ("1", "2")):
                full += 1
    return {"measures": len(measures), "time_in_first": first_time, "key_changes": max(0, len(keys) - 1),
            "keys": keys, "inner": inner, "inner_full": full}


def gold_key_changes(pngs: list[Path]) -> int:
    keys = [next((t for t in p.with_suffix(".lmx").read_text().split() if t.startswith("key:")), None) for p in pngs]
    return sum(a != b for a, b in zip(keys, keys[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights")
    parser.add_argument("--out", type=Path, default=Path("runs/coherent"))
    parser.add_argument("--per-page", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    args = parser.parse_args()
    pages = pages_of_pieces(lieder_dev_folder(), args.per_page)[:args.limit]
    (args.out / "pages").mkdir(parents=True, exist_ok=True)
    for name, pngs in pages:
        stack(pngs).save(args.out / "pages" / f"{name}.png")
    subprocess.run([sys.executable, "-m", "acai_omr.cli", "transcribe", str(args.out / "pages"), "-o",
                    str(args.out / "scores"), "--weights", args.weights, "--no-progress"], check=True)
    rows = []
    for name, pngs in pages:
        score = args.out / "scores" / f"{name}.musicxml"
        row = {"page": name, "systems": len(pngs), "gold_key_changes": gold_key_changes(pngs)}
        row.update(check_score(score) if score.exists() else {"missing": True})
        rows.append(row)
    done = [r for r in rows if not r.get("missing")]
    inner = sum(r["inner"] for r in done)
    summary = {"pages": len(rows), "read": len(done),
               "time_in_first_measure": sum(r["time_in_first"] for r in done),
               "no_extra_key_change": sum(r["key_changes"] <= r["gold_key_changes"] for r in done),
               "inner_measures": inner, "inner_full_both_staves": sum(r["inner_full"] for r in done)}
    (args.out / "report.json").write_text(json.dumps({"summary": summary, "pages": rows}, indent=1))
    print(f"{summary['read']} of {summary['pages']} pages read ({sum(r['systems'] for r in rows)} systems): "
          f"time signature in the first measure {summary['time_in_first_measure']}, "
          f"no key change the gold lacks {summary['no_extra_key_change']}, "
          f"inner measures full in both staves {summary['inner_full_both_staves']} of {inner} "
          f"({summary['inner_full_both_staves'] / max(1, inner):.1%})")


if __name__ == "__main__":
    main()
