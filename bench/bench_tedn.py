"""Benchmark: our compiled Zhang–Shasha TEDn against `zss` on real-size systems.

For a handful of lieder-dev systems of 200–400 LMX tokens, the gold LMX is
perturbed (random token deletions, insertions and substitutions, fixed seed),
delinearized with fractional durations and compared with the gold MusicXML.
Both implementations see identical trees (same pruning and note codes); the
values must be identical. Timings:

- ours: the whole `tedn(pred_part, gold_part)` call (pruning, note coding,
  flattening, rename-cost matrix, kernel, gold cost), best of --repeats runs,
  after a warm-up call so one-time numba compilation is excluded;
- zss: one `zss.distance` call for the edit cost on the ready-made trees
  (tree building excluded, gold cost not computed; the reference also runs zss
  a second time for the gold cost, so this favours zss).

Compile time is measured in child processes with an empty NUMBA_CACHE_DIR
(cold compile) and then again with that cache filled (cache load).

    poetry run python bench/bench_tedn.py            # 8 systems of 200-300 tokens, ~2-4 minutes
    poetry run python bench/bench_tedn.py --max-tokens 400   # up to ~550 nodes; zss needs minutes
    poetry run python bench/bench_tedn.py --systems 3 --no-compile-check
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPILE_PROBE = """
import time
t0 = time.perf_counter()
from acai_omr.metrics.tedn import tedn, prepare_gold
from acai_omr.metrics.ser import token_edit_distance
import xml.etree.ElementTree as ET
t1 = time.perf_counter()
part = ET.fromstring("<part><measure><note><pitch><step>C</step><octave>4</octave></pitch></note></measure></part>")
tedn(part, part)
token_edit_distance("a b", "a c")
t2 = time.perf_counter()
tedn(part, part)
token_edit_distance("a b", "a c")
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.4f}")
"""


def perturb(tokens: list[str], vocabulary: list[str], rate: float, rng: random.Random) -> list[str]:
    """Random token edits at `rate` per token; the leading `measure` is kept so it parses."""
    out = [tokens[0]]
    for token in tokens[1:]:
        roll = rng.random()
        if roll < rate / 3:
            continue  # delete
        if roll < 2 * rate / 3:
            out.append(rng.choice(vocabulary))  # substitute
            continue
        out.append(token)
        if roll < rate:
            out.append(rng.choice(vocabulary))  # insert
    return out


def pick_systems(folder: Path, count: int, low: int, high: int) -> list[tuple[int, Path]]:
    sized = []
    for lmx in sorted(folder.glob("*.lmx")):
        n = len(lmx.read_text(encoding="utf-8").split())
        if low <= n <= high and lmx.with_suffix(".musicxml").is_file():
            sized.append((n, lmx))
    sized.sort()
    if len(sized) <= count:
        return sized
    step = (len(sized) - 1) / (count - 1) if count > 1 else 0
    return [sized[round(k * step)] for k in range(count)]


def compile_times() -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        for what in ("cold compile (empty cache)", "cache load"):
            out = subprocess.run(
                [sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            print(f"  {what:28s} import {float(out[0]):.2f} s, first calls {float(out[1]):.2f} s, "
                  f"next calls {float(out[2]) * 1000:.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=300,
                        help="400 adds systems of 500+ nodes, where zss alone takes minutes")
    parser.add_argument("--rate", type=float, default=0.05, help="token edit rate of the perturbation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile-check", action="store_true")
    args = parser.parse_args()

    from acai_omr.lmx.delinearize import delinearize
    from acai_omr.lmx.vocab import LMX_TOKEN_SET
    from acai_omr.metrics.tedn import prepare_gold, tedn
    from acai_omr.metrics.zss_reference import zss_distance, zss_trees
    from acai_omr.paths import shared_dir

    if not args.no_compile_check:
        print("numba compile time (fresh processes):")
        compile_times()

    folder = shared_dir() / "conformance" / "lieder-dev"
    systems = pick_systems(folder, args.systems, args.min_tokens, args.max_tokens)
    if not systems:
        print(f"no systems with {args.min_tokens}-{args.max_tokens} tokens in {folder}", file=sys.stderr)
        return 1
    vocabulary = sorted(LMX_TOKEN_SET)
    rng = random.Random(args.seed)

    warm = prepare_gold(systems[0][1].with_suffix(".musicxml"))
    tedn(warm, warm)  # compile (or load) the kernels before timing

    print(f"\n{'system':24s} {'tokens':>6s} {'nodes p/g':>9s} {'edit/gold':>10s} {'zss s':>8s} {'ours ms':>8s} {'ratio':>7s}")
    total_zss = total_ours = 0.0
    for n_tokens, lmx in systems:
        gold = prepare_gold(lmx.with_suffix(".musicxml"))
        tokens = lmx.read_text(encoding="utf-8").split()
        while True:
            result = delinearize(perturb(tokens, vocabulary, args.rate, rng), fractional_durations=True)
            if not result.unparseable:
                break
        pred = result.part

        ours_best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = tedn(pred, gold)
            ours_best = min(ours_best, time.perf_counter() - start)

        pred_tree, gold_tree = zss_trees(pred, gold)
        start = time.perf_counter()
        zss_edit = zss_distance(pred_tree, gold_tree)
        zss_time = time.perf_counter() - start
        if zss_edit != ours.edit_cost:
            print(f"MISMATCH on {lmx.stem}: zss {zss_edit}, ours {ours.edit_cost}", file=sys.stderr)
            return 1

        def count(node) -> int:
            return 1 + sum(count(child) for child in node.children)

        nodes = f"{count(pred_tree)}/{count(gold_tree)}"
        total_zss += zss_time
        total_ours += ours_best
        print(f"{lmx.stem:24s} {n_tokens:6d} {nodes:>9s} {ours.edit_cost:>4d}/{ours.gold_cost:<5d} "
              f"{zss_time:8.2f} {ours_best * 1000:8.2f} {zss_time / ours_best:6.0f}x", flush=True)

    print(f"\nidentical values on all {len(systems)} systems")
    print(f"total: zss {total_zss:.2f} s, ours {total_ours * 1000:.1f} ms, speed ratio {total_zss / total_ours:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
