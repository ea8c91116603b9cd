"""What the runaway stop costs: the guard's bookkeeping alone, per token and per system, fed the
tokens an evaluation report's predictions hold (decoding itself takes about 70 ms a system).

    poetry run acai-omr eval model --split lieder-dev --json R.json   # any report
    poetry run python bench/runaway_overhead.py R.json
"""

from __future__ import annotations

import argparse
import json
import time

from acai_omr.inference.decode import RunawayGuard, RunawayLimits
from acai_omr.lmx.vocab import VOCAB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="an `acai-omr eval model --json` report")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    systems = json.loads(open(args.report).read())["systems"]
    sequences = [VOCAB.encode(s["prediction"].split()) for s in systems]
    tokens = sum(len(s) for s in sequences)
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        for sequence in sequences:
            guard = RunawayGuard(1, RunawayLimits())
            for token in sequence:
                guard.update([token], [False])
        best = min(best, time.perf_counter() - started)
    print(f"{len(sequences)} systems, {tokens} tokens: {best / tokens * 1e6:.2f} us/token, "
          f"{best / len(sequences) * 1e3:.2f} ms/system (best of {args.repeats})")


if __name__ == "__main__":
    main()
