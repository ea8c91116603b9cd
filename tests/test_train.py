"""Training machinery: LR schedule, LLRD groups, scheduled sampling, exact resume, best checkpoint, dev eval.

Everything runs the real OMRModel (a tiny configuration) on a tiny dataset
written in the data engine's on-disk format and read by its SystemDataset.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acai_omr.config import ModelConfig, SupervisedTrainConfig
from acai_omr.lmx.lmxfile import parse_lmx_text

FIXTURES = Path(__file__).parent / "fixtures" / "olimpic-lmx"


# ---------------------------------------------------------------- helpers (also used by test_train_ddp.py)


def tiny_model_config(dropout: float = 0.1, **overrides) -> ModelConfig:
    shape = dict(image_height=32, patch_height=16, patch_width=16, max_image_width=256, enc_dim=32,
                 enc_depth=2, enc_heads=2, dec_dim=32, dec_depth=2, dec_heads=2, max_tokens=128, mae_dec_dim=16,
                 mae_dec_depth=1, mae_dec_heads=2)
    return ModelConfig(dropout=dropout, **{**shape, **overrides})


def _fake_system_image(rng: np.random.Generator, width: int, height: int = 80) -> np.ndarray:
    """White paper, two five-line staves and some black blobs: enough pixels to train on."""
    import cv2

    image = np.full((height, width), 255, np.uint8)
    for top in (12, 48):
        for line in range(5):
            image[top + 4 * line, 4:-4] = 0
    for _ in range(width // 25):
        x, y = int(rng.integers(8, width - 8)), int(rng.integers(10, height - 10))
        cv2.circle(image, (x, y), 3, 0, -1)
    return image


def make_tiny_dataset(root: Path, train: int = 16, dev: int = 4, seed: int = 0) -> Path:
    """`root/<split>/manifest.jsonl` + PNGs with real LMX labels (the six olimpic-lmx fixtures)."""
    import cv2

    labels = [" ".join(parse_lmx_text(p.read_text()).systems[0]) for p in sorted(FIXTURES.glob("*.lmx"))]
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("dev", dev)):
        folder = root / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        with (folder / "manifest.jsonl").open("w") as manifest:
            for i in range(count):
                width = int(rng.integers(200, 600))
                image = _fake_system_image(rng, width)
                name = f"images/{split}{i:03d}.png"
                cv2.imwrite(str(folder / name), image)
                record = {"id": f"{split}{i:03d}", "image": name, "lmx": labels[i % len(labels)],
                          "width": width, "height": image.shape[0]}
                manifest.write(json.dumps(record) + "\n")
    return root


def tiny_supervised_config(data: Path, out: Path, **overrides) -> SupervisedTrainConfig:
    base = dict(data=str(data), out=str(out), steps=8, batch_size=4, lr=1e-3, warmup_steps=2, num_workers=0,
                threads=1, log_every=1, ckpt_every=100, eval_every=0, ss_start=0.25, ss_ramp=0.5, p_tf_min=0.5,
                augment=True, precision="fp32")
    base.update(overrides)
    return SupervisedTrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


# ---------------------------------------------------------------- LR schedule and LLRD


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    from acai_omr.train.common import WarmupCosine

    schedule = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    warm = [schedule(s) for s in range(10)]
    assert all(b > a for a, b in zip(warm, warm[1:])), "warm-up must rise"
    assert warm[0] == pytest.approx(1 / 11) and schedule(10) == pytest.approx(1.0)
    decay = [schedule(s) for s in range(10, 111)]
    assert all(b <= a for a, b in zip(decay, decay[1:])), "after warm-up the LR only falls"
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)

    # Through LambdaLR, every parameter group follows the same shape at its own peak.
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.25}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    seen = []
    for _ in range(110):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert max(s[0] for s in seen) == pytest.approx(1.0)
    assert all(s[1] == pytest.approx(0.25 * s[0]) for s in seen)


def test_llrd_gives_decayed_learning_rates_to_deeper_encoder_layers_and_full_rate_to_the_decoder():
    from acai_omr.model import OMRModel
    from acai_omr.train.common import param_groups
    from acai_omr.train.supervised import SupervisedObjective

    cfg = tiny_model_config()
    objective = SupervisedObjective(OMRModel(cfg))
    groups = param_groups(objective, lr=1.0, weight_decay=0.05, layer_decay=0.5, encoder_prefix="model.encoder.",
                          num_encoder_layers=cfg.enc_depth)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    wd_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert set(lr_of) == {n for n, _ in objective.named_parameters()}, "every parameter is in exactly one group"
    L = cfg.enc_depth
    stem = [name for name in lr_of if name.startswith("model.encoder.patch_embed.")]
    assert stem and all(lr_of[name] == pytest.approx(0.5 ** (L + 1)) for name in stem)
    for i in range(L):
        assert lr_of[f"model.encoder.blocks.{i}.attn.q.weight"] == pytest.approx(0.5 ** (L - i))
    assert lr_of["model.encoder.norm.weight"] == pytest.approx(1.0)
    assert all(lr == 1.0 for name, lr in lr_of.items() if name.startswith("model.decoder."))
    # decay on matrices only: not on biases, norms or the token/position tables
    assert wd_of["model.decoder.blocks.0.mlp.fc.weight"] == 0.05
    assert wd_of["model.decoder.blocks.0.mlp.fc.bias"] == 0.0
    assert wd_of["model.encoder.blocks.0.ln1.weight"] == 0.0
    assert wd_of["model.decoder.token_embedding.weight"] == 0.0


# ---------------------------------------------------------------- scheduled sampling


def _tiny_batch(cfg: ModelConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 1, cfg.image_height, 96, generator=g)
    widths = torch.tensor([96, 70, 40])
    tokens = torch.randint(3, cfg.vocab_size, (3, 12), generator=g)
    tokens[:, 0] = 1
    tokens[1, 9] = 2
    tokens[1, 10:] = 0  # a shorter sequence, padded
    tokens[2, 11] = 2
    return images, widths, tokens


def test_scheduled_sampling_with_p_tf_one_is_exactly_teacher_forcing():
    from acai_omr.model import OMRModel
    from acai_omr.train.supervised import SupervisedObjective, mix_embeddings

    cfg = tiny_model_config(dropout=0.0)
    torch.manual_seed(0)
    model = OMRModel(cfg)
    objective = SupervisedObjective(model, label_smoothing=0.1)
    images, widths, tokens = _tiny_batch(cfg)
    teacher, _ = objective(images, widths, tokens, p_tf=1.0, two_pass=False)
    two_pass, stats = objective(images, widths, tokens, p_tf=1.0, tau=0.5, two_pass=True)
    assert torch.equal(teacher, two_pass)
    assert float(stats["mixed_frac"]) == 0.0

    memory, valid = model.encoder(images, widths)
    pass1 = model.decoder(tokens[:, :-1], memory, valid)
    embeds, used = mix_embeddings(model.decoder.token_embedding, tokens[:, :-1], pass1, p_tf=1.0, tau=1.0)
    assert not used.any()
    assert torch.equal(model.decoder(tokens[:, :-1], memory, valid, input_embeds=embeds), pass1)


def test_scheduled_sampling_with_p_tf_zero_feeds_pass_one_predictions_everywhere_but_bos_and_padding():
    from acai_omr.model import OMRModel
    from acai_omr.train.supervised import SupervisedObjective, mix_embeddings

    cfg = tiny_model_config(dropout=0.0)
    torch.manual_seed(0)
    model = OMRModel(cfg)
    images, widths, tokens = _tiny_batch(cfg)
    tokens_in = tokens[:, :-1]
    memory, valid = model.encoder(images, widths)
    pass1 = model.decoder(tokens_in, memory, valid)
    table = model.decoder.token_embedding.weight
    embeds, used = mix_embeddings(model.decoder.token_embedding, tokens_in, pass1, p_tf=0.0, tau=0.5, hard=True)
    assert torch.equal(used, (tokens_in != 0) & (torch.arange(tokens_in.shape[1]) > 0))
    assert torch.equal(embeds[:, 0], table[tokens_in[:, 0]]), "<bos> keeps its gold embedding"
    # hard Gumbel-softmax: every mixed position is exactly one row of the embedding table
    distance = torch.cdist(embeds[used].detach(), table.detach())
    assert torch.all(distance.min(dim=1).values < 1e-3)  # other rows are > 0.05 away
    # soft mixing is a convex combination, so gradients reach the embedding table through it
    objective = SupervisedObjective(model)
    loss, stats = objective(images, widths, tokens, p_tf=0.0, tau=1.0)
    loss.backward()
    assert float(stats["mixed_frac"]) == 1.0
    assert model.decoder.token_embedding.weight.grad.abs().sum() > 0


def test_sampling_schedule_holds_teacher_forcing_then_anneals_p_tf_and_temperature():
    from acai_omr.train.supervised import sampling_schedule

    cfg = SupervisedTrainConfig(steps=100, ss_start=0.2, ss_ramp=0.5, p_tf_min=0.6, tau_start=1.0, tau_end=0.25)
    assert sampling_schedule(0, cfg) == (1.0, 1.0)
    assert sampling_schedule(19, cfg) == (1.0, 1.0)
    p_mid, tau_mid = sampling_schedule(45, cfg)  # half-way through the ramp
    assert p_mid == pytest.approx(0.8) and tau_mid == pytest.approx(0.5)
    assert sampling_schedule(70, cfg) == pytest.approx((0.6, 0.25))
    assert sampling_schedule(99, cfg) == pytest.approx((0.6, 0.25))
    values = [sampling_schedule(s, cfg) for s in range(100)]
    assert all(b[0] <= a[0] and b[1] <= a[1] for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------- resume, best checkpoint, dev evaluation


def _train_records(out: Path) -> list[tuple[int, float, float]]:
    from acai_omr.train.common import read_log

    return [(r["step"], r["loss"], r["lr"]) for r in read_log(out / "log.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tiny_data, tmp_path, num_workers):
    """8 steps straight == 5 steps, stop, resume from last.pt, 3 more (mid-epoch, scheduled sampling on)."""
    from acai_omr.train.supervised import train_supervised

    model_cfg = tiny_model_config(dropout=0.1)  # dropout + Gumbel noise + degradation: every RNG matters
    straight = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "a", num_workers=num_workers), model_cfg)
    interrupted = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "b", num_workers=num_workers),
                                   model_cfg, stop_at=5)
    assert interrupted.state.step == 5 and interrupted.state.batches_in_epoch == 1  # 4 batches per epoch
    resumed = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "b", num_workers=num_workers), model_cfg)
    assert resumed.state.step == straight.state.step == 8

    a, b = straight.objective.state_dict(), resumed.objective.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed parameters differ from the uninterrupted run"
    assert _train_records(tmp_path / "a") == _train_records(tmp_path / "b")
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_best_checkpoint_follows_the_lowest_dev_score_and_is_exported(tiny_data, tmp_path):
    from acai_omr.model.weights import load_model
    from acai_omr.train.common import load_checkpoint
    from acai_omr.train.supervised import train_supervised

    scores = iter([5.0, 3.0, 4.0, 2.5, 6.0, 2.6])
    snapshots = {}

    def evaluate(model, step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"score": next(scores)}

    cfg = tiny_supervised_config(tiny_data, tmp_path / "run", steps=6, eval_every=1)
    trainer = train_supervised(cfg, tiny_model_config(), evaluate=evaluate)
    assert (trainer.state.best_step, trainer.state.best_score) == (4, 2.5)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["step"] == 4 and best["metrics"]["score"] == 2.5
    assert all(torch.equal(best["objective"]["model." + k], v) for k, v in snapshots[4].items())
    exported, exported_cfg = load_model(tmp_path / "run" / "best_weights", "cpu")
    assert exported_cfg == tiny_model_config()
    for name, value in exported.state_dict().items():  # fp16 on disk
        assert torch.allclose(value.float(), snapshots[4][name].float(), atol=1e-3, rtol=1e-3), name
    evals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["best"] for e in evals if e["kind"] == "eval"] == [True, True, False, True, False, False]


def test_periodic_dev_evaluation_reports_tedn_ser_and_unparseable_rate(tiny_data, tmp_path):
    from acai_omr.train.supervised import train_supervised

    cfg = tiny_supervised_config(tiny_data, tmp_path / "run", steps=2, eval_every=2, eval_limit=3, eval_max_len=12)
    train_supervised(cfg, tiny_model_config())
    evals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    (record,) = [e for e in evals if e["kind"] == "eval"]
    assert record["systems"] == 3
    assert record["tedn"] > 0 and record["score"] == record["tedn"]  # an untrained model is wrong
    assert 0 <= record["unparseable_rate"] <= 1 and record["ser"] > 0
    assert (tmp_path / "run" / "best_weights" / "config.json").exists()


def test_log_records_loss_lr_throughput_and_schedule_values(tiny_data, tmp_path):
    from acai_omr.train.common import read_log
    from acai_omr.train.supervised import train_supervised

    train_supervised(tiny_supervised_config(tiny_data, tmp_path / "run", steps=4, ss_start=0.0, ss_ramp=1.0),
                     tiny_model_config())
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert math.isfinite(r["loss"]) and r["lr"] > 0 and r["samples_per_s"] > 0
        assert {"p_tf", "tau", "token_acc", "grad_norm", "epoch"} <= r.keys()
    assert records[0]["p_tf"] > records[-1]["p_tf"]


def test_init_weights_continues_from_shipped_weights_and_refuses_another_shape(tmp_path):
    """A new supervised run can start from a weights folder (training continues across sessions)."""
    from acai_omr.model import OMRModel
    from acai_omr.model.weights import save_weights
    from acai_omr.train.supervised import load_weights_into

    cfg = tiny_model_config()
    torch.manual_seed(1)
    trained = OMRModel(cfg)
    folder = save_weights(trained, cfg, tmp_path / "weights")
    torch.manual_seed(2)
    fresh = OMRModel(cfg)
    load_weights_into(fresh, str(folder), cfg)
    for name, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value.half().float()), name
    other = tiny_model_config(dec_depth=cfg.dec_depth + 1)  # one more decoder block: tensors the weights lack
    with pytest.raises(ValueError, match="different model shape"):
        load_weights_into(OMRModel(other), str(folder), other)
    linear = tiny_model_config(stem="linear")
    with pytest.raises(ValueError, match="different model shape"):
        load_weights_into(OMRModel(linear), str(folder), linear)
    # settings without weights of their own may change between runs (e.g. centring switched on)
    centred = tiny_model_config(center_memory=not cfg.center_memory, dropout=0.0)
    load_weights_into(OMRModel(centred), str(folder), centred)


def test_a_later_time_limit_refit_can_lengthen_the_schedule_up_to_the_steps_asked(tiny_data, tmp_path):
    """The first fit times the slow first steps; when later steps run faster the refit must give the run
    the steps its time allows (it was capped at the first fit, ending a 118-minute run after 80), but
    never more than --steps."""
    import time

    from acai_omr.train.supervised import train_supervised

    from acai_omr.train.common import TimeBudget

    cfg = tiny_supervised_config(tiny_data, tmp_path / "run", steps=5_000, time_limit_min=10.0)
    trainer = train_supervised(cfg, tiny_model_config(), stop_at=2)
    trainer._fit_to_time_limit(TimeBudget(10.0, trainer.rt), per_step=10.0)  # 10 s a step, 10 minutes left
    slow = trainer.horizon
    assert 2 < slow <= 2 + 0.85 * 600 / 10
    trainer._fit_to_time_limit(TimeBudget(10.0, trainer.rt), per_step=1.0)  # then 1 s a step
    assert trainer.horizon == trainer.schedule.total > 5 * slow
    trainer._fit_to_time_limit(TimeBudget(10.0, trainer.rt), per_step=0.001)
    assert trainer.horizon == 5_000  # the cap asked for
    assert trainer.cfg.steps == 5_000  # the config itself is never changed


def test_time_budget_refits_at_the_pace_of_the_latest_steps_until_the_decay_is_under_way(monkeypatch):
    """A run whose first 200 steps ran on a loaded machine (3 s each) and the next 200 alone (1 s) must be
    refitted at 1 s a step, not at the session's mean; and no refit once 80% of the schedule is done."""
    from acai_omr.train import common

    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    budget = common.TimeBudget(120.0, common.Runtime(device=torch.device("cpu")))
    fits = {}
    for step in range(1, 1201):
        clock[0] += 3.0 if step <= 200 else 1.0
        pace = budget.step_done(progress=step / 1500)
        if pace is not None:
            fits[step] = pace
    assert sorted(fits) == [25, 200, 400, 600, 800, 1000, 1200][:len(fits)] and 1200 not in fits  # 1200/1500 = 80%
    assert fits[200] == pytest.approx(3.0)
    assert fits[400] == pytest.approx(1.0) and fits[1000] == pytest.approx(1.0)


def test_time_limited_run_shortens_warmup_so_the_peak_learning_rate_is_reached(tiny_data, tmp_path):
    """A schedule fitted to --time-limit-min caps warm-up at a tenth of the fitted horizon, and never ends
    it before the fit (on a slow machine the fitted run is short: its tenth can be behind the fit's step)."""
    from acai_omr.train.common import REFIT_AT, REFIT_EVERY, read_log
    from acai_omr.train.supervised import train_supervised

    cfg = tiny_supervised_config(tiny_data, tmp_path / "run", steps=100_000, warmup_steps=100_000, ss_start=2.0,
                                 time_limit_min=0.15, lr=1e-3)
    trainer = train_supervised(cfg, tiny_model_config())
    records = read_log(tmp_path / "run" / "log.jsonl")
    plan = [r for r in records if r["kind"] == "plan"]
    assert plan, "the run never fitted its schedule to the time limit"
    fitted = plan[0]["steps"]
    assert fitted < 100_000 and trainer.schedule.total == plan[-1]["steps"]  # a later refit has the last word
    refits = [s for s in REFIT_AT] + [REFIT_AT[-1] + k * REFIT_EVERY for k in range(1, 1000)]
    assert [r["step"] for r in plan] == refits[:len(plan)]
    warmup = trainer.schedule.warmup
    assert warmup == max(plan[0]["step"] + 1, fitted // 10)  # not the 100,000 steps asked for
    train = [r for r in records if r["kind"] == "train"]
    for record in train:  # after the fit, the new warm-up: linear to the peak at its end
        if plan[0]["step"] < record["step"] < warmup:
            assert record["lr"] == pytest.approx(1e-3 * (record["step"] + 1) / (warmup + 1), rel=1e-6)
    assert train[-1]["step"] >= warmup  # the fit leaves time for it
    assert max(r["lr"] for r in train) > 0.9e-3


# ---------------------------------------------------------------- against a decoder that ignores the image


def test_token_dropout_replaces_only_real_tokens_after_bos_and_only_in_training():
    from acai_omr.train.supervised import PAD_ID, drop_tokens

    torch.manual_seed(0)
    tokens = torch.randint(3, 100, (64, 40))
    tokens[:, 0] = 1
    tokens[:, 30:] = PAD_ID
    dropped = drop_tokens(tokens, 0.3)
    changed = dropped != tokens
    assert not changed[:, 0].any() and (dropped[changed] == PAD_ID).all()
    assert 0.25 < changed[:, 1:30].float().mean() < 0.35
    assert torch.equal(drop_tokens(tokens, 0.0), tokens)

    cfg = tiny_model_config(dropout=0.0)
    from acai_omr.model import OMRModel
    from acai_omr.train.supervised import SupervisedObjective

    objective = SupervisedObjective(OMRModel(cfg), token_dropout=0.9).eval()
    images, widths, batch_tokens = _tiny_batch(cfg)
    plain = SupervisedObjective(objective.model).eval()
    assert torch.equal(objective(images, widths, batch_tokens)[0], plain(images, widths, batch_tokens)[0])


def test_symbol_presence_targets_and_max_pooling_ignore_padding():
    from acai_omr.lmx.vocab import VOCAB
    from acai_omr.model.heads import SymbolPresenceHead, symbol_presence

    tokens = torch.tensor([[VOCAB.bos_id, 5, 7, 7, VOCAB.eos_id, VOCAB.pad_id]])
    present = symbol_presence(tokens, len(VOCAB))
    assert present[0].nonzero().flatten().tolist() == [5, 7]

    torch.manual_seed(0)
    head = SymbolPresenceHead(8, len(VOCAB))
    memory = torch.randn(1, 6, 8)
    valid = torch.tensor([[True, True, True, False, False, False]])
    loss = head(memory, valid, tokens)
    memory_b = memory.clone()
    memory_b[:, 3:] = 100.0  # padding patches with huge activations must not change the pooled logits
    assert torch.equal(loss, head(memory_b, valid, tokens))
    memory_c = memory.clone()
    memory_c[:, 1] = 100.0
    assert not torch.equal(loss, head(memory_c, valid, tokens))
    # a fresh head starts near the rarity of symbols, not at 50% (zero memory: the bias alone)
    start = torch.sigmoid(head.proj(torch.zeros(8)))
    assert torch.allclose(start, torch.full_like(start, 0.02), atol=1e-4)


def test_symbol_loss_is_added_logged_and_trains_the_encoder(tiny_data, tmp_path):
    from acai_omr.train.common import read_log
    from acai_omr.train.supervised import train_supervised

    trainer = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "run", steps=3, ss_start=2.0,
                                                      aux_symbols=1.0, token_dropout=0.2), tiny_model_config())
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert all(r["symbol_loss"] > 0 and r["loss"] > r["symbol_loss"] for r in records)
    assert "symbol_head.proj.weight" in trainer.objective.state_dict()
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert "symbol_head.proj.weight" in checkpoint["objective"]


def test_memory_spread_is_zero_for_a_collapsed_encoder_and_ignores_padding():
    from acai_omr.train.supervised import memory_spread

    valid = torch.tensor([[True, True, True, False]])
    collapsed = torch.ones(1, 4, 8) * 3.0
    collapsed[:, 3] = -50.0  # a padding patch, however different, does not count
    assert memory_spread(collapsed, valid).item() == 0.0
    varied = collapsed.clone()
    varied[0, 0, :] = 5.0
    assert memory_spread(varied, valid).item() > 1.0


def test_patch_reconstruction_is_exact_for_the_right_readout_and_ignores_padding():
    from acai_omr.model.mae import patchify
    from acai_omr.model.heads import PatchReconstructionHead

    torch.manual_seed(0)
    images = torch.rand(2, 1, 8, 12)
    head = PatchReconstructionHead(16, 4, 4)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(16))
        head.proj.bias.zero_()
    ink = patchify(1.0 - images, 4, 4)  # memory that holds each patch's ink exactly
    valid = torch.ones(2, 6, dtype=torch.bool)
    assert head(ink, valid, images).item() < 1e-12
    valid[1, 4:] = False
    wrong_in_padding = ink.clone()
    wrong_in_padding[1, 4:] += 7.0
    assert head(wrong_in_padding, valid, images).item() < 1e-12
    assert head(torch.zeros_like(ink), valid, images).item() > 0.1  # a collapsed memory cannot redraw the page


def test_reconstruction_loss_is_added_logged_and_checkpointed(tiny_data, tmp_path):
    from acai_omr.train.common import read_log
    from acai_omr.train.supervised import train_supervised

    trainer = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "run", steps=3, ss_start=2.0,
                                                      aux_recon=2.0), tiny_model_config())
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert records and all(r["recon_loss"] > 0 and r["loss"] > 2.0 * r["recon_loss"] for r in records)
    assert all(r["memory_spread"] > 0 for r in records)
    assert "recon_head.proj.weight" in trainer.objective.state_dict()


def test_detach_memory_keeps_the_decoder_loss_out_of_the_encoder():
    """With detach_memory the decoder still reads the image but only the auxiliary losses train the
    encoder, so the decoder cannot silence it while the image is still noise to it."""
    from acai_omr.model import OMRModel
    from acai_omr.train.supervised import SupervisedObjective

    cfg = tiny_model_config(dropout=0.0)
    images, widths, tokens = _tiny_batch(cfg)
    for detach, aux_recon, encoder_learns in ((True, 0.0, False), (True, 1.0, True), (False, 0.0, True)):
        torch.manual_seed(0)
        objective = SupervisedObjective(OMRModel(cfg), aux_recon=aux_recon, detach_memory=detach)
        objective(images, widths, tokens)[0].backward()
        stem_grad = objective.model.encoder.patch_embed.convs[0].weight.grad
        cross_grad = objective.model.decoder.blocks[0].cross_attn.kv.weight.grad
        assert cross_grad is not None and cross_grad.abs().sum() > 0  # the decoder always reads the memory
        assert (stem_grad is not None and stem_grad.abs().sum() > 0) == encoder_learns, (detach, aux_recon)


def test_a_continued_run_keeps_the_weights_shape_and_centres_the_memory(tmp_path):
    """`--init-weights` trains the model the weights belong to (e.g. the shipped linear-stem weights under
    a conv-stem default), with memory centring on; without it the --model preset decides."""
    from acai_omr.model import OMRModel
    from acai_omr.model.weights import save_weights
    from acai_omr.train.supervised import run_model_config

    legacy = tiny_model_config(stem="linear", center_memory=False)
    folder = save_weights(OMRModel(legacy), legacy, tmp_path / "weights")
    continued = run_model_config(SupervisedTrainConfig(init_weights=str(folder)))
    assert continued.stem == "linear" and continued.enc_dim == legacy.enc_dim and continued.center_memory
    assert run_model_config(SupervisedTrainConfig()) == ModelConfig.small()


def test_a_run_on_measure_crops_only_saves_weights_that_read_measures(tmp_path):
    """`--crop-measures 1` trains on runs of up to --crop-max-measures measures, so its weights decode
    systems cut the same way; a run that also sees whole systems (or none cut) reads whole systems."""
    from acai_omr.model import OMRModel
    from acai_omr.model.weights import save_weights
    from acai_omr.train.supervised import run_model_config

    assert run_model_config(SupervisedTrainConfig(crop_measures=1.0, crop_max_measures=3)).read_measures == 3
    assert run_model_config(SupervisedTrainConfig(crop_measures=0.5, crop_max_measures=3)).read_measures == 0
    reader = dataclasses.replace(tiny_model_config(), read_measures=2)
    folder = save_weights(OMRModel(reader), reader, tmp_path / "weights")
    assert run_model_config(SupervisedTrainConfig(init_weights=str(folder))).read_measures == 0
    assert run_model_config(SupervisedTrainConfig(init_weights=str(folder), crop_measures=1.0,
                                                  crop_max_measures=1)).read_measures == 1


def test_a_run_may_read_taller_images_with_the_same_weights(tmp_path):
    """`--image-height` changes only the input geometry: the conv stem and the sin-cos positions have no
    tensor tied to the height, so weights trained at one height load into the taller model and run."""
    from acai_omr.model import OMRModel
    from acai_omr.model.weights import save_weights
    from acai_omr.train.supervised import load_weights_into, run_model_config

    trained = tiny_model_config()
    folder = save_weights(OMRModel(trained), trained, tmp_path / "weights")
    taller = run_model_config(SupervisedTrainConfig(init_weights=str(folder), image_height=2 * trained.image_height))
    assert taller == dataclasses.replace(trained, image_height=2 * trained.image_height, center_memory=True)
    model = OMRModel(taller)
    load_weights_into(model, str(folder), taller)
    images = torch.rand(1, 1, taller.image_height, 4 * taller.patch_width)
    logits = model(images, torch.tensor([4 * taller.patch_width]), torch.tensor([[1, 5, 6]]))
    assert logits.shape == (1, 3, taller.vocab_size) and torch.isfinite(logits).all()
    assert run_model_config(SupervisedTrainConfig(image_height=192)).image_height == 192


def test_export_turns_a_runs_last_checkpoint_into_weights_that_load(tiny_data, tmp_path, capsys):
    """A run with no dev evaluation writes no best_weights/; `acai-omr train export` writes its last step
    as a weights folder, with the run's model config (read_measures included), and refuses other files."""
    from acai_omr.cli import main
    from acai_omr.model.weights import load_model
    from acai_omr.train.supervised import train_supervised

    model_cfg = dataclasses.replace(tiny_model_config(), read_measures=2)
    trainer = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "run", steps=2), model_cfg)
    assert not (tmp_path / "run" / "best_weights").exists()
    assert main(["train", "export", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "w")]) == 0
    exported, cfg = load_model(tmp_path / "w", "cpu")
    assert cfg == model_cfg and cfg.read_measures == 2
    trained = trainer.objective.model.state_dict()
    for name, value in exported.state_dict().items():
        assert torch.allclose(value, trained[name].float(), atol=1e-3, rtol=1e-3), name

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x")]) == 1
    assert main(["train", "export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 1
    assert "cannot read checkpoint" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_export_of_several_checkpoints_writes_their_mean_and_refuses_other_runs(tiny_data, tmp_path, capsys):
    """`acai-omr train export A.pt B.pt` writes the parameter mean of one run's checkpoints; a checkpoint
    of a model with another config is refused and nothing is written."""
    import shutil

    from acai_omr.cli import main
    from acai_omr.model.weights import load_model
    from acai_omr.train.export import model_from_checkpoint
    from acai_omr.train.supervised import train_supervised

    run = tmp_path / "run"
    train_supervised(tiny_supervised_config(tiny_data, run, steps=2), tiny_model_config())
    shutil.copy(run / "last.pt", tmp_path / "step2.pt")
    train_supervised(tiny_supervised_config(tiny_data, run, steps=4), tiny_model_config())  # resumes
    first, _ = model_from_checkpoint(tmp_path / "step2.pt")
    second, _ = model_from_checkpoint(run / "last.pt")
    assert main(["train", "export", str(tmp_path / "step2.pt"), str(run / "last.pt"),
                 "--out", str(tmp_path / "mean")]) == 0
    assert "the mean of 2 checkpoints" in capsys.readouterr().out
    mean, _ = load_model(tmp_path / "mean", "cpu")
    a, b = first.state_dict(), second.state_dict()
    assert any(not torch.equal(a[name], b[name]) for name in a)  # the two steps differ
    for name, value in mean.state_dict().items():
        assert torch.allclose(value, (a[name] + b[name]) / 2, atol=1e-3, rtol=1e-3), name

    other = tmp_path / "other"
    train_supervised(tiny_supervised_config(tiny_data, other, steps=1), tiny_model_config(dec_dim=48))
    assert main(["train", "export", str(run / "last.pt"), str(other / "last.pt"),
                 "--out", str(tmp_path / "mixed")]) == 1
    assert "different model config" in capsys.readouterr().err and not (tmp_path / "mixed").exists()


def test_keep_ckpts_leaves_the_last_checkpoints_for_export_to_average(tiny_data, tmp_path):
    """--keep-ckpts N keeps step-NNNNNN.pt copies of the last N checkpoints (older ones removed), and
    `train export` averages them into weights that load."""
    from acai_omr.cli import main
    from acai_omr.model.weights import load_model
    from acai_omr.train.supervised import train_supervised

    run = tmp_path / "run"
    train_supervised(tiny_supervised_config(tiny_data, run, steps=6, ckpt_every=2, keep_ckpts=2), tiny_model_config())
    kept = sorted(path.name for path in run.glob("step-*.pt"))
    assert kept == ["step-000004.pt", "step-000006.pt"]
    assert (run / "step-000006.pt").read_bytes() == (run / "last.pt").read_bytes()
    assert main(["train", "export", *map(str, sorted(run.glob("step-*.pt"))), "--out", str(tmp_path / "w")]) == 0
    load_model(tmp_path / "w", "cpu")


def test_reading_order_ctc_is_low_for_a_memory_that_spells_the_notes_and_ignores_padding():
    """The CTC head reads the patch grid column by column, top to bottom: a memory whose patches
    hold the notes in that order scores far better than one holding them in LMX's row-major order."""
    from acai_omr.lmx.vocab import VOCAB
    from acai_omr.model.heads import ReadingOrderCTCHead

    vocab = len(VOCAB)
    head = ReadingOrderCTCHead(vocab, vocab, rows=2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(vocab) * 20.0)
        head.proj.bias.zero_()
    blank = VOCAB.pad_id
    c5, c3, d5 = VOCAB.encode(["C5", "C3", "D5"])
    # grid 2 rows x 3 columns, row-major; column 0 = (C5 top, C3 bottom), column 1 = (D5, blank)
    grid = [[c5, d5, blank], [c3, blank, blank]]
    memory = torch.zeros(1, 6, vocab)
    for row in range(2):
        for col in range(3):
            memory[0, row * 3 + col, grid[row][col]] = 1.0
    valid = torch.ones(1, 6, dtype=torch.bool)
    right = head(memory, valid, [[c5, c3, d5]]).item()
    wrong = head(memory, valid, [[c5, d5, c3]]).item()
    assert right < 0.01 < 1.0 < wrong
    valid[0, [2, 5]] = False  # the last column is padding: whatever it holds does not count
    memory[0, [2, 5]] = 0.0
    memory[0, 2, c3] = 50.0
    assert abs(head(memory, valid, [[c5, c3, d5]]).item() - right) < 1e-4


def test_ctc_loss_is_added_logged_and_trains_a_detached_encoder(tiny_data, tmp_path):
    from acai_omr.model import OMRModel
    from acai_omr.train.common import read_log
    from acai_omr.train.supervised import SupervisedObjective, train_supervised

    trainer = train_supervised(tiny_supervised_config(tiny_data, tmp_path / "run", steps=3, ss_start=2.0,
                                                      aux_ctc=0.5), tiny_model_config())
    records = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert records and all(r["ctc_loss"] > 0 and r["loss"] > 0.5 * r["ctc_loss"] for r in records)
    assert "ctc_head.proj.weight" in trainer.objective.state_dict()
    cfg = tiny_model_config(dropout=0.0)
    images, widths, tokens = _tiny_batch(cfg)
    objective = SupervisedObjective(OMRModel(cfg), aux_ctc=1.0, detach_memory=True)
    objective(images, widths, tokens)[0].backward()
    stem_grad = objective.model.encoder.patch_embed.convs[0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0


def test_a_batch_cut_into_slices_keeps_each_rows_notes_and_tokens_within_the_pixel_budget():
    from acai_omr.data.dataset import split_systems_batch

    rows, width = 5, 64
    tokens = torch.zeros(rows, 10, dtype=torch.long)
    lengths = torch.tensor([10, 4, 6, 3, 5])
    for r, n in enumerate(lengths):
        tokens[r, :n] = torch.arange(1, n + 1)
    notes = torch.tensor([[0, 1, 1, 7], [2, 5, 5, 8], [3, 2, 2, 9], [4, 3, 3, 10], [4, 4, 4, 11]], dtype=torch.float)
    batch = {"images": torch.rand(rows, 1, 32, width), "widths": torch.tensor([64, 50, 40, 64, 30]),
             "tokens": tokens, "token_lengths": lengths, "ids": list("abcde"), "crops": [None] * rows,
             "note_points": notes, "has_notes": torch.ones(rows, dtype=torch.bool)}
    assert split_systems_batch(batch, 0) == [(batch, 1.0)]
    parts = split_systems_batch(batch, 2 * 32 * width)  # two rows' pixels a slice
    assert [p["ids"] for p, _ in parts] == [["a", "b"], ["c", "d"], ["e"]]
    assert sum(share for _, share in parts) == pytest.approx(1.0)
    assert all(p["images"].numel() <= 2 * 32 * width for p, _ in parts)
    assert [p["tokens"].shape[1] for p, _ in parts] == [10, 6, 5]  # each slice padded to its own longest
    assert parts[1][0]["note_points"].tolist() == [[0, 5, 5, 8], [1, 2, 2, 9]]  # rows renumbered in the slice
    assert parts[2][0]["note_points"][:, 3].tolist() == [10, 11]


def test_a_batch_run_in_slices_gets_the_whole_batchs_loss_and_gradient():
    """Rows with equal token counts: the row-weighted mean of slice losses is the batch's token mean."""
    import contextlib
    from types import SimpleNamespace

    from acai_omr.data.dataset import split_systems_batch
    from acai_omr.model import OMRModel
    from acai_omr.train.common import Trainer
    from acai_omr.train.supervised import SupervisedObjective

    cfg = tiny_model_config(dropout=0.0)
    torch.manual_seed(0)
    objective = SupervisedObjective(OMRModel(cfg), label_smoothing=0.1)
    g = torch.Generator().manual_seed(1)
    rows = 4
    tokens = torch.randint(3, cfg.vocab_size, (rows, 12), generator=g)
    tokens[:, 0], tokens[:, -1] = 1, 2
    batch = {"images": torch.rand(rows, 1, cfg.image_height, 96, generator=g), "widths": torch.tensor([96, 80, 64, 96]),
             "tokens": tokens, "token_lengths": torch.full((rows,), 12), "ids": list("abcd"), "crops": [None] * rows}

    def loss_fn(obj, b, step):
        return obj(b["images"], b["widths"], b["tokens"], 1.0, 1.0)

    def run(max_pixels: int):
        objective.zero_grad(set_to_none=True)
        host = SimpleNamespace(split_batch=lambda b: split_systems_batch(b, max_pixels), model_for_ddp=objective,
                               rt=SimpleNamespace(autocast=contextlib.nullcontext), loss_fn=loss_fn,
                               state=SimpleNamespace(step=0))
        loss, extra = Trainer._forward_backward(host, batch)
        return float(loss.detach()), float(extra["token_acc"]), [p.grad.clone() for p in objective.parameters() if p.grad is not None]

    whole_loss, whole_acc, whole = run(0)
    sliced_loss, sliced_acc, sliced = run(2 * batch["images"][0].numel())
    assert sliced_loss == pytest.approx(whole_loss, abs=1e-5)
    assert sliced_acc == pytest.approx(whole_acc, abs=1e-6)
    assert len(whole) == len(sliced) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(whole, sliced))
