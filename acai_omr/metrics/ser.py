"""SER: symbol (token) error rate of predicted LMX against gold LMX (spec §4.5).

SER = Σ token-level Levenshtein(gold, pred) / Σ len(gold) × 100, over
whitespace tokens. "SERnotuplets" first removes `tuplet:start`, `tuplet:stop`
and every `AinN` time-modification token from both sides.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from acai_omr.metrics._jit import jit

_TUPLET_TOKEN = re.compile(r"^(tuplet:start|tuplet:stop|\d+in\d+)$")


def _tokens(sequence: str | Sequence[str]) -> list[str]:
    if isinstance(sequence, str):
        return sequence.split()
    return [str(token) for token in sequence]


def drop_tuplets(tokens: Sequence[str]) -> list[str]:
    """The tokens without tuplet brackets and time modifications (for SERnotuplets)."""
    return [token for token in tokens if not _TUPLET_TOKEN.match(token)]


@jit
def _levenshtein_ids(a, b):
    """Levenshtein distance of two int arrays, one row of memory."""
    n = b.shape[0]
    row = np.arange(n + 1, dtype=np.int64)
    for x in range(1, a.shape[0] + 1):
        diagonal = row[0]
        row[0] = x
        ax = a[x - 1]
        for y in range(1, n + 1):
            above = row[y]
            best = diagonal + (0 if ax == b[y - 1] else 1)
            if above + 1 < best:
                best = above + 1
            if row[y - 1] + 1 < best:
                best = row[y - 1] + 1
            row[y] = best
            diagonal = above
    return row[n]


def token_edit_distance(a: str | Sequence[str], b: str | Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (a string is split on whitespace)."""
    tokens_a, tokens_b = _tokens(a), _tokens(b)
    if not tokens_a or not tokens_b:
        return max(len(tokens_a), len(tokens_b))
    ids: dict[str, int] = {}
    ids_a = np.fromiter((ids.setdefault(t, len(ids)) for t in tokens_a), dtype=np.int64, count=len(tokens_a))
    ids_b = np.fromiter((ids.setdefault(t, len(ids)) for t in tokens_b), dtype=np.int64, count=len(tokens_b))
    return int(_levenshtein_ids(ids_a, ids_b))


def ser(gold_tokens: str | Sequence[str], pred_tokens: str | Sequence[str], notuplets: bool = False) -> tuple[int, int]:
    """(token edits, gold length) of one sample; `notuplets` gives the SERnotuplets variant."""
    gold, pred = _tokens(gold_tokens), _tokens(pred_tokens)
    if notuplets:
        gold, pred = drop_tuplets(gold), drop_tuplets(pred)
    return token_edit_distance(gold, pred), len(gold)


def corpus_ser(pairs: Iterable[tuple], notuplets: bool = False) -> float:
    """Corpus SER in percent: Σ edits / Σ gold length × 100.

    Each pair is either `(edits, gold_len)` as returned by `ser` or
    `(gold_tokens, pred_tokens)` (strings or token lists; `notuplets` applies to these).
    """
    edits = gold_len = 0
    for first, second in pairs:
        if isinstance(first, (int, np.integer)) and isinstance(second, (int, np.integer)):
            sample_edits, sample_len = int(first), int(second)
        else:
            sample_edits, sample_len = ser(first, second, notuplets=notuplets)
        edits += sample_edits
        gold_len += sample_len
    if gold_len == 0:
        return 0.0 if edits == 0 else float("inf")
    return 100.0 * edits / gold_len
