"""Training machinery shared by the MAE and supervised phases.

One loop (`Trainer`) runs any objective that maps a batch to a loss: it owns
the device set-up (CPU threads, one GPU with bf16 autocast, or torchrun/DDP),
the AdamW + warm-up/cosine schedule, gradient clipping, the JSONL log,
periodic dev evaluation, the best checkpoint, and exact resume (model,
optimizer, scheduler, step, data position and every RNG state), so a run that
is stopped and resumed follows the same trajectory as one that is not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


# ---------------------------------------------------------------- devices


@dataclass
class Runtime:
    """Where this process trains and how it relates to its peers."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: torch.dtype | None = None  # autocast dtype, None = full precision

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(threads: int = 0, num_workers: int = 0, precision: str = "auto", device: str | None = None) -> Runtime:
    """Pick the device, join the process group when launched by torchrun, size CPU threads.

    torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; we then use NCCL on GPUs and gloo
    on CPUs. On CPU, the cores are split between the training processes on
    this machine, and data workers get theirs first, so nothing oversubscribes.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        auto = max(1, cores // max(1, local_world) - num_workers)
        torch.set_num_threads(threads if threads > 0 else auto)
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    amp = None
    if precision == "bf16" or (precision == "auto" and dev.type == "cuda"):
        amp = torch.bfloat16
    return Runtime(dev, rank, world_size, local_rank, amp)


def cleanup_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- randomness


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- optimisation


class WarmupCosine:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine down to `min_ratio` at `total` steps.

    A callable object (not a lambda) so LambdaLR can save and restore it.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = max(0, warmup), max(1, total), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)\.")


def encoder_layer_id(name: str, num_layers: int) -> int:
    """Depth of an encoder parameter for LLRD: 0 = patch/position embeddings, i+1 = block i, L+1 = after."""
    match = _LAYER_INDEX.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(key in name for key in ("patch", "pos", "embed", "cls")):
        return 0
    return num_layers + 1


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    encoder_prefix: str = "encoder.",
    num_encoder_layers: int | None = None,
    scaled: dict[str, float] | None = None,
) -> list[dict]:
    """AdamW groups with layer-wise LR decay on the encoder and no decay on biases/norms.

    Encoder parameters at depth d (see `encoder_layer_id`) get
    lr * layer_decay ** (L + 1 - d): the pretrained bottom layers move least.
    Everything outside the encoder (the decoder) trains at the full lr, but for parameters whose
    name starts with a key of `scaled`, which get lr times its value (a head added to trained
    weights, starting from zero, that would otherwise move at the rate tuned for converged ones).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if num_encoder_layers is None:
        found = [int(m.group(1)) for n, _ in named if n.startswith(encoder_prefix) for m in [_LAYER_INDEX.search(n)] if m]
        num_encoder_layers = max(found) + 1 if found else 0
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in named:
        scale = 1.0
        if layer_decay != 1.0 and name.startswith(encoder_prefix):
            depth = encoder_layer_id(name[len(encoder_prefix):], num_encoder_layers)
            scale = layer_decay ** (num_encoder_layers + 1 - depth)
        scale *= next((value for prefix, value in (scaled or {}).items() if name.startswith(prefix)), 1.0)
        decay = param.ndim >= 2 and "embedding" not in name  # no decay on biases, norms, token/position tables
        key = (scale, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr * scale, "lr_scale": scale,
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return sorted(groups.values(), key=lambda g: (g["lr_scale"], g["weight_decay"]))


def build_optimizer(groups: list[dict], lr: float, beta2: float, device: torch.device) -> torch.optim.AdamW:
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    fused = device.type == "cuda"
    return torch.optim.AdamW(clean, lr=lr, betas=(0.9, beta2), fused=fused)


# ---------------------------------------------------------------- logging and checkpoints


class JsonlLog:
    """Append-only JSONL run log (main process only); each record is one line."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run rewrites what the crashed run logged after its checkpoint."""
        if not (self.enabled and self.path.exists()):
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file, so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------- the loop


LossFn = Callable[[nn.Module, dict, int], tuple[torch.Tensor, dict]]
EvalFn = Callable[[int], dict]


REFIT_AT = (25, 200)  # session steps after which a --time-limit-min run sizes its schedule
REFIT_EVERY = 200  # ...and every so many steps after the last of those, at the pace of the steps since the last fit
REFIT_UNTIL = 0.8  # no refit past this share of the schedule: its decay is under way


class TimeBudget:
    """A session's wall-clock limit (`--time-limit-min`; 0 = none): when to measure the pace, how many
    steps fit in what is left, and whether time is up (agreed by every process under DDP).

    The first steps pay for allocator and kernel warm-up, so the pace is timed from the fifth step of
    this session, and measured again after more (REFIT_AT): batches differ in width, so 20 steps can
    misjudge the pace by a fifth (a run fitted to 1,641 steps stopped near 1,350, before its decay).
    After that the pace of each stretch of REFIT_EVERY steps refits it, so a machine loaded by other
    work at the start (or later) does not cut the run short (a run fitted at 4.7 s/step ended after
    85 of its 108 minutes) or overrun its time before the decay ends.
    15% of what is left is kept for evaluations and checkpoints.
    """

    def __init__(self, minutes: float, runtime: "Runtime"):
        self.seconds = minutes * 60
        self.rt = runtime
        self.started = time.perf_counter()
        self.session_steps = 0
        self.timed_from: float | None = None
        self.last_fit: tuple[int, float] | None = None  # (session step, time) of the last fit

    @property
    def limited(self) -> bool:
        return self.seconds > 0

    def step_done(self, progress: float = 0.0) -> float | None:
        """Count a step; the seconds per step when the schedule should be (re)fitted now, else None.
        `progress` is the share of the current schedule done (no periodic refit late in the decay)."""
        self.session_steps += 1
        if not self.limited:
            return None
        now = time.perf_counter()
        if self.session_steps == 5:
            self.timed_from = now
        elif self.timed_from is None:
            return None
        elif self.session_steps in REFIT_AT:
            self.last_fit = (self.session_steps, now)
            return (now - self.timed_from) / max(1, self.session_steps - 5)
        elif (self.last_fit is not None and self.session_steps - self.last_fit[0] >= REFIT_EVERY
              and progress < REFIT_UNTIL):
            steps, since = self.session_steps - self.last_fit[0], self.last_fit[1]
            self.last_fit = (self.session_steps, now)
            return (now - since) / steps
        return None

    def steps_that_fit(self, step: int, per_step: float, cap: int) -> int:
        """The schedule length (at most `cap`) whose remaining steps end with 15% of the time to spare."""
        remaining = self.seconds - (time.perf_counter() - self.started)
        fit = step + int(0.85 * remaining / max(per_step, 1e-6))
        if self.rt.distributed:
            box = torch.tensor([float(fit)], device=self.rt.device)
            dist.all_reduce(box, op=dist.ReduceOp.MIN)
            fit = int(box.item())
        return max(step + 1, min(cap, fit))

    def out_of_time(self) -> bool:
        over = self.limited and time.perf_counter() - self.started > self.seconds
        if self.rt.distributed:  # all ranks must stop at the same step
            flag = torch.tensor([float(over)], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already trained on (per process)
    best_score: float = math.inf
    best_step: int = -1
    train_seconds: float = 0.0  # wall time spent in earlier sessions of this run
    horizon: int = 0  # schedule length chosen to fit --time-limit-min (0 = --steps)
    warmup: int = 0  # warm-up length chosen with the horizon (0 = derived from it)


class Trainer:
    """Runs `loss_fn` over the data for `cfg.steps` optimizer steps (or what a time limit fits: `horizon`),
    resumable at any checkpoint.

    `objective` is the module that computes the loss (wrapped in DDP when
    distributed, so every forward goes through DDP); `loss_fn(objective, batch,
    step)` returns (loss, extra values to log). `make_batch_sampler(epoch,
    skip)` gives this process's batches of an epoch minus the first `skip`. `evaluate(step)` runs on the
    main process and returns metrics with a `score` key (lower is better); the
    best score's weights are kept in best.pt and passed to `on_best`.
    """

    def __init__(
        self,
        cfg,
        runtime: Runtime,
        objective: nn.Module,
        groups: list[dict],
        dataset,
        make_batch_sampler: Callable[[int, int], Any],
        collate: Callable,
        loss_fn: LossFn,
        evaluate: EvalFn | None = None,
        on_best: Callable[[int, dict], None] | None = None,
        extra_state: Callable[[], dict] | None = None,
        worker_init_fn: Callable[[int], None] | None = None,
        split_batch: Callable[[dict], list[tuple[dict, float]]] | None = None,
    ):
        self.cfg, self.rt = cfg, runtime
        self.horizon = cfg.steps  # the schedule's length: --steps, or what a time limit fits (cfg is never changed)
        self.out = Path(cfg.out)
        self.objective = objective.to(runtime.device)
        self.optimizer = build_optimizer(groups, cfg.lr, cfg.beta2, runtime.device)
        self.schedule = WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.dataset, self.make_batch_sampler, self.collate = dataset, make_batch_sampler, collate
        self.worker_init_fn = worker_init_fn
        self.split_batch = split_batch
        self.loss_fn, self.evaluate, self.on_best = loss_fn, evaluate, on_best
        self.extra_state = extra_state or (lambda: {})
        self.state = LoopState()
        self.log = JsonlLog(self.out / "log.jsonl", enabled=runtime.is_main)
        self.model_for_ddp: nn.Module = self.objective
        if runtime.distributed:
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.model_for_ddp = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)

    # -- checkpoints

    def checkpoint(self) -> dict:
        rng = capture_rng()
        if self.rt.distributed:
            gathered: list = [None] * self.rt.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        return {
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": asdict(self.state),
            "rng": rng_all,
            "world_size": self.rt.world_size,
            "config": asdict(self.cfg),
            **self.extra_state(),
        }

    def save(self) -> None:
        ckpt = self.checkpoint()  # collective when distributed: every rank calls it
        if self.rt.is_main:
            atomic_save(ckpt, self.out / "last.pt")
            if self.cfg.keep_ckpts > 0:
                self._keep_copy()

    def _keep_copy(self) -> None:
        """step-NNNNNN.pt beside last.pt for the last cfg.keep_ckpts checkpoints: the low-LR tail of a
        run, whose mean `acai-omr train export` writes."""
        shutil.copyfile(self.out / "last.pt", self.out / f"step-{self.state.step:06d}.pt")
        for old in sorted(self.out.glob("step-*.pt"))[:-self.cfg.keep_ckpts]:
            old.unlink()

    def try_resume(self) -> bool:
        path = self.out / "last.pt"
        if not (self.cfg.resume and path.exists()):
            return False
        ckpt = load_checkpoint(path)
        self.objective.load_state_dict(ckpt["objective"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scheduler.lr_lambdas = [self.schedule] * len(self.optimizer.param_groups)  # keep the current cfg's shape
        self.state = LoopState(**ckpt["loop"])
        if self.state.horizon:
            self._set_horizon(self.state.horizon)
        if ckpt.get("world_size") == self.rt.world_size:
            restore_rng(ckpt["rng"][self.rt.rank])
        else:  # a different process count cannot replay the same streams; stay deterministic anyway
            seed_everything(self.cfg.seed + 1000 * self.state.step + self.rt.rank)
        if self.rt.is_main:
            self.log.truncate_after(self.state.step)
        return True

    # -- data

    def _epoch_loader(self, epoch: int, skip: int):
        sampler = self.make_batch_sampler(epoch, skip)  # this rank's batches of `epoch`, the first `skip` left out
        # A private generator: creating a loader must not draw from the global RNG,
        # or a resumed run (which creates one more loader) would drift.
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.cfg.num_workers,
            pin_memory=self.rt.device.type == "cuda",
            generator=gen,
            worker_init_fn=self.worker_init_fn,
            persistent_workers=False,
            # not forked from this process: a worker forked from a trainer holding 11 GB keeps the
            # old copy of every page the trainer writes afterwards, and at 192 px the pair outgrew
            # 24 GiB at the first epoch boundary
            multiprocessing_context="forkserver" if self.cfg.num_workers > 0 else None,
        )

    def _batches(self) -> Iterator[dict]:
        while True:
            loader = self._epoch_loader(self.state.epoch, self.state.batches_in_epoch)
            produced = False
            for batch in loader:
                produced = True
                yield batch
            if not produced and self.state.batches_in_epoch == 0:
                raise RuntimeError("the training data yields no batch: is the split empty or the batch too large?")
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def _to_device(self, batch: dict) -> dict:
        nb = self.rt.device.type == "cuda"
        return {k: (v.to(self.rt.device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}

    # -- evaluation

    def _run_eval(self) -> dict | None:
        metrics = None
        if self.rt.is_main and self.evaluate is not None:
            was_training = self.objective.training
            self.objective.eval()
            rng = capture_rng()  # evaluation must not shift the training random streams
            with torch.no_grad():
                metrics = self.evaluate(self.state.step)
            restore_rng(rng)
            self.objective.train(was_training)
            score = float(metrics["score"])
            improved = score < self.state.best_score
            if improved:
                self.state.best_score, self.state.best_step = score, self.state.step
                atomic_save({"objective": self.objective.state_dict(), "step": self.state.step, "metrics": metrics,
                             "config": asdict(self.cfg), **self.extra_state()}, self.out / "best.pt")
                if self.on_best is not None:
                    self.on_best(self.state.step, metrics)
            self.log.write({"step": self.state.step, "kind": "eval", **metrics, "best": improved,
                            "best_score": self.state.best_score, "best_step": self.state.best_step})
        if self.rt.distributed:  # everyone learns the best score so their checkpoints agree
            box = [self.state.best_score, self.state.best_step]
            dist.broadcast_object_list(box, src=0)
            self.state.best_score, self.state.best_step = box
        return metrics

    # -- training

    def _set_horizon(self, steps: int) -> None:
        """Size the run (LR, and the schedules that read `self.horizon`) to `steps`.

        Warm-up is capped at a tenth of the new horizon: a 300-step warm-up in a
        112-step run would never reach the peak learning rate.
        """
        self.horizon = steps
        self.schedule.total = max(1, steps)
        self.schedule.warmup = self.state.warmup or min(self.cfg.warmup_steps, max(1, steps // 10))
        self.state.horizon = steps

    def _base_lr(self) -> float:
        """The schedule's rate now, as the run's --lr sets it: groups trained at a multiple of it
        (`param_groups`' `scaled`, layer decay) carry their factor as `lr_scale`."""
        group = self.optimizer.param_groups[-1]
        return group["lr"] / group.get("lr_scale", 1.0)

    def _fit_to_time_limit(self, budget: TimeBudget, per_step: float) -> None:
        """With a time limit, size the schedule so warm-up and cosine decay complete before time runs out."""
        fit = budget.steps_that_fit(self.state.step, per_step, self.cfg.steps)
        # a tenth of the fitted run, but not over before it begins: a short fit on slow steps (31 steps,
        # warm-up 3, fitted at step 25) would go straight from the long warm-up's tiny rates into the decay
        if not (self.state.warmup and self.state.step >= self.state.warmup):  # a refit after warm-up keeps it
            self.state.warmup = min(self.cfg.warmup_steps, max(self.state.step + 1, fit // 10))
        self._set_horizon(fit)
        self.log.write({"step": self.state.step, "kind": "plan", "steps": fit, "seconds_per_step": per_step})
        if self.rt.is_main:
            print(f"time limit {self.cfg.time_limit_min} min: schedule set to {fit} steps "
                  f"({per_step:.3f} s/step)", flush=True)

    def _forward_backward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """The batch's loss and its gradients, slice by slice where `split_batch` cuts it (the memory of
        one slice, the gradient of the whole); returns the loss and the logged values, slice-weighted."""
        parts = self.split_batch(batch) if self.split_batch is not None else [(batch, 1.0)]
        total, extra, weight = 0.0, {}, {}
        for i, (part, share) in enumerate(parts):
            last = i == len(parts) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model_for_ddp, "no_sync") \
                else self.model_for_ddp.no_sync()
            with sync:
                with self.rt.autocast():
                    loss, values = self.loss_fn(self.model_for_ddp, part, self.state.step)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.state.step}")
                (loss * share).backward()
            total = total + loss.detach() * share  # on the loss's device: no host sync per step
            for key, value in values.items():  # a value some slices lack (no header in them) averages the rest
                if torch.is_tensor(value) or isinstance(value, float):
                    extra[key] = extra.get(key, 0.0) + value * share
                    weight[key] = weight.get(key, 0.0) + share
                else:
                    extra[key] = value
        extra = {k: (v / weight[k] if k in weight else v) for k, v in extra.items()}
        return total, extra

    def train(self, stop_at: int | None = None) -> LoopState:
        """Train until the horizon (or `stop_at`, an interruption that keeps the horizon's schedule)."""
        cfg, rt = self.cfg, self.rt
        resumed = self.try_resume()
        if rt.is_main:
            self.log.write({"step": self.state.step, "kind": "start", "resumed": resumed,
                            "world_size": rt.world_size, "device": str(rt.device), "config": asdict(cfg)})
        self.model_for_ddp.train()
        budget = TimeBudget(cfg.time_limit_min, rt)
        started = time.perf_counter()
        window_start, window_samples, window_tokens = time.perf_counter(), 0, 0
        batches = self._batches()
        stop_reason = "steps"
        fitted_here = False
        while self.state.step < (self.horizon if stop_at is None else min(stop_at, self.horizon)):
            batch = self._to_device(next(batches))
            self.optimizer.zero_grad(set_to_none=True)
            loss, extra = self._forward_backward(batch)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.objective.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            self.state.batches_in_epoch += 1
            window_samples += int(batch["images"].shape[0])
            if "tokens" in batch:
                window_tokens += int((batch["tokens"] != 0).sum())

            step = self.state.step
            per_step = budget.step_done(step / max(1, self.horizon))
            # a resumed run keeps the horizon an earlier session fitted, unless this one is fitting it
            if per_step is not None and (not self.state.horizon or fitted_here):
                self._fit_to_time_limit(budget, per_step)
                fitted_here = True
            last_step = self.horizon if stop_at is None else min(stop_at, self.horizon)
            if step % cfg.log_every == 0 or step == self.horizon:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": step, "kind": "train", "epoch": self.state.epoch, "loss": loss.item(),
                    "grad_norm": float(grad_norm), "lr": self._base_lr(),
                    "samples_per_s": window_samples * rt.world_size / max(elapsed, 1e-9),
                    "tokens_per_s": window_tokens * rt.world_size / max(elapsed, 1e-9),
                    "elapsed_s": self.state.train_seconds + time.perf_counter() - started,
                    **{k: (v.item() if torch.is_tensor(v) else v) for k, v in extra.items()},
                }
                self.log.write(record)
                if rt.is_main:
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "kind"), flush=True)
                window_start, window_samples, window_tokens = time.perf_counter(), 0, 0

            out_of_time = budget.out_of_time()
            finishing = step >= last_step or out_of_time
            if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or finishing):
                self._run_eval()
                window_start = time.perf_counter()  # evaluation time is not training throughput
            if step % cfg.ckpt_every == 0 or finishing:
                self.state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                self.save()
            if out_of_time:
                stop_reason = "time_limit"
                break
        if rt.is_main:
            self.log.write({"step": self.state.step, "kind": "end", "reason": stop_reason,
                            "best_score": self.state.best_score, "best_step": self.state.best_step})
        return self.state
