"""The GRPO reward: how good one sampled LMX sequence is against its gold.

    R = λ_t·TEDn_score + λ_w·well_formedness + λ_f·F1 − λ_r·repeat_penalty − λ_l·len_penalty

Every component lies in [0, 1] except well_formedness, whose floor −γ marks an
unparseable sample. The components are computed once per sample (in a process
pool, `RewardScorer`); the weights are applied afterwards (`combine`), since
λ_l follows the curriculum. Scoring never raises: a crash scores the sample
as unparseable and is reported in `RewardComponents.error`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

from acai_omr.lmx.delinearize import delinearize
from acai_omr.metrics.tedn import prepare_gold, tedn

log = logging.getLogger(__name__)

REPEAT_NGRAMS = (2, 3, 4)


# ---------------------------------------------------------------- the components


def tedn_score(tedn: float, alpha: float = 0.01) -> float:
    """exp(−α·TEDn): 1 for a perfect sample, 0.5 at TEDn = ln 2 / α (≈ 70 for α = 0.01)."""
    return math.exp(-alpha * max(0.0, tedn))


def well_formedness(unparseable: bool, n_errors: int, alpha: float = 0.2, gamma: float = 3.0) -> float:
    """−γ if unparseable, else exp(−α·soft errors) (≈ 0.55 at 3 errors for α = 0.2)."""
    if unparseable:
        return -gamma
    return math.exp(-alpha * max(0, n_errors))


def token_f1(pred: Sequence, gold: Sequence) -> float:
    """Multiset token F1: precision over the sample's tokens, recall over the gold's (two empties: 1)."""
    if not pred and not gold:
        return 1.0
    if not pred or not gold:
        return 0.0
    overlap = sum((Counter(pred) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def count_consecutive_repeats(tokens: Sequence, n: int) -> int:
    """Positions i where tokens[i:i+n] is immediately followed by the same n tokens."""
    return sum(1 for i in range(len(tokens) - 2 * n + 1) if tokens[i:i + n] == tokens[i + n:i + 2 * n])


def repeat_penalty(tokens: Sequence) -> float:
    """(consecutive 2-, 3- and 4-gram repeats) / (4·(|y| − 1)), clipped to [0, 1]: catches decoding loops."""
    tokens = list(tokens)
    if len(tokens) < 2:
        return 0.0
    repeats = sum(count_consecutive_repeats(tokens, n) for n in REPEAT_NGRAMS)
    return min(1.0, max(0.0, repeats / (4 * (len(tokens) - 1))))


def length_penalty(pred_len: int, gold_len: int, delta: float = 10.0, tau: float = 100.0) -> float:
    """0 within δ tokens of the gold length, else clip(exp(ln 2 / τ · x) − 1, 0, 1), reaching 1 at x = τ."""
    x = abs(pred_len - gold_len)
    if x <= delta:
        return 0.0
    return min(1.0, max(0.0, math.exp(math.log(2) / tau * x) - 1.0))


# ---------------------------------------------------------------- one sample


@dataclass(frozen=True)
class RewardParams:
    """The shape of the components (not their weights); picklable, sent to the scoring workers."""

    alpha_tedn: float = 0.01
    alpha_wf: float = 0.2
    gamma_wf: float = 3.0
    len_delta: float = 10.0
    len_tau: float = 100.0
    tedn_mode: str = "cost"  # cost or percent
    tedn_flavor: str = "lmx"

    @classmethod
    def from_config(cls, cfg) -> "RewardParams":
        return cls(cfg.alpha_tedn, cfg.alpha_wf, cfg.gamma_wf, cfg.len_delta, cfg.len_tau, cfg.tedn_mode,
                   cfg.tedn_flavor)

    def __post_init__(self):
        if self.tedn_mode not in ("cost", "percent"):
            raise ValueError(f"tedn_mode must be cost or percent, not {self.tedn_mode!r}")


@dataclass
class RewardComponents:
    """Everything the reward is made of for one sample (raw measurements and squashed components)."""

    tedn: float  # raw TEDn in the configured mode (edit cost, or percent)
    tedn_score: float
    unparseable: bool
    n_errors: int
    well_formedness: float
    f1: float
    repeat_penalty: float
    len_penalty: float
    error: str = ""  # set when scoring crashed (the sample then scores as unparseable)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RewardWeights:
    """The λ's of one step (λ_l is scheduled)."""

    tedn: float = 0.35
    wf: float = 0.10
    f1: float = 0.25
    rep: float = 0.15
    len: float = 0.02


def combine(c: RewardComponents, w: RewardWeights) -> float:
    """The scalar reward R of one sample."""
    return (w.tedn * c.tedn_score + w.wf * c.well_formedness + w.f1 * c.f1
            - w.rep * c.repeat_penalty - w.len * c.len_penalty)


@lru_cache(maxsize=256)
def _prepared_gold(gold_musicxml: str):
    return prepare_gold(gold_musicxml)


def _measure_tedn(pred: list[str], gold_musicxml: str, params: RewardParams) -> tuple[float, bool, int]:
    """(TEDn in the configured mode, unparseable, soft errors); an unparseable sample is compared as empty."""
    import xml.etree.ElementTree as ET

    gold_part = _prepared_gold(gold_musicxml)  # tedn() copies before pruning: the cached part stays intact
    result = delinearize(pred, fractional_durations=True)
    unparseable = result.unparseable or result.part is None
    pred_part = ET.Element(gold_part.tag) if unparseable else result.part
    measured = tedn(pred_part, gold_part, flavor=params.tedn_flavor)
    value = float(measured.edit_cost) if params.tedn_mode == "cost" else 100.0 * measured.value
    return value, unparseable, len(result.errors)


def score_sample(pred: Sequence[str], gold: Sequence[str], gold_musicxml: str,
                 params: RewardParams = RewardParams()) -> RewardComponents:
    """All components for one sample; never raises (a crash -> unparseable, TEDn_score 0, error set)."""
    try:
        pred, gold = [str(t) for t in pred], [str(t) for t in gold]
        f1, rep = token_f1(pred, gold), repeat_penalty(pred)
        length = length_penalty(len(pred), len(gold), params.len_delta, params.len_tau)
    except Exception as exc:  # only malformed inputs get here; score them as worst
        return _crashed(params, exc, f1=0.0, rep=1.0, length=1.0)
    try:
        value, unparseable, n_errors = _measure_tedn(pred, gold_musicxml, params)
    except Exception as exc:
        return _crashed(params, exc, f1=f1, rep=rep, length=length)
    return RewardComponents(
        tedn=value, tedn_score=tedn_score(value, params.alpha_tedn), unparseable=unparseable, n_errors=n_errors,
        well_formedness=well_formedness(unparseable, n_errors, params.alpha_wf, params.gamma_wf),
        f1=f1, repeat_penalty=rep, len_penalty=length,
    )


def _crashed(params: RewardParams, exc: BaseException, f1: float, rep: float, length: float) -> RewardComponents:
    return RewardComponents(tedn=math.inf, tedn_score=0.0, unparseable=True, n_errors=0,
                            well_formedness=-params.gamma_wf, f1=f1, repeat_penalty=rep, len_penalty=length,
                            error=f"{type(exc).__name__}: {exc}")


def _score_job(job: tuple) -> RewardComponents:
    return score_sample(*job)


# ---------------------------------------------------------------- many samples


class RewardScorer:
    """Scores batches of samples, in `workers` processes (0 = in this process); never raises.

    Workers are spawned (not forked: the trainer holds torch threads) and
    reused across steps. If the pool breaks, the batch is rescored here and
    the pool is rebuilt on the next call.
    """

    def __init__(self, params: RewardParams, workers: int = 1):
        self.params, self.workers = params, max(0, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def score(self, preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]],
              gold_musicxml: Sequence[str]) -> list[RewardComponents]:
        jobs = [(list(p), list(g), x, self.params) for p, g, x in zip(preds, golds, gold_musicxml, strict=True)]
        results: list[RewardComponents]
        if self.workers == 0 or not jobs:
            results = [_score_job(job) for job in jobs]
        else:
            try:
                chunk = max(1, len(jobs) // (4 * self.workers))
                results = list(self._get_pool().map(_score_job, jobs, chunksize=chunk))
            except Exception as exc:  # a dead worker (BrokenProcessPool), pickling trouble...
                log.warning("reward pool failed (%s: %s); scoring this batch in-process", type(exc).__name__, exc)
                self.close()
                results = [_score_job(job) for job in jobs]
        for result in results:
            if result.error:
                log.warning("reward scoring crashed on one sample (scored as unparseable): %s", result.error)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
