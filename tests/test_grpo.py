"""GRPO: advantages, the curriculum, the objective's pieces and sign, the CLI, and a smoke run end to end.

All model tests use the real OMRModel in a tiny configuration and the real
KV-cached sampler; the smoke run trains on a tiny dataset written in the data
engine's on-disk format.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acai_omr.config import GrpoConfig, ModelConfig
from acai_omr.inference.decode import sample
from acai_omr.lmx.lmxfile import parse_lmx_text
from acai_omr.model.model import OMRModel
from acai_omr.train.grpo import (GrpoObjective, anneal, clipped_surrogate, group_advantages, policy_token_stats,
                                 schedule_values, validate_config)

FIXTURES = Path(__file__).parent / "fixtures" / "olimpic-lmx"


def tiny_model(seed: int = 0) -> OMRModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(ModelConfig.tiny(), max_tokens=96, dropout=0.0)
    return OMRModel(cfg)


def toy_images(batch: int = 1, width: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(batch, 1, 32, width, generator=gen) > 0.2).float()
    return images, torch.full((batch,), width)


# ---------------------------------------------------------------- advantages


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0])
    adv = group_advantages(rewards, group_size=4, eps=0.0 + 1e-8)
    first = adv[:4]
    std = torch.tensor([1.0, 2.0, 3.0, 4.0]).std(unbiased=False)
    assert torch.allclose(first, (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / std, atol=1e-5)
    assert first.mean().abs() < 1e-6 and first.std(unbiased=False) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(adv[4:], torch.zeros(4))  # all equal: no signal
    # two samples: +-1 whatever the scale
    assert torch.allclose(group_advantages(torch.tensor([0.0, 5.0]), 2, 1e-8), torch.tensor([-1.0, 1.0]), atol=1e-5)
    # the epsilon keeps tiny differences from blowing up
    assert group_advantages(torch.tensor([0.0, 1e-6]), 2, 1e-4).abs().max() < 0.01


def test_group_advantages_reject_a_ragged_layout():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), 3)


# ---------------------------------------------------------------- curriculum


def test_schedule_holds_during_exploration_then_anneals_to_the_end_values():
    cfg = GrpoConfig(steps=100, explore_frac=0.1, anneal_end_frac=0.6)
    start, mid, end = (schedule_values(s, cfg, model_max_len=1000) for s in (5, 35, 90))
    assert start == {"temperature": cfg.temperature_start, "top_k": cfg.top_k_start, "max_len": cfg.max_len_start,
                     "beta": cfg.beta_start, "lambda_ce": cfg.lambda_ce_start, "lambda_len": cfg.lambda_len_start}
    assert end["temperature"] == cfg.temperature_end and end["top_k"] == cfg.top_k_end
    assert end["beta"] == pytest.approx(0.02) and end["lambda_ce"] == 0.0 and end["lambda_len"] == pytest.approx(0.35)
    assert end["max_len"] == cfg.max_len_end
    assert mid["beta"] == pytest.approx((0.20 + 0.02) / 2) and mid["lambda_len"] == pytest.approx((0.02 + 0.35) / 2)
    assert cfg.temperature_end < mid["temperature"] < cfg.temperature_start
    assert cfg.max_len_start < mid["max_len"] < cfg.max_len_end
    assert schedule_values(90, cfg, model_max_len=300)["max_len"] == 300  # capped by the model
    assert anneal(0, GrpoConfig(steps=10, explore_frac=0.5, anneal_end_frac=0.5), 1.0, 0.0) == 1.0


def test_defaults_match_the_issue():
    cfg = GrpoConfig()
    assert (cfg.lambda_tedn, cfg.lambda_f1, cfg.lambda_wf, cfg.lambda_rep) == (0.35, 0.25, 0.10, 0.15)
    assert (cfg.lambda_len_start, cfg.lambda_len_end) == (0.02, 0.35)
    assert (cfg.alpha_tedn, cfg.alpha_wf, cfg.gamma_wf, cfg.len_delta, cfg.len_tau) == (0.01, 0.2, 3.0, 10.0, 100.0)
    assert (cfg.beta_start, cfg.beta_end, cfg.lambda_ce_end) == (0.20, 0.02, 0.0)
    assert cfg.tedn_mode == "cost"
    assert cfg.temperature_start > cfg.temperature_end and cfg.top_k_start > cfg.top_k_end
    assert cfg.max_len_start < cfg.max_len_end
    assert validate_config(cfg) is not None and "--init" in validate_config(cfg)
    assert validate_config(GrpoConfig(init="w")) is None
    assert "group-size" in validate_config(GrpoConfig(init="w", group_size=1))


# ---------------------------------------------------------------- the objective's pieces


def test_policy_logprobs_reproduce_the_samplers_logprobs():
    """Ratio 1 before any update: the teacher-forced policy scores samples as the KV-cached sampler did."""
    model = tiny_model()
    images, widths = toy_images(batch=2)
    torch.manual_seed(1)
    result = sample(model, images, widths, n_samples=3, temperature=1.3, top_k=7, max_len=20)
    memory, valid = model.encode(images, widths)
    ids = result.token_ids
    tokens_in = torch.cat([torch.ones_like(ids[:, :1]), ids[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model.decoder(tokens_in, memory.repeat_interleave(3, 0), valid.repeat_interleave(3, 0))
    logp, entropy = policy_token_stats(logits, ids, temperature=1.3, top_k=7)
    mask = torch.arange(ids.shape[1])[None, :] < result.lengths[:, None]
    assert torch.allclose(logp[mask], result.logprobs[mask], atol=1e-4)
    assert (entropy[mask] > 0).all() and (entropy[mask] <= math.log(model.cfg.vocab_size) + 1e-4).all()


def test_clipped_surrogate_stops_the_gradient_outside_the_trust_region():
    old = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    new = torch.tensor([[0.5, 0.0, 9.0]], requires_grad=True)  # ratios e^0.5 = 1.65 (clipped), 1, (masked)
    value, stats = clipped_surrogate(new, old, torch.tensor([2.0]), mask, clip_eps=0.2)
    value.backward()
    assert value.item() == pytest.approx((1.2 * 2 + 1.0 * 2) / 2)
    assert new.grad[0, 0] == 0.0  # clipped with a positive advantage: no push further
    assert new.grad[0, 1] == pytest.approx(2.0 / 2)  # d(ratio * A)/d logp = ratio * A, over 2 tokens
    assert new.grad[0, 2] == 0.0  # beyond the sample's length
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    # a negative advantage with a ratio far below 1 is clipped too
    new2 = torch.tensor([[-1.0, 0.0, 0.0]], requires_grad=True)
    clipped_surrogate(new2, old, torch.tensor([-1.0]), mask, clip_eps=0.2)[0].backward()
    assert new2.grad[0, 0] == 0.0


def _sequence_logprob(model, images, widths, ids, lengths, temperature, top_k):
    memory, valid = model.encode(images, widths)
    group = ids.shape[0] // images.shape[0]
    tokens_in = torch.cat([torch.ones_like(ids[:, :1]), ids[:, :-1]], dim=1)
    with torch.no_grad():
        logits = model.decoder(tokens_in, memory.repeat_interleave(group, 0), valid.repeat_interleave(group, 0))
    logp, entropy = policy_token_stats(logits, ids, temperature, top_k)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).float()
    return (logp * mask).sum(1), ((entropy * mask).sum(1) / mask.sum(1)).mean()


def test_one_step_raises_the_best_samples_logprob_and_lowers_the_worst():
    """The objective's sign: a higher-reward sample becomes more likely after one update."""
    model = tiny_model(seed=3)
    images, widths = toy_images(batch=1, seed=3)
    torch.manual_seed(0)
    result = sample(model, images, widths, n_samples=4, temperature=1.0, top_k=None, max_len=8)
    rewards = torch.tensor([1.0, 0.2, 0.1, -0.5])  # sample 0 best, sample 3 worst
    advantages = group_advantages(rewards, 4)
    objective = GrpoObjective(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before, _ = _sequence_logprob(model, images, widths, result.token_ids, result.lengths, 1.0, 0)
    loss, stats = objective(images, widths, result.token_ids, result.lengths, result.logprobs, advantages,
                            torch.tensor([[1, 5, 6, 2]]), temperature=1.0, top_k=0, beta=0.0, lambda_ce=0.0,
                            clip_eps=0.2)
    assert stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-4)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after, _ = _sequence_logprob(model, images, widths, result.token_ids, result.lengths, 1.0, 0)
    assert after[0] > before[0]
    assert after[3] < before[3]


def test_entropy_bonus_raises_entropy_and_ce_term_fits_the_gold():
    model = tiny_model(seed=4)
    images, widths = toy_images(batch=1, seed=4)
    torch.manual_seed(0)
    result = sample(model, images, widths, n_samples=2, temperature=1.0, max_len=8)
    zero_adv = torch.zeros(2)
    gold = torch.tensor([[1, 10, 11, 12, 13, 2]])
    objective = GrpoObjective(model)

    def step(beta, lambda_ce, lr=0.5):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loss, stats = objective(images, widths, result.token_ids, result.lengths, result.logprobs, zero_adv, gold,
                                temperature=1.0, top_k=0, beta=beta, lambda_ce=lambda_ce, clip_eps=0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return stats

    _, entropy_before = _sequence_logprob(model, images, widths, result.token_ids, result.lengths, 1.0, 0)
    stats = step(beta=1.0, lambda_ce=0.0)
    assert 0 < stats["entropy"].item() <= 1.0 and "ce" not in stats
    _, entropy_after = _sequence_logprob(model, images, widths, result.token_ids, result.lengths, 1.0, 0)
    assert entropy_after > entropy_before
    # a small step: the descent direction is what is pinned (0.5 overshoots on the tiny model)
    ce_before = step(beta=0.0, lambda_ce=1.0, lr=0.05)["ce"].item()
    ce_after = step(beta=0.0, lambda_ce=1.0, lr=0.05)["ce"].item()
    assert ce_after < ce_before


def test_objective_keeps_dropout_off_in_training_mode():
    torch.manual_seed(0)
    model = OMRModel(dataclasses.replace(ModelConfig.tiny(), dropout=0.5))
    objective = GrpoObjective(model).train()
    assert not any(m.training for m in model.modules())


# ---------------------------------------------------------------- smoke run (tiny model, tiny dataset)


def _write_tiny_dataset(root: Path, counts=(("train", 6), ("dev", 2))) -> Path:
    """PNG staves with random blobs, labelled with the olimpic-lmx fixtures (a manifest per split)."""
    import cv2

    labels = [" ".join(parse_lmx_text(p.read_text()).systems[0]) for p in sorted(FIXTURES.glob("*.lmx"))]
    labels = [label for label in labels if len(label.split()) <= 40]
    rng = np.random.default_rng(0)
    for split, count in counts:
        folder = root / split
        (folder / "images").mkdir(parents=True, exist_ok=True)
        with (folder / "manifest.jsonl").open("w") as manifest:
            for i in range(count):
                width = int(rng.integers(150, 300))
                image = np.full((64, width), 255, np.uint8)
                for top in (8, 36):
                    image[top:top + 20:4, 4:-4] = 0
                for _ in range(8):
                    cv2.circle(image, (int(rng.integers(8, width - 8)), int(rng.integers(8, 56))), 3, 0, -1)
                name = f"images/{split}{i}.png"
                cv2.imwrite(str(folder / name), image)
                manifest.write(json.dumps({"id": f"{split}{i}", "image": name, "lmx": labels[i % len(labels)],
                                           "width": width, "height": 64}) + "\n")
    return root


def _smoke_config(tmp_path: Path, weights: Path, data: Path, **overrides) -> GrpoConfig:
    values = dict(init=str(weights), data=str(data), out=str(tmp_path / "run"), steps=3, batch_size=2, group_size=3,
                  lr=1e-3, warmup_steps=1, threads=1, num_workers=0, precision="fp32", augment=False, log_every=1,
                  ckpt_every=2, eval_every=0, eval_limit=2, eval_max_len=12, max_len_start=8, max_len_end=16,
                  explore_frac=0.3, anneal_end_frac=1.0, reward_workers=0, max_tokens=96)
    values.update(overrides)
    return GrpoConfig(**values)


@pytest.fixture(scope="module")
def smoke_inputs(tmp_path_factory):
    from acai_omr.model.weights import save_weights

    root = tmp_path_factory.mktemp("grpo")
    model = tiny_model(seed=0)
    weights = save_weights(model, model.cfg, root / "weights")
    return weights, _write_tiny_dataset(root / "data")


def test_smoke_run_logs_every_step_checkpoints_and_resumes(tmp_path, smoke_inputs):
    from acai_omr.train.common import read_log
    from acai_omr.train.grpo import train_grpo

    weights, data = smoke_inputs
    trainer = train_grpo(_smoke_config(tmp_path, weights, data, steps=2))
    assert trainer.state.step == 2
    run = tmp_path / "run"
    assert (run / "last.pt").exists()
    records = read_log(run / "log.jsonl")
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "eval_before" and kinds[-1] == "summary" and "eval" in kinds
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for name in ("reward_mean", "tedn_score", "well_formedness", "f1", "repeat_penalty", "len_penalty",
                 "unparseable_rate", "temperature", "top_k", "max_len", "beta", "lambda_ce", "lambda_len",
                 "entropy", "ratio_mean", "clip_frac", "loss"):
        assert all(name in r for r in train), name
    assert all(math.isfinite(r["loss"]) and r["sample_len_mean"] <= r["max_len"] for r in train)
    summary = records[-1]
    assert summary["score_before"] is not None and summary["score_after"] is not None
    assert summary["weights_kept"] == (run / "best_weights" / "model.safetensors").exists()
    assert summary["weights_kept"] == (summary["best_score"] < summary["score_before"])

    resumed = train_grpo(_smoke_config(tmp_path, weights, data, steps=3))  # continues at step 2
    assert resumed.state.step == 3
    records = read_log(run / "log.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert sum(r["kind"] == "eval_before" for r in records) == 1


def test_updates_per_rollout_reuses_samples_and_the_ratio_moves(tmp_path, smoke_inputs):
    from acai_omr.train.common import read_log
    from acai_omr.train.grpo import train_grpo

    weights, data = smoke_inputs
    train_grpo(_smoke_config(tmp_path, weights, data, steps=2, updates_per_rollout=2, lr=5e-3, eval_limit=1))
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert [r["fresh_rollout"] for r in train] == [True, False]
    assert train[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert train[1]["ratio_mean"] != pytest.approx(1.0, abs=1e-6)
    assert train[0]["reward_mean"] == train[1]["reward_mean"]


# ---------------------------------------------------------------- command line


def test_cli_help_documents_every_field_and_bad_input_is_a_clear_error(capsys, tmp_path):
    from acai_omr.cli import main

    with pytest.raises(SystemExit):
        main(["train", "grpo", "--help"])
    out = capsys.readouterr().out
    for field in dataclasses.fields(GrpoConfig):
        assert "--" + field.name.replace("_", "-") in out, field.name
    assert "--config" in out and "exp(-alpha_tedn" in out

    assert main(["train", "grpo"]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["train", "grpo", "--init", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"group_sizes": 4}))
    assert main(["train", "grpo", "--init", "w", "--config", str(bad)]) == 2
    assert "group_sizes" in capsys.readouterr().err


def test_cli_config_file_then_flags(tmp_path):
    from acai_omr.cli import build_parser
    from acai_omr.train.grpo_cli import config_from_args

    path = tmp_path / "grpo.json"
    path.write_text(json.dumps({"group_size": 4, "lr": 1, "beta_start": 0.5}))
    args = build_parser().parse_args(["train", "grpo", "--init", "w", "--config", str(path), "--beta-start", "0.3"])
    cfg = config_from_args(args)
    assert cfg.group_size == 4 and cfg.lr == 1.0 and cfg.beta_start == 0.3 and cfg.init == "w"
    path.write_text(json.dumps({"group_size": "four"}))
    with pytest.raises(ValueError, match="group_size must be int"):
        config_from_args(build_parser().parse_args(["train", "grpo", "--config", str(path)]))


# ---------------------------------------------------------------- measure readers


def _two_measure_split(root: Path, copies: int = 4) -> None:
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES
    from test_dataset import write_split

    write_split(root, "train", [(f"two{i}", drawn_system(), TWO_MEASURES) for i in range(copies)])


def test_a_crop_is_scored_against_the_lmx_of_its_own_measures(tmp_path):
    from test_data_measures import TWO_MEASURES

    from acai_omr.lmx.delinearize import delinearize
    from acai_omr.train.grpo import GoldMusicXml

    _two_measure_split(tmp_path, copies=1)
    gold = GoldMusicXml(tmp_path, "train")
    second = TWO_MEASURES[TWO_MEASURES.index("measure D4"):].split()
    assert gold("two0", (1, 1)) == delinearize(second).to_musicxml()
    assert gold("two0", (0, 2)) == gold("two0") == delinearize(TWO_MEASURES.split()).to_musicxml()
    assert gold("two0", (1, 1)) != gold("two0")


def test_measure_reader_rollouts_are_rewarded_against_the_crop_each_sample_read(tmp_path):
    """A rollout over a batch of measure crops: every sample's reward components are those of its
    prediction scored against its own crop's LMX and MusicXML, not the whole system's."""
    from acai_omr.data.dataset import SystemDataset, collate_systems
    from acai_omr.data.measures import measure_slice
    from acai_omr.lmx.vocab import VOCAB
    from acai_omr.train.grpo import GoldMusicXml, make_rollout
    from acai_omr.train.reward import RewardParams, RewardScorer

    _two_measure_split(tmp_path, copies=1)
    model = tiny_model()
    dataset = SystemDataset(tmp_path, "train", height=model.cfg.image_height, augment=False, seed=0, max_tokens=96,
                            max_width=model.cfg.max_image_width, crop_measures=1.0, max_crop_measures=1)
    by_crop = {}
    for epoch in range(20):
        item = dataset[(0, epoch)]
        by_crop.setdefault(item["crop"], item)
    assert set(by_crop) == {(0, 1), (1, 1)}
    batch = collate_systems([by_crop[(0, 1)], by_crop[(1, 1)]], patch_width=model.cfg.patch_width)
    assert batch["crops"] == [(0, 1), (1, 1)]

    cfg = _smoke_config(tmp_path, tmp_path, tmp_path, group_size=2, max_len_start=12)
    gold = GoldMusicXml(tmp_path, "train")
    scorer = RewardScorer(RewardParams.from_config(cfg), 0)
    torch.manual_seed(0)
    rollout = make_rollout(model, batch, cfg, schedule_values(0, cfg, model.cfg.max_tokens - 1), scorer, gold)

    whole = gold.records["two0"]["lmx"].split()
    for row, components in enumerate(rollout.components):
        crop = batch["crops"][row // cfg.group_size]
        ids = rollout.sample_ids[row, : int(rollout.lengths[row])].tolist()
        pred = VOCAB.decode(ids[:-1] if ids and ids[-1] == VOCAB.eos_id else ids)
        expected = scorer.score([pred], [measure_slice(whole, *crop)], [gold("two0", crop)])[0]
        assert components == expected


def test_grpo_samples_crops_when_the_weights_read_by_measures(tmp_path):
    from acai_omr.model.weights import save_weights
    from acai_omr.train.common import read_log
    from acai_omr.train.grpo import train_grpo

    _two_measure_split(tmp_path / "data")
    (tmp_path / "data" / "dev").symlink_to(tmp_path / "data" / "train")
    model = tiny_model()
    model.cfg = dataclasses.replace(model.cfg, read_measures=1)
    weights = save_weights(model, model.cfg, tmp_path / "weights")
    trainer = train_grpo(_smoke_config(tmp_path, weights, tmp_path / "data", steps=1, batch_size=2, eval_limit=1))
    assert trainer.dataset.crop_measures == 1.0 and trainer.dataset.max_crop_measures == 1
    train = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert len(train) == 1 and math.isfinite(train[0]["loss"])
