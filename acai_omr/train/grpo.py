"""Reinforcement phase: GRPO (group relative policy optimisation) on a TEDn-based reward.

One step:

1. sample G sequences for each of B training images with the KV-cached
   decoder (all B·G rows in one batch), at the curriculum's temperature,
   top-k and max length; weights that read by measures (`read_measures` N)
   sample crops of 1..N measures, scored against those measures' gold;
2. score every sample (`acai_omr.train.reward`, in a process pool) and turn
   the rewards into advantages within each image's group:
   A = (R − group mean) / (group std + ε);
3. minimise  −clipped-surrogate − β·entropy + λ_CE·CE(gold), where the
   surrogate is PPO's per-token min(ρ·A, clip(ρ, 1 ± ε)·A) with ρ the ratio of
   the current policy to the sampling policy (both under the same temperature
   and top-k), averaged over each sample's tokens; the entropy is the policy's
   mean per-step entropy over ln V (so in [0, 1]); CE is teacher-forced on the
   gold sequence. There is no KL term to a reference model.

Dropout is off throughout (the policy that samples is the one that is scored).
The loop, checkpoints, exact resume and the JSONL log are `train.common.Trainer`'s;
greedy dev TEDn is measured before the first step and at every evaluation, and
`best_weights/` is written only when it beats the starting weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from acai_omr.config import GrpoConfig
from acai_omr.data.dataset import read_manifest, seed_worker
from acai_omr.data.measures import measure_slice
from acai_omr.inference.decode import sample
from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.weights import load_model, save_weights
from acai_omr.train.common import (
    Trainer,
    cleanup_runtime,
    param_groups,
    read_log,
    seed_everything,
    setup_runtime,
    unwrap,
)
from acai_omr.train.reward import RewardComponents, RewardParams, RewardScorer, RewardWeights, combine
from acai_omr.train.supervised import build_train_data, make_dev_evaluator

log = logging.getLogger(__name__)

PAD_ID, BOS_ID = VOCAB.pad_id, VOCAB.bos_id


# ---------------------------------------------------------------- curriculum


def anneal(step: int, cfg: GrpoConfig, start: float, end: float, total_steps: int | None = None) -> float:
    """`start` during exploration, then linear to `end` at anneal_end_frac of the run (`total_steps`, the
    trainer's horizon; default --steps), then `end`."""
    total = total_steps or cfg.steps
    begin, finish = cfg.explore_frac * total, cfg.anneal_end_frac * total
    if step <= begin:
        return float(start)
    if step >= finish or finish <= begin:
        return float(end)
    return start + (end - start) * (step - begin) / (finish - begin)


def schedule_values(step: int, cfg: GrpoConfig, model_max_len: int, total_steps: int | None = None) -> dict:
    """Every scheduled value at `step` of `total_steps` (all are logged)."""
    def at(start: float, end: float) -> float:
        return anneal(step, cfg, start, end, total_steps)

    return {
        "temperature": at(cfg.temperature_start, cfg.temperature_end),
        "top_k": round(at(cfg.top_k_start, cfg.top_k_end)),  # 0 = no truncation
        "max_len": max(1, min(model_max_len, round(at(cfg.max_len_start, cfg.max_len_end)))),
        "beta": at(cfg.beta_start, cfg.beta_end),
        "lambda_ce": at(cfg.lambda_ce_start, cfg.lambda_ce_end),
        "lambda_len": at(cfg.lambda_len_start, cfg.lambda_len_end),
    }


def reward_weights(cfg: GrpoConfig, lambda_len: float) -> RewardWeights:
    return RewardWeights(tedn=cfg.lambda_tedn, wf=cfg.lambda_wf, f1=cfg.lambda_f1, rep=cfg.lambda_rep, len=lambda_len)


# ---------------------------------------------------------------- the objective's pieces


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(R − group mean) / (group std + ε) for rows laid out image-major, G rows per image.

    The std is the population std, so a group whose samples all score the same
    gets advantage 0 (it carries no signal), and G = 2 works.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be a flat tensor of groups of {group_size}, got {list(rewards.shape)}")
    groups = rewards.float().view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + eps)).view(-1)


def policy_token_stats(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                       top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: log-prob of `tokens` under the sampling transform, and the policy's entropy.

    The transform matches `inference.decode.sample`: <pad>/<bos> forbidden,
    logits / temperature, cut to the top_k (0 = all). The sampled token is
    always kept inside the top-k set, so a tie flipping between the cached and
    the full forward cannot give it probability 0. The entropy is that of the
    untempered policy (with <pad>/<bos> forbidden), in nats.
    """
    logits = logits.float().clone()
    logits[..., PAD_ID] = float("-inf")
    logits[..., BOS_ID] = float("-inf")
    policy_logp = F.log_softmax(logits, dim=-1)
    entropy = -(policy_logp.exp() * policy_logp.masked_fill(~torch.isfinite(policy_logp), 0.0)).sum(-1)
    scaled = logits / temperature
    safe_tokens = tokens.masked_fill(tokens == PAD_ID, VOCAB.eos_id)  # padding positions are masked out later
    chosen = scaled.gather(-1, safe_tokens[..., None])
    if top_k and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < torch.minimum(kth, chosen), float("-inf"))
    token_logp = F.log_softmax(scaled, dim=-1).gather(-1, safe_tokens[..., None]).squeeze(-1)
    return token_logp, entropy


def clipped_surrogate(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, clip_eps: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped objective per token, averaged over each sample's tokens, then over samples (to maximise)."""
    ratio = torch.exp(new_logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    mask = mask.float()
    per_sample = (surrogate * mask).sum(1) / mask.sum(1).clamp(min=1)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clipped = ((ratio - 1).abs() > clip_eps).float()
        stats = {"ratio_mean": (ratio * mask).sum() / n, "clip_frac": (clipped * mask).sum() / n}
    return per_sample.mean(), stats


class GrpoObjective(nn.Module):
    """The loss of one GRPO update, as one module (so DDP wraps a single forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.log_vocab = math.log(model.cfg.vocab_size)

    def train(self, mode: bool = True):
        """Stay in eval mode: dropout would make the scored policy differ from the sampling one."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images, widths, sample_ids, lengths, old_logp, advantages, gold_tokens, *,
                temperature: float, top_k: int, beta: float, lambda_ce: float, clip_eps: float):
        """images [B,1,H,W], sample_ids/old_logp [B·G, L] (image-major), gold_tokens [B, T] -> (loss, stats)."""
        group = sample_ids.shape[0] // images.shape[0]
        memory, valid = self.model.encode(images, widths)
        decoder = self.model.decoder
        # the samples: teacher-forced on their own tokens, <bos> first
        rows_memory, rows_valid = memory.repeat_interleave(group, 0), valid.repeat_interleave(group, 0)
        tokens_in = torch.cat([torch.full_like(sample_ids[:, :1], BOS_ID), sample_ids[:, :-1]], dim=1)
        logits = decoder(tokens_in, rows_memory, rows_valid)
        new_logp, entropy = policy_token_stats(logits, sample_ids, temperature, top_k)
        mask = torch.arange(sample_ids.shape[1], device=sample_ids.device)[None, :] < lengths[:, None]
        surrogate, stats = clipped_surrogate(new_logp, old_logp, advantages, mask, clip_eps)
        maskf = mask.float()
        entropy_norm = ((entropy * maskf).sum(1) / maskf.sum(1).clamp(min=1) / self.log_vocab).mean()
        loss = -surrogate - beta * entropy_norm
        stats.update({"surrogate": surrogate.detach(), "entropy": entropy_norm.detach()})
        if lambda_ce > 0:
            gold_logits = decoder(gold_tokens[:, :-1], memory, valid)
            ce = F.cross_entropy(gold_logits.float().reshape(-1, gold_logits.shape[-1]),
                                 gold_tokens[:, 1:].reshape(-1), ignore_index=PAD_ID)
            loss = loss + lambda_ce * ce
            stats["ce"] = ce.detach()
        return loss, stats


# ---------------------------------------------------------------- rollouts


class GoldMusicXml:
    """Gold MusicXML (a file path or XML text) of each system of a split, or of a run of its measures.

    A manifest record naming a `musicxml` file gives that file; otherwise the
    gold LMX is delinearized (as `inference.evaluate` does for dev), once. A
    measure crop (`crop` = (first measure, count), as the dataset cut it) is
    scored against the delinearized LMX of just those measures: the system's
    file would charge a sample for every measure the crop does not show.
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.split_dir = Path(root) / split
        self.records = {str(r["id"]): r for r in read_manifest(self.split_dir / "manifest.jsonl")}
        self._cache: dict[str, str] = {}

    def __call__(self, system_id: str, crop: tuple[int, int] | None = None) -> str:
        key = (system_id, None if crop is None else tuple(crop))
        if key not in self._cache:
            record = self.records[system_id]
            lmx = record["lmx"].split() if isinstance(record["lmx"], str) else list(record["lmx"])
            if crop is not None:
                self._cache[key] = delinearize(measure_slice(lmx, *crop)).to_musicxml()
            elif record.get("musicxml"):
                self._cache[key] = str(self.split_dir / record["musicxml"])
            else:
                self._cache[key] = delinearize(lmx).to_musicxml()
        return self._cache[key]


@dataclass
class Rollout:
    """One batch of samples with their rewards, ready for one or more updates."""

    images: torch.Tensor
    widths: torch.Tensor
    gold_tokens: torch.Tensor
    sample_ids: torch.Tensor
    old_logp: torch.Tensor
    lengths: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    components: list[RewardComponents] = field(default_factory=list)
    finished: torch.Tensor | None = None

    def stats(self) -> dict:
        """Means of the reward and of each of its components, for the log."""
        n = max(1, len(self.components))
        out = {
            "reward_mean": self.rewards.mean().item(), "reward_std": self.rewards.std(unbiased=False).item(),
            "reward_max": self.rewards.max().item(), "adv_abs_mean": self.advantages.abs().mean().item(),
            "sample_len_mean": self.lengths.float().mean().item(),
        }
        if self.finished is not None:
            out["finished_rate"] = self.finished.float().mean().item()
        finite_tedn = [c.tedn for c in self.components if math.isfinite(c.tedn)]
        out["tedn_mean"] = sum(finite_tedn) / len(finite_tedn) if finite_tedn else None
        for name in ("tedn_score", "well_formedness", "f1", "repeat_penalty", "len_penalty", "n_errors"):
            out[name] = sum(float(getattr(c, name)) for c in self.components) / n
        out["unparseable_rate"] = sum(c.unparseable for c in self.components) / n
        out["scoring_errors"] = sum(bool(c.error) for c in self.components)
        return out


def make_rollout(model: nn.Module, batch: dict, cfg: GrpoConfig, sched: dict, scorer: RewardScorer,
                 gold_xml) -> Rollout:
    """Sample G sequences per image (one batched, KV-cached decode), score them, normalise per group."""
    images, widths, gold = batch["images"], batch["widths"], batch["tokens"]
    result = sample(model, images, widths, n_samples=cfg.group_size, temperature=sched["temperature"],
                    top_k=sched["top_k"] or None, max_len=sched["max_len"])
    rows = result.token_ids.shape[0]
    preds = [VOCAB.decode(result.sequence(r)) for r in range(rows)]
    gold_tokens = [VOCAB.decode(row.tolist()) for row in gold.cpu()]
    image_of = result.image_index.tolist()
    golds = [gold_tokens[i] for i in image_of]
    xmls = [gold_xml(batch["ids"][i], batch["crops"][i]) for i in image_of]
    components = scorer.score(preds, golds, xmls)
    weights = reward_weights(cfg, sched["lambda_len"])
    rewards = torch.tensor([combine(c, weights) for c in components], dtype=torch.float32)
    advantages = group_advantages(rewards, cfg.group_size, cfg.adv_eps)
    device = images.device
    return Rollout(images, widths, gold, result.token_ids, result.logprobs.float(), result.lengths,
                   rewards.to(device), advantages.to(device), components, result.finished)


# ---------------------------------------------------------------- entry point


def validate_config(cfg: GrpoConfig) -> str | None:
    """A message for the first unusable setting, else None."""
    checks = [
        (bool(cfg.init), "--init WEIGHTS_DIR is required (the supervised model's weights folder)"),
        (cfg.steps >= 1 and cfg.batch_size >= 1, "--steps and --batch-size must be at least 1"),
        (cfg.group_size >= 2, "--group-size must be at least 2 (advantages compare samples within a group)"),
        (cfg.updates_per_rollout >= 1, "--updates-per-rollout must be at least 1"),
        (cfg.lr > 0, "--lr must be positive"),
        (cfg.log_every >= 1 and cfg.ckpt_every >= 1, "--log-every and --ckpt-every must be at least 1"),
        (cfg.keep_ckpts >= 0, "--keep-ckpts must be 0 or more"),
        (cfg.clip_eps > 0 and cfg.adv_eps > 0, "--clip-eps and --adv-eps must be positive"),
        (cfg.temperature_start > 0 and cfg.temperature_end > 0, "temperatures must be positive"),
        (cfg.top_k_start >= 0 and cfg.top_k_end >= 0, "top-k values must be >= 0 (0 = no truncation)"),
        (cfg.max_len_start >= 1 and cfg.max_len_end >= 1, "max-len values must be at least 1"),
        (0 <= cfg.explore_frac <= cfg.anneal_end_frac <= 1,
         "need 0 <= --explore-frac <= --anneal-end-frac <= 1"),
        (cfg.tedn_mode in ("cost", "percent"), "--tedn-mode must be cost or percent"),
        (cfg.tedn_flavor in ("lmx", "full"), "--tedn-flavor must be lmx or full"),
        (cfg.len_tau > 0 and cfg.len_delta >= 0, "--len-tau must be positive and --len-delta >= 0"),
        (cfg.reward_workers >= 0, "--reward-workers must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            return message
    return None


def train_grpo(cfg: GrpoConfig, evaluate=None, stop_at: int | None = None):
    """Run (or resume) GRPO from cfg.init; returns the Trainer.

    `evaluate(model, step) -> metrics with "score"` overrides the greedy dev
    TEDn evaluation (lower is better). The starting weights' score is the bar:
    `best_weights/` is written only by an evaluation that beats it.
    """
    problem = validate_config(cfg)
    if problem:
        raise ValueError(problem)
    if cfg.eval_every <= 0:  # evaluate only before the first and after the last step (the caller's cfg is kept)
        cfg = dataclasses.replace(cfg, eval_every=cfg.steps)
    runtime = setup_runtime(cfg.threads, cfg.num_workers, cfg.precision)
    scorer = RewardScorer(RewardParams.from_config(cfg), cfg.reward_workers)
    try:
        seed_everything(cfg.seed + runtime.rank)
        model, model_cfg = load_model(cfg.init, device="cpu")
        objective = GrpoObjective(model)
        groups = param_groups(objective, cfg.lr, cfg.weight_decay)
        # a measure reader (weights with read_measures) is rewarded on what it reads: crops of 1..N measures
        reads = model_cfg.read_measures
        dataset, make_batch_sampler, collate = build_train_data(cfg, model_cfg, runtime, return_clean=False,
                                                                crop_measures=1.0 if reads > 0 else 0.0,
                                                                max_crop_measures=max(1, reads))
        if reads > 0 and runtime.is_main:
            print(f"the weights read {reads} measure(s) at a time: rollouts sample crops of 1..{reads} measures",
                  flush=True)
        gold_xml = GoldMusicXml(cfg.data, "train")
        model_max_len = model_cfg.max_tokens - 1
        cache: dict = {}

        def loss_fn(obj, batch, step):
            sched = schedule_values(step, cfg, model_max_len, trainer.horizon)
            fresh = step % cfg.updates_per_rollout == 0 or "rollout" not in cache
            if fresh:
                cache["rollout"] = make_rollout(unwrap(obj).model, batch, cfg, sched, scorer, gold_xml)
                cache["stats"] = cache["rollout"].stats()
            ro = cache["rollout"]
            loss, stats = obj(ro.images, ro.widths, ro.sample_ids, ro.lengths, ro.old_logp, ro.advantages,
                              ro.gold_tokens, temperature=sched["temperature"], top_k=sched["top_k"],
                              beta=sched["beta"], lambda_ce=sched["lambda_ce"], clip_eps=cfg.clip_eps)
            return loss, {**stats, **cache["stats"], **sched, "fresh_rollout": fresh}

        if evaluate is not None:
            eval_fn = lambda step: evaluate(model, step)  # noqa: E731
        else:
            eval_fn = make_dev_evaluator(cfg, model, model_cfg, runtime.device) if runtime.is_main else None
        export_dir = Path(cfg.out) / "best_weights"

        def on_best(step, metrics):
            save_weights(model, model_cfg, export_dir)

        trainer = Trainer(cfg, runtime, objective, groups, dataset, make_batch_sampler, collate, loss_fn,
                          evaluate=eval_fn, on_best=on_best, worker_init_fn=seed_worker,
                          extra_state=lambda: {"model_config": model_cfg.to_dict(), "phase": "grpo",
                                               "init": cfg.init})
        resuming = cfg.resume and (Path(cfg.out) / "last.pt").exists()
        if not resuming and runtime.is_main and eval_fn is not None:
            model.to(runtime.device)
            with torch.no_grad():
                before = eval_fn(0)
            trainer.state.best_score, trainer.state.best_step = float(before["score"]), 0
            # a fresh run: no records or kept weights of an older run in this folder may survive
            import shutil

            trainer.log.path.unlink(missing_ok=True)
            (Path(cfg.out) / "best.pt").unlink(missing_ok=True)
            shutil.rmtree(export_dir, ignore_errors=True)
            trainer.log.write({"step": 0, "kind": "eval_before", **before})
        trainer.train(stop_at)
        if runtime.is_main and trainer.log.path.exists():
            records = read_log(trainer.log.path)
            before = next((r for r in records if r.get("kind") == "eval_before"), None)
            evals = [r for r in records if r.get("kind") == "eval"]
            summary = {"step": trainer.state.step, "kind": "summary",
                       "score_before": before["score"] if before else None,
                       "score_after": evals[-1]["score"] if evals else None,
                       "best_score": trainer.state.best_score, "best_step": trainer.state.best_step,
                       "weights_kept": (export_dir / "model.safetensors").exists() and trainer.state.best_step > 0}
            trainer.log.write(summary)
            trainer.summary = summary
        return trainer
    finally:
        scorer.close()
        cleanup_runtime(runtime)
