"""Supervised image -> LMX training: teacher forcing, then scheduled sampling.

Scheduled sampling (two passes per step) closes the gap between training,
where the decoder always sees the gold prefix, and inference, where it sees
its own predictions:

1. pass 1, teacher-forced and without gradient, gives the model's predictions
   for every position;
2. pass 2 feeds, at each position after <bos>, with probability 1 - p_tf the
   Gumbel-softmax of pass-1's logits for that position times the embedding
   matrix (a soft, differentiable "predicted token"), else the gold embedding.

p_tf falls from 1 to `p_tf_min` and the Gumbel temperature from `tau_start`
to `tau_end` over the ramp. The encoder can start from an MAE checkpoint and
then trains with layer-wise learning-rate decay.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from acai_omr.config import DegradeConfig, ModelConfig, SupervisedTrainConfig
from acai_omr.data.dataset import SystemDataset, collate_systems, seed_worker, split_systems_batch
from acai_omr.data.sampler import WidthBucketSampler
from acai_omr.inference.evaluate import evaluate_model, load_eval_samples
from acai_omr.lmx.reading_order import reading_order
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model import OMRModel
from acai_omr.model.heads import NoteMapHead, PatchReconstructionHead, ReadingOrderCTCHead, SymbolPresenceHead
from acai_omr.model.model import header_targets, masked_mean
from acai_omr.model.weights import load_config, load_model, save_weights
from acai_omr.train.common import (
    Trainer,
    cleanup_runtime,
    load_checkpoint,
    param_groups,
    seed_everything,
    setup_runtime,
)

PAD_ID = VOCAB.pad_id

# ---------------------------------------------------------------- scheduled sampling


def sampling_schedule(step: int, cfg: SupervisedTrainConfig, total_steps: int | None = None) -> tuple[float, float]:
    """(teacher-forcing probability, Gumbel temperature) at `step` of `total_steps` (the trainer's horizon;
    default --steps): constant, then a linear/geometric ramp."""
    total = total_steps or cfg.steps
    start = cfg.ss_start * total
    ramp = max(1.0, cfg.ss_ramp * total)
    if step < start:
        return 1.0, cfg.tau_start
    progress = min(1.0, (step - start) / ramp)
    p_tf = 1.0 - (1.0 - cfg.p_tf_min) * progress
    tau = cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** progress
    return p_tf, tau


def mix_embeddings(
    embedding: nn.Embedding,
    tokens_in: torch.Tensor,
    pass1_logits: torch.Tensor,
    p_tf: float,
    tau: float,
    hard: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input embeddings [B,T,D] mixing gold and predicted tokens, and the mask of predicted positions.

    pass1_logits[:, t] predicts the token at t+1, so position t >= 1 may take
    the Gumbel-softmax of pass1_logits[:, t-1] @ embedding matrix. <bos> and
    padding always keep their gold embedding. With p_tf = 1 the result is the
    gold embedding exactly.
    """
    gold = embedding(tokens_in)
    weights = F.gumbel_softmax(pass1_logits[:, :-1].float(), tau=tau, hard=hard)  # [B, T-1, V]
    predicted = weights.to(embedding.weight.dtype) @ embedding.weight  # [B, T-1, D]
    predicted = torch.cat([gold[:, :1], predicted.to(gold.dtype)], dim=1)
    use_predicted = torch.rand(tokens_in.shape, device=tokens_in.device) >= p_tf
    use_predicted[:, 0] = False
    use_predicted &= tokens_in != PAD_ID
    return torch.where(use_predicted[..., None], predicted, gold), use_predicted


def drop_tokens(tokens_in: torch.Tensor, rate: float) -> torch.Tensor:
    """Word dropout: each real input token after <bos> becomes <pad> with probability `rate`.

    The decoder can then no longer finish a bar from its prefix alone and has to
    read the image (Bowman et al. 2016 use it against the same collapse in VAEs).
    """
    if rate <= 0.0:
        return tokens_in
    drop = torch.rand(tokens_in.shape, device=tokens_in.device) < rate
    drop[:, 0] = False
    return tokens_in.masked_fill(drop & (tokens_in != PAD_ID), PAD_ID)


def reading_order_targets(tokens: torch.Tensor) -> list[list[int]]:
    """[B, T] LMX ids (with <bos>/<eos>/<pad>) -> each row's visible notes as ids, in reading order."""
    return [VOCAB.encode(reading_order(VOCAB.decode(row.tolist()))) for row in tokens]


def memory_spread(memory: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over channels of each image's std of the encoder output across its patches (0 = collapsed)."""
    memory = memory.float()
    count = valid.sum(dim=1).clamp(min=2).float()[:, None, None]
    squares = masked_mean((memory - masked_mean(memory, valid)) ** 2, valid)
    return (squares * count / (count - 1)).sqrt().mean()  # unbiased over each image's patches


class SupervisedObjective(nn.Module):
    """The whole training step's forward (both passes) in one module, so DDP wraps a single call."""

    def __init__(self, model: nn.Module, *, label_smoothing: float = 0.0, gumbel_hard: bool = False,
                 token_dropout: float = 0.0, aux_symbols: float = 0.0, aux_recon: float = 0.0,
                 detach_memory: bool = False, aux_ctc: float = 0.0, aux_notes: float = 0.0,
                 aux_header: float = 0.0):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.gumbel_hard = gumbel_hard
        self.token_dropout = token_dropout
        self.aux_symbols = aux_symbols
        cfg = model.cfg
        self.symbol_head = SymbolPresenceHead(cfg.enc_dim, cfg.vocab_size) if aux_symbols > 0 else None
        self.aux_recon = aux_recon
        self.detach_memory = detach_memory
        self.recon_head = (PatchReconstructionHead(cfg.enc_dim, cfg.patch_height, cfg.patch_width)
                           if aux_recon > 0 else None)
        self.aux_ctc = aux_ctc
        self.ctc_head = (ReadingOrderCTCHead(cfg.enc_dim, cfg.vocab_size, cfg.image_height // cfg.patch_height)
                         if aux_ctc > 0 else None)
        self.aux_notes = aux_notes
        self.note_head = (NoteMapHead(cfg.enc_dim, cfg.image_height // cfg.patch_height, cfg.patch_height,
                                      cfg.patch_width, read_out=not cfg.pitch_pointer) if aux_notes > 0 else None)
        self.aux_header = aux_header
        if aux_header > 0 and getattr(model, "header", None) is None:
            raise ValueError("the header loss needs a model with a header head (ModelConfig.header_head)")

    def forward(self, images, widths, tokens, p_tf: float = 1.0, tau: float = 1.0, two_pass: bool | None = None,
                note_points: torch.Tensor | None = None, has_notes: torch.Tensor | None = None):
        """Mean token cross-entropy of tokens[:, 1:] given tokens[:, :-1] (plus the weighted auxiliary
        symbol, patch-reconstruction, reading-order CTC and note-map losses when enabled); returns
        (loss, stats). Token dropout applies in training mode only. `note_points`/`has_notes`: the
        batch's drawn notes (`collate_systems`), needed by the note-map loss."""
        tokens_in, targets = tokens[:, :-1], tokens[:, 1:]
        if self.training:
            tokens_in = drop_tokens(tokens_in, self.token_dropout)
        encoded, valid = self.model.encoder(images, widths)
        # detach_memory: the decoder reads the encoder but cannot train it, so it cannot silence it either
        memory = encoded.detach() if self.detach_memory else encoded
        decoder = self.model.decoder
        if two_pass is None:
            two_pass = p_tf < 1.0
        stats: dict[str, torch.Tensor | float] = {"p_tf": p_tf, "tau": tau}
        if two_pass:
            with torch.no_grad():
                pass1 = decoder(tokens_in, memory.detach(), valid)
            embeds, used = mix_embeddings(decoder.token_embedding, tokens_in, pass1, p_tf, tau, self.gumbel_hard)
            logits = decoder(tokens_in, memory, valid, input_embeds=embeds)
            mixable = tokens_in[:, 1:] != PAD_ID  # every real position after <bos>
            stats["mixed_frac"] = (used.sum() / mixable.sum().clamp(min=1)).detach()
        else:
            logits = decoder(tokens_in, memory, valid)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=PAD_ID, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            mask = targets != PAD_ID
            stats["token_acc"] = ((logits.argmax(-1) == targets) & mask).sum() / mask.sum().clamp(min=1)
        if self.symbol_head is not None:
            symbol_loss = self.symbol_head(encoded, valid, tokens)
            stats["symbol_loss"] = symbol_loss.detach()
            loss = loss + self.aux_symbols * symbol_loss
        if self.recon_head is not None:
            recon_loss = self.recon_head(encoded, valid, images)
            stats["recon_loss"] = recon_loss.detach()
            loss = loss + self.aux_recon * recon_loss
        if self.ctc_head is not None:
            ctc_loss = self.ctc_head(encoded, valid, reading_order_targets(tokens))
            stats["ctc_loss"] = ctc_loss.detach()
            loss = loss + self.aux_ctc * ctc_loss
        if self.note_head is not None:
            if note_points is None or has_notes is None:
                raise ValueError("the note-map loss needs the batch's note_points and has_notes")
            pointer = decoder.pointer
            if pointer is None:
                note_loss = self.note_head(encoded, valid, note_points, has_notes)
            else:  # the map the decoder reads its pitches from is the one the engraver's positions train
                note_loss = self.note_head.loss(pointer.note_map(encoded.float()), valid, note_points, has_notes)
            stats["note_loss"] = note_loss.detach()
            loss = loss + self.aux_notes * note_loss
        if self.aux_header > 0:
            header_loss, header_stats = self.header_loss(encoded, valid, tokens)
            stats.update(header_stats)
            loss = loss + self.aux_header * header_loss
        with torch.no_grad():
            stats["memory_spread"] = memory_spread(encoded, valid)
            if decoder.pointer is not None:  # how much the pitches come from where the pointer looks
                stats["pointer_gate"] = decoder.pointer.gate.detach().clone()
        return loss, stats

    def header_loss(self, encoded, valid, tokens):
        """Cross-entropy of the header head's key and time answers, over the rows whose first measure
        names a key (system starts and printed key changes); 0 for a batch without one."""
        key_logits, time_logits = self.model.header(encoded, valid)
        key, time, has = header_targets(tokens)
        if not bool(has.any()):
            return key_logits.sum() * 0.0, {}
        key_loss = F.cross_entropy(key_logits[has].float(), key[has])
        time_loss = F.cross_entropy(time_logits[has].float(), time[has])
        with torch.no_grad():
            stats = {"header_loss": (key_loss + time_loss).detach(),
                     "key_acc": (key_logits[has].argmax(-1) == key[has]).float().mean(),
                     "time_acc": (time_logits[has].argmax(-1) == time[has]).float().mean()}
        return key_loss + time_loss, stats


# ---------------------------------------------------------------- set-up


def model_config_named(name: str) -> ModelConfig:
    presets = {"small": ModelConfig.small, "large": ModelConfig.large}
    if name not in presets:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(presets)}")
    return presets[name]()


def load_mae_encoder(model: nn.Module, path: str | Path, model_cfg: ModelConfig) -> int:
    """Copy the encoder weights of an MAE run's checkpoint into `model.encoder`; returns the tensor count."""
    ckpt = load_checkpoint(Path(path))
    saved_cfg = ckpt.get("model_config")
    if saved_cfg is not None:
        fields = ("image_height", "patch_height", "patch_width", "enc_dim", "enc_depth", "enc_heads", "mlp_ratio")
        mismatch = [f for f in fields if saved_cfg.get(f) != getattr(model_cfg, f)]
        if mismatch:
            raise ValueError(f"MAE checkpoint {path} has a different encoder ({', '.join(mismatch)}); "
                             f"pretrain with the same --model preset")
    state = ckpt.get("objective", ckpt)
    encoder_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder_state:
        raise ValueError(f"{path} holds no encoder.* weights: is it an MAE checkpoint?")
    model.encoder.load_state_dict(encoder_state)
    return len(encoder_state)


def run_model_config(cfg: SupervisedTrainConfig) -> ModelConfig:
    """The architecture a run trains: the --model preset, or with --init-weights the weights' own
    shape (a continued run is the same model), with the memory centring of current presets switched
    on (it has no weights, and without it every earlier run's encoder collapsed). A run that sees
    only measure crops (`--crop-measures 1`) saves weights that read systems the same way, in runs
    of up to `--crop-max-measures` measures; any other run's weights read whole systems."""
    preset = model_config_named(cfg.model)
    read_measures = cfg.crop_max_measures if cfg.crop_measures >= 1.0 else 0
    if not cfg.init_weights:
        shape = dataclasses.replace(preset, read_measures=read_measures)
    else:
        shape = dataclasses.replace(load_config(cfg.init_weights), center_memory=preset.center_memory,
                                    read_measures=read_measures)
    # the conv stem and the sin-cos positions have no weights tied to the height: any height loads the same tensors
    if cfg.image_height:
        shape = dataclasses.replace(shape, image_height=cfg.image_height)
    if cfg.pitch_pointer:
        shape = dataclasses.replace(shape, pitch_pointer=True)
    return dataclasses.replace(shape, header_head=True) if cfg.aux_header > 0 else shape


def load_note_map_into(read_out: torch.nn.Linear, checkpoint: str) -> None:
    """Start a note-map read-out (the objective's own head, or the PitchPointer's map) from a run whose
    note-map loss trained one (`--aux-notes`). The head is not part of the shipped weights: without this
    a continued run's starts afresh, and its first steps' loss (3x the trained head's) shakes the
    encoder; a PitchPointer reads a map that already knows the pitches from its first step."""
    state = load_checkpoint(Path(checkpoint)).get("objective", {})
    prefix = next((p for p in ("note_head.proj.", "model.decoder.pointer.note_map.")
                   if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise ValueError(f"{checkpoint} holds no note-map head: was it trained with --aux-notes?")
    read_out.load_state_dict({k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)})


def load_weights_into(model, weights_dir: str, model_cfg: ModelConfig) -> None:
    """Start from shipped weights (fp16 safetensors + config.json), e.g. to continue training across sessions.

    The weights must have the tensors and shapes of `model_cfg` (see `run_model_config`). Settings
    without weights of their own (e.g. `center_memory`) may differ, so a run can switch them on for
    weights trained before they existed."""
    trained, trained_cfg = load_model(weights_dir, "cpu")
    ours = model.state_dict()
    theirs = trained.state_dict()
    # a head the weights were trained without (the header head, the PitchPointer) starts from its initialisation
    optional = {"header.": trained_cfg.header_head, "decoder.pointer.": trained_cfg.pitch_pointer}
    added = {k for k in ours if k not in theirs and any(k.startswith(p) and not had for p, had in optional.items())}
    different = sorted(k for k in (set(ours) | set(theirs)) - added
                       if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape)
    if different:
        raise ValueError(f"{weights_dir} holds a different model shape than --model ({len(different)} tensors "
                         f"differ, e.g. {different[0]}): {trained_cfg} vs {model_cfg}")
    model.load_state_dict({k: v.float() for k, v in theirs.items()}, strict=not added)


def build_train_data(cfg, model_cfg: ModelConfig, runtime, return_clean: bool, crop_measures: float = 0.0,
                     max_crop_measures: int = 2, return_notes: bool = False, crop_first_share: float = 0.0):
    """Training dataset, a per-epoch batch-sampler factory (sharded by rank, resumable), and the collate function.
    `crop_measures`: share of items cut to 1..max_crop_measures measures (labelled phases only), starting at
    the system's first measure with chance `crop_first_share`."""
    dataset = SystemDataset(cfg.data, "train", height=model_cfg.image_height, augment=cfg.augment, seed=cfg.seed,
                            max_tokens=min(cfg.max_tokens, model_cfg.max_tokens), return_clean=return_clean,
                            max_width=model_cfg.max_image_width, degrade_config=DegradeConfig.for_training(cfg),
                            crop_measures=crop_measures, max_crop_measures=max_crop_measures,
                            return_notes=return_notes, crop_first_share=crop_first_share)
    sampler = WidthBucketSampler(dataset.epoch_widths, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                                 rank=runtime.rank, world_size=runtime.world_size)
    if len(sampler) == 0:
        raise ValueError(f"{len(dataset)} training systems make no full batch of {cfg.batch_size} "
                         f"x {runtime.world_size} processes; lower --batch-size")

    def make_batch_sampler(epoch: int, skip: int):
        sampler.set_epoch(epoch, start_batch=skip)
        return sampler

    return dataset, make_batch_sampler, partial(collate_systems, patch_width=model_cfg.patch_width)


# ---------------------------------------------------------------- entry point


def train_supervised(cfg: SupervisedTrainConfig, model_cfg: ModelConfig | None = None, evaluate=None,
                     stop_at: int | None = None):
    """Run (or resume) supervised training; returns the Trainer (its .state, .objective.model).

    `stop_at` interrupts the run at that step, as a crash or a time limit would.
    `evaluate(model, step) -> metrics` overrides the default dev evaluation
    (greedy decoding of `eval_limit` systems of `eval_split`, scored by TEDn).
    """
    runtime = setup_runtime(cfg.threads, cfg.num_workers, cfg.precision)
    try:
        seed_everything(cfg.seed + runtime.rank)
        model_cfg = model_cfg or run_model_config(cfg)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = OMRModel(model_cfg)
        fresh = not (cfg.resume and (Path(cfg.out) / "last.pt").exists())
        if cfg.init_weights and fresh:
            load_weights_into(model, cfg.init_weights, model_cfg)
            if runtime.is_main:
                print(f"model initialised from the weights in {cfg.init_weights}", flush=True)
        elif cfg.init_mae and fresh:
            count = load_mae_encoder(model, cfg.init_mae, model_cfg)
            if runtime.is_main:
                print(f"encoder initialised from {cfg.init_mae} ({count} tensors)", flush=True)
        seed_everything(cfg.seed + runtime.rank)
        objective = SupervisedObjective(
            model, label_smoothing=cfg.label_smoothing, gumbel_hard=cfg.gumbel_hard, token_dropout=cfg.token_dropout,
            aux_symbols=cfg.aux_symbols, aux_recon=cfg.aux_recon, detach_memory=cfg.detach_memory,
            aux_ctc=cfg.aux_ctc, aux_notes=cfg.aux_notes, aux_header=cfg.aux_header)
        if cfg.init_note_map and fresh:
            if cfg.aux_notes <= 0:
                raise ValueError("--init-note-map needs the note-map loss (--aux-notes)")
            load_note_map_into(model.decoder.pointer.note_map if model.decoder.pointer is not None
                               else objective.note_head.proj, cfg.init_note_map)
        pointer = "model.decoder.pointer."
        groups = param_groups(objective, cfg.lr, cfg.weight_decay, cfg.layer_decay, encoder_prefix="model.encoder.",
                              num_encoder_layers=model_cfg.enc_depth,
                              scaled={pointer + part: cfg.pointer_lr_scale for part in ("query.", "key.", "gate")})
        dataset, make_batch_sampler, collate = build_train_data(cfg, model_cfg, runtime, return_clean=False,
                                                                crop_measures=cfg.crop_measures,
                                                                max_crop_measures=cfg.crop_max_measures,
                                                                return_notes=cfg.aux_notes > 0,
                                                                crop_first_share=cfg.crop_first_share)

        def loss_fn(obj, batch, step):
            p_tf, tau = sampling_schedule(step, cfg, trainer.horizon)
            return obj(batch["images"], batch["widths"], batch["tokens"], p_tf, tau,
                       note_points=batch.get("note_points"), has_notes=batch.get("has_notes"))

        eval_fn = None
        if evaluate is not None:
            eval_fn = lambda step: evaluate(model, step)  # noqa: E731
        elif cfg.eval_every > 0 and runtime.is_main:
            eval_fn = make_dev_evaluator(cfg, model, model_cfg, runtime.device)

        export_dir = Path(cfg.out) / "best_weights"

        def on_best(step, metrics):
            save_weights(model, model_cfg, export_dir)

        trainer = Trainer(cfg, runtime, objective, groups, dataset, make_batch_sampler, collate, loss_fn,
                          evaluate=eval_fn, on_best=on_best, worker_init_fn=seed_worker,
                          extra_state=lambda: {"model_config": model_cfg.to_dict(), "phase": "supervised"},
                          split_batch=partial(split_systems_batch, max_pixels=cfg.micro_batch_pixels))
        trainer.train(stop_at)
        return trainer
    finally:
        cleanup_runtime(runtime)


def make_dev_evaluator(cfg: SupervisedTrainConfig, model: nn.Module, model_cfg: ModelConfig, device):
    """Greedy-decode a fixed dev subset and score it; `score` = corpus TEDn (lower is better)."""
    samples = load_eval_samples(cfg.eval_split, data_root=cfg.data, height=model_cfg.image_height,
                                limit=cfg.eval_limit, degraded=False, max_width=model_cfg.max_image_width,
                                read_measures=model_cfg.read_measures)
    if not samples:
        raise FileNotFoundError(f"no dev systems found for --eval-split {cfg.eval_split} (data root {cfg.data})")

    def evaluate(step: int) -> dict:
        report = evaluate_model(model, samples, device=device, beam=1,
                                max_len=cfg.eval_max_len or None, batch_size=8)
        summary = report["summary"]
        tedn = summary["tedn"]
        # a decoder that ignores the image writes the same opening for every system: count the openings
        openings = {" ".join(str(s.get("prediction", "")).split()[:16]) for s in report["systems"]}
        return {"score": tedn if tedn is not None and math.isfinite(tedn) else math.inf,
                "tedn": tedn, "ser": summary["ser"], "unparseable_rate": summary["unparseable_rate"],
                "seconds_per_system": summary["seconds_per_system"], "systems": summary["systems"],
                "distinct_openings": len(openings)}

    return evaluate
