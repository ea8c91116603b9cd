"""Throughput of the data engine: systems per second per core for Verovio and MuseScore.

Renders a few normalized Lieder pieces (normalizing them first if needed, not
timed) and reports systems per CPU-second of this process plus its MuseScore
children (per core), and per wall-second. Run: `poetry run python bench/bench_data.py`.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
from pathlib import Path


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pieces", type=int, default=6)
    parser.add_argument("--cache", default="data/cache/normalized")
    parser.add_argument("--split", default="dev")
    args = parser.parse_args()

    from acai_omr.data.build import Unit, run_unit
    from acai_omr.data.ingest import NormalizedCache, list_sources, normalize_sources
    from acai_omr.paths import shared_dir

    cache = NormalizedCache(Path(args.cache))
    sources = list_sources(shared_dir() / "corpora", args.split, ("lieder",))
    sources = sorted(sources, key=lambda s: s.piece_id)[: args.pieces * 2]
    normalize_sources(sources, cache, workers=1, progress=False)
    pieces = [(s.corpus, s.piece_id) for s in sources if cache.status(s) == "ok"][: args.pieces]
    print(f"{len(pieces)} pieces, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    run_unit(Unit("verovio", (pieces[0],), 99), str(cache.root))  # warm-up: fonts, imports
    for engraver in ("verovio", "musescore"):
        units = ([Unit("verovio", (p,), 0) for p in pieces] if engraver == "verovio"
                 else [Unit("musescore", tuple(pieces), 0)])
        cpu0, wall0, systems, errors = _cpu(), time.time(), 0, 0
        for unit in units:
            result = run_unit(unit, str(cache.root))
            systems += len(result.records)
            errors += len(result.errors)
        cpu, wall = _cpu() - cpu0, time.time() - wall0
        print(f"{engraver:9s}: {systems} systems ({errors} skipped) in {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"-> {systems / cpu:.1f} systems/s per core, {systems / wall:.1f} systems/s wall")


if __name__ == "__main__":
    random.seed(0)
    main()
