"""Does a system's confidence mean anything? Rank correlation (Spearman) of candidate per-system
confidence figures with the system's TEDn, from `acai-omr eval model --json` reports (which keep each
system's per-token log-probabilities). A useful confidence correlates negatively with TEDn (more
confident, fewer errors). Choose on one set (rendered dev), report on another (lieder-dev).

    poetry run acai-omr eval model --split dev --data data --limit 120 --json runs/dev.json
    poetry run python bench/confidence.py runs/dev.json runs/lieder-dev.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from acai_omr.inference.confidence import CANDIDATES


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args()
    for report in args.reports:
        rows = [r for r in json.loads(report.read_text())["systems"] if r.get("token_logprobs") is not None]
        tedn = [r["tedn"] for r in rows]
        print(f"== {report} ({len(rows)} systems, median TEDn {statistics.median(tedn):.1f}%)")
        for name, figure in CANDIDATES.items():
            values = [figure(r["prediction"].split(), r["token_logprobs"]) for r in rows]
            print(f"  {name:<24} Spearman with TEDn {spearman(values, tedn):+.3f}")


if __name__ == "__main__":
    main()
