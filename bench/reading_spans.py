"""How often does inference cut a system into exactly its measures (`reading_spans`), clean and degraded?

A measure-reading model (weights with `read_measures`) decodes each run of measures alone, so a
missed barline merges two measures into one piece and a false one splits a measure in two. This
counts, over lieder-dev systems (MuseScore engraving, gold measure counts from the gold LMX), the
pieces `reading_spans(gray, 1)` gives against the gold measure count: exact, fewer (merged; 1 =
whole-system fallback), more (split). Degraded inputs go through the training degradation (seeded
per system); "clean threshold only" is what the barline finder without the scan/photo fallback finds.

    poetry run python bench/reading_spans.py --limit 198
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from acai_omr.data.preprocess import load_gray
from acai_omr.data.degrade import degrade
from acai_omr.data.measures import count_measures
from acai_omr.detect.barlines import barlines, reading_spans
from acai_omr.paths import shared_dir


def outcome(pieces: int, measures: int) -> str:
    if pieces == measures:
        return "exact"
    if pieces == 1:
        return "whole (no barlines)"
    return "fewer" if pieces < measures else "more"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=198)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pngs = sorted((shared_dir() / "conformance" / "lieder-dev").glob("*.png"))[: args.limit]
    counts = {name: Counter() for name in ("clean", "degraded", "degraded, clean threshold only")}
    seconds = 0.0
    for index, png in enumerate(pngs):
        measures = count_measures(png.with_suffix(".lmx").read_text())
        gray = load_gray(png)
        photo = degrade(gray, np.random.default_rng([args.seed, index]))
        counts["clean"][outcome(len(reading_spans(gray, 1)), measures)] += 1
        started = time.perf_counter()
        counts["degraded"][outcome(len(reading_spans(photo, 1)), measures)] += 1
        seconds += time.perf_counter() - started
        found = barlines(photo)
        counts["degraded, clean threshold only"][outcome(len(found) - 1 if found and len(found) > 1 else 1,
                                                        measures)] += 1
    print(f"{len(pngs)} lieder-dev systems; pieces of reading_spans(gray, 1) vs gold measures")
    for name, counter in counts.items():
        print(f"  {name:32s} " + "  ".join(f"{k}: {counter[k]}" for k in
                                           ("exact", "fewer", "whole (no barlines)", "more")))
    print(f"  reading_spans on degraded systems: {1000 * seconds / max(1, len(pngs)):.1f} ms per system")


if __name__ == "__main__":
    main()
