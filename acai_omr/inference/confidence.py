"""How sure the model is of a system, as one figure in 0..1, and what that means for a musician.

Candidates are compared by `bench/confidence.py` (rank correlation with each system's TEDn); the
product reports `system_confidence`.
"""

from __future__ import annotations

import math
from typing import Callable

from acai_omr.lmx.reading_order import NOTE_LABELS, REST

_PITCHES = frozenset(label for label in NOTE_LABELS if label != REST)


def mean_probability(tokens: list[str], logprobs: list[float]) -> float:
    """Mean per-token probability (what decoding reported until 2026-12-05)."""
    return sum(math.exp(v) for v in logprobs) / len(logprobs) if logprobs else 0.0


def geometric_mean(tokens: list[str], logprobs: list[float]) -> float:
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def pitch_probability(tokens: list[str], logprobs: list[float]) -> float:
    """Mean probability of the pitch tokens: pitches are what the model gets wrong most."""
    values = [math.exp(v) for t, v in zip(tokens, logprobs) if t in _PITCHES]
    return sum(values) / len(values) if values else 0.0


def sure_share(tokens: list[str], logprobs: list[float]) -> float:
    """Share of tokens written with probability over one half."""
    return sum(v > math.log(0.5) for v in logprobs) / len(logprobs) if logprobs else 0.0


CANDIDATES: dict[str, Callable[[list[str], list[float]], float]] = {
    "mean probability": mean_probability, "geometric mean": geometric_mean,
    "pitch probability": pitch_probability, "share of sure tokens": sure_share,
}
