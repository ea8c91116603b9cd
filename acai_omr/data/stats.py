"""What a built split holds: systems per source and engraver, token lengths, vocabulary coverage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from acai_omr.data.dataset import read_manifest
from acai_omr.lmx.vocab import LMX_TOKENS

LENGTH_BINS = (0, 50, 100, 150, 200, 300, 400, 500, 750, 1000)


def split_stats(split_dir: Path) -> dict:
    records = read_manifest(Path(split_dir) / "manifest.jsonl")
    lengths = np.array([len(r["lmx"].split()) for r in records]) if records else np.zeros(0, int)
    used = Counter(token for r in records for token in r["lmx"].split())
    edges = list(LENGTH_BINS) + [max(LENGTH_BINS[-1] + 1, int(lengths.max(initial=0)) + 1)]
    histogram, _ = np.histogram(lengths, bins=edges)
    return {
        "systems": len(records),
        "pieces": len({r.get("source") for r in records}),
        "systems_per_corpus": dict(Counter(r.get("corpus", "?") for r in records)),
        "systems_per_engraver": dict(Counter(r.get("engraver", "?") for r in records)),
        "tokens": {
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            "median": float(np.median(lengths)) if len(lengths) else 0.0,
            "max": int(lengths.max(initial=0)),
            "histogram": {f"{a}-{b - 1}": int(n) for a, b, n in zip(edges, edges[1:], histogram)},
        },
        "vocabulary": {
            "used": sum(1 for token in LMX_TOKENS if used[token]),
            "of": len(LMX_TOKENS),
            "never_seen": [token for token in LMX_TOKENS if not used[token]],
        },
    }


def format_stats(stats: dict) -> str:
    """A short human-readable report of ``split_stats``."""
    lines = [f"systems: {stats['systems']} from {stats['pieces']} pieces",
             "per corpus: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["systems_per_corpus"].items())),
             "per engraver: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["systems_per_engraver"].items())),
             f"tokens per system: mean {stats['tokens']['mean']}, median {stats['tokens']['median']}, "
             f"max {stats['tokens']['max']}",
             "length histogram: " + ", ".join(f"{k}: {v}" for k, v in stats["tokens"]["histogram"].items()),
             f"vocabulary: {stats['vocabulary']['used']} of {stats['vocabulary']['of']} LMX tokens used; never: "
             + " ".join(stats["vocabulary"]["never_seen"])]
    return "\n".join(lines)
