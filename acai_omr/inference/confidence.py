"""How sure the model is of a system, as one figure in 0..1, and what that means for a musician.

Candidates are compared by `acai-omr diagnose confidence` (rank correlation with each system's TEDn); the
product reports `system_confidence`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from acai_omr.lmx.reading_order import NOTE_LABELS, REST
from acai_omr.paths import WEIGHTS_DIR

ACCURACY_FILE = "accuracy.json"


def load_accuracy(directory: str | Path | None = None) -> dict | None:
    """What the weights' own evaluation measured (`accuracy.json` beside them: TEDn, pitch figures, the
    command and date), for the page to tell users how far to trust a transcription; None if absent."""
    path = (Path(directory) if directory is not None else WEIGHTS_DIR) / ACCURACY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def system_confidence(tokens: list[str], logprobs: list[float]) -> float:
    """The confidence the product reports: the mean probability of the pitches written (the figure that
    ranks systems by their TEDn best of the candidates, `acai-omr diagnose confidence` on rendered dev); the mean
    token probability for a system without pitches."""
    return pitch_probability(tokens, logprobs) if any(t in _PITCHES for t in tokens) else mean_probability(
        tokens, logprobs)


# (lowest confidence, what it means for the musician), highest first; see the README for what each band
# measured on lieder-dev with the shipped weights
CONFIDENCE_WORDS = (
    (0.9, "probably close: check the details"),
    (0.7, "some errors likely: check the pitches and rhythms"),
    (0.0, "likely many errors: check every note"),
)


def confidence_words(confidence: float | None) -> str:
    if confidence is None:
        return ""
    return next(words for floor, words in CONFIDENCE_WORDS if confidence >= floor)
