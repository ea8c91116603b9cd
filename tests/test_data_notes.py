"""Where the notes are drawn: Verovio's and MuseScore's noteheads and rests, carried through crops,
distortions and resizing to the patches the encoder's note-map loss scores."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from acai_omr.config import DegradeConfig
from acai_omr.data.degrade import degrade, degrade_with_points
from acai_omr.lmx import linearize_part
from acai_omr.lmx.reading_order import NOTE_LABELS, reading_order
from acai_omr.lmx.vocab import VOCAB
from acai_omr.render.musescore import find_mscore
from shared_data import CORPORA
from test_data_degrade import synthetic_system

needs_corpora = pytest.mark.skipif(not (CORPORA / "lieder" / "dev").exists(), reason="shared corpora missing")
needs_mscore = pytest.mark.skipif(find_mscore() is None, reason="MuseScore 3 not installed")
SHORT_PIECES = ["lc5100073", "lc6177220"]  # the two smallest Lieder dev files


def _rendered_systems(seed: int = 0):
    from acai_omr.data.ingest import piano_only_score
    from acai_omr.data.verovio_render import VerovioEngraver, sample_options
    from acai_omr.lmx import read_score

    rng = random.Random(seed)
    score = piano_only_score(read_score(CORPORA / "lieder" / "dev" / "lc5100073.mxl"))
    return VerovioEngraver().render_systems(score, sample_options(rng), rng, 10.0)


def _on_ink(image: np.ndarray, points: np.ndarray, radius: int = 2, dark: int = 128) -> np.ndarray:
    """For each (x, y): is there ink within `radius` pixels of it."""
    hits = []
    for x, y in points:
        xi, yi = int(x), int(y)
        window = image[max(0, yi - radius): yi + radius + 1, max(0, xi - radius): xi + radius + 1]
        hits.append(window.size > 0 and window.min() < dark)
    return np.array(hits)


@needs_corpora
@pytest.mark.parametrize("seed", [0, 1])
def test_verovio_notes_are_the_gold_notes_and_sit_on_their_glyphs(seed):
    """Each drawn note's label comes from the engraver, not from the LMX: the two must agree as
    multisets (the labels reading_order gives), and every point must sit on ink."""
    systems = _rendered_systems(seed)
    assert systems
    for system in systems:
        gold = Counter(reading_order(linearize_part(system.part, fail_on_unknown=False)))
        assert Counter(label for _, _, label in system.notes) == gold
        assert _on_ink(system.image, np.array([note[:2] for note in system.notes])).all()


def _musescore_systems(piece: str, seed: int, monkeypatch=None):
    """One piece engraved by MuseScore as the build does it; with `monkeypatch`, also every drawn
    system the build read notes from, as (SystemOnPage, a copy of its gold)."""
    from acai_omr.data import musescore_render
    from acai_omr.data.ingest import piano_only_score
    from acai_omr.lmx import read_score

    seen = []
    if monkeypatch is not None:
        read = musescore_render.drawn_notes

        def keep(system, gold, **options):
            seen.append((system, copy.deepcopy(gold)))
            return read(system, gold, **options)

        monkeypatch.setattr(musescore_render, "drawn_notes", keep)
    score = piano_only_score(read_score(CORPORA / "lieder" / "dev" / f"{piece}.mxl"))
    systems, = musescore_render.render_batch([score], random.Random(seed))
    assert not isinstance(systems, str), systems
    return systems, seen


@needs_corpora
@needs_mscore
@pytest.mark.parametrize("piece", SHORT_PIECES)
def test_musescore_notes_are_the_gold_notes_and_sit_on_their_glyphs(piece):
    """MuseScore's SVG gives no pitches: they are read from each notehead's staff position under
    its clef, and must be the gold's (as multisets) and sit on ink in the final image."""
    systems, _ = _musescore_systems(piece, seed=2)
    labelled = [system for system in systems if system.notes is not None]
    assert len(labelled) >= max(1, len(systems) - 1)
    for system in labelled:
        gold = Counter(reading_order(linearize_part(system.part, fail_on_unknown=False)))
        assert Counter(label for _, _, label in system.notes) == gold
        assert _on_ink(system.image, np.array([note[:2] for note in system.notes])).all()


@needs_corpora
@needs_mscore
def test_a_musescore_gold_that_lost_a_drawn_clef_does_not_read_as_its_drawing(monkeypatch):
    """MuseScore 3's MusicXML export loses some clef changes it draws; the build drops such a system
    because its noteheads, read under the gold's clefs, are not the gold's pitches."""
    from acai_omr.data.musescore_render import drawn_notes, read_as_gold

    _, seen = _musescore_systems(SHORT_PIECES[0], seed=2, monkeypatch=monkeypatch)
    system, gold = seen[0]
    assert read_as_gold(drawn_notes(system, gold), gold)
    for clef in gold.iter("clef"):
        if clef.get("number") == "2":  # the left hand's bass clef, as the export would lose it
            assert clef.findtext("sign") == "F"
            clef.find("sign").text, clef.find("line").text = "G", "2"
    assert not read_as_gold(drawn_notes(system, gold), gold)


def _dotted(width: int = 600, height: int = 160, count: int = 40, seed: int = 0):
    """A white image with `count` black 5x5 dots and their centres."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 255, np.uint8)
    points = np.stack([rng.uniform(10, width - 10, count), rng.uniform(10, height - 10, count)], axis=1)
    for x, y in points:
        image[int(y) - 2: int(y) + 3, int(x) - 2: int(x) + 3] = 0
    return image, points


def test_degradation_moves_points_with_the_pixels():
    """Loose and tight boxes, stretch, skew, perspective and page curl: after each, a dot's centre
    is still on the dot. Appearance damage is off so darkness means the dot."""
    cfg = DegradeConfig(strength=1.4, p_clean=0.0, p_ink=0, p_bleed=0, p_paper=0, p_lighting=0, p_shadow=0,
                        p_blur=0, p_defocus=0, p_motion=0, p_lowres=0, p_noise=0, p_jpeg=0, p_binarize=0,
                        p_neighbour=0, p_curl=1.0, p_photo=0.7)
    moved_any = False
    for seed in range(12):
        image, points = _dotted(seed=seed)
        out, moved = degrade_with_points(image, points, np.random.default_rng(seed), cfg)
        # the same pixels as degrade() draws from the same generator
        assert np.array_equal(out, degrade(image, np.random.default_rng(seed), cfg))
        inside = (moved[:, 0] >= 0) & (moved[:, 0] < out.shape[1]) & (moved[:, 1] >= 0) & (moved[:, 1] < out.shape[0])
        assert inside.mean() > 0.9
        assert _on_ink(out, moved[inside], radius=1).all(), seed
        moved_any |= np.abs(moved - points).max() > 3
    assert moved_any


def test_an_image_shrunk_for_opencv_moves_its_points_too():
    image, points = _dotted(width=600)
    wide = cv2.resize(image, (20000, 160), interpolation=cv2.INTER_NEAREST)  # over degrade's MAX_SIDE
    out, moved = degrade_with_points(wide, points * [20000 / 600, 1.0], np.random.default_rng(0),
                                     DegradeConfig(strength=0.0))
    assert out.shape[1] < 20000 and _on_ink(out, moved, radius=1).all()


def _write_rendered_split(root: Path, systems) -> None:
    shard = root / "train" / "shards" / "00000"
    shard.mkdir(parents=True)
    with (root / "train" / "manifest.jsonl").open("w") as handle:
        for index, system in enumerate(systems):
            cv2.imwrite(str(shard / f"s{index}.png"), system.image)
            record = {"id": f"s{index}", "image": f"shards/00000/s{index}.png",
                      "lmx": " ".join(linearize_part(system.part, fail_on_unknown=False)),
                      "width": system.image.shape[1], "height": system.image.shape[0],
                      "notes": [list(note) for note in system.notes]}
            handle.write(json.dumps(record) + "\n")


@needs_corpora
def test_dataset_items_carry_the_notes_of_their_measure_crop_to_their_final_pixels(tmp_path):
    """A crop of measures keeps exactly the notes of those measures' LMX, and after resizing to the
    model's height every point still sits on ink."""
    from acai_omr.data.dataset import SystemDataset

    _write_rendered_split(tmp_path, _rendered_systems(0))
    checked = 0
    for epoch in range(3):
        ds = SystemDataset(tmp_path, "train", height=128, augment=False, seed=3, max_tokens=None,
                           crop_measures=1.0, max_crop_measures=2, return_notes=True)
        assert len(ds) >= 1
        for index in range(len(ds)):
            item = ds[(index, epoch)]
            points, labels = item["notes"]
            gold = Counter(reading_order(VOCAB.decode(item["tokens"].tolist())))
            assert Counter(NOTE_LABELS[i] for i in labels.tolist()) == gold
            image = (item["image"][0].numpy() * 255).astype(np.uint8)
            assert _on_ink(image, points.numpy(), radius=2, dark=160).all()  # hollow heads: ink within 2 px
            checked += 1
    assert checked >= 3


@needs_corpora
def test_has_notes_tells_which_items_carry_positions_and_needs_return_notes(tmp_path):
    """A render without recorded positions (a MuseScore system whose notes could not be read): has_notes
    says so per item, and asking without return_notes is an error rather than a silent False."""
    from acai_omr.data.dataset import SystemDataset

    _write_rendered_split(tmp_path, _rendered_systems(0))
    manifest = tmp_path / "train" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) >= 2
    del records[0]["notes"]
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    ds = SystemDataset(tmp_path, "train", height=128, augment=False, seed=3, max_tokens=None, return_notes=True)
    assert [ds.has_notes(i) for i in range(len(ds))] == [False] + [True] * (len(ds) - 1)
    assert ds[0]["notes"] is None and ds[1]["notes"] is not None
    plain = SystemDataset(tmp_path, "train", height=128, augment=False, seed=3, max_tokens=None)
    with pytest.raises(ValueError, match="return_notes"):
        plain.has_notes(0)


@needs_corpora
def test_degraded_items_keep_their_notes_on_the_page(tmp_path):
    from acai_omr.data.dataset import SystemDataset, collate_systems

    _write_rendered_split(tmp_path, _rendered_systems(1))
    ds = SystemDataset(tmp_path, "train", height=128, augment=True, seed=5, max_tokens=None, return_notes=True,
                       degrade_config=DegradeConfig(strength=1.0, p_clean=0.0))
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        points, labels = item["notes"]
        assert len(points) == len(labels) > 0
        assert (points[:, 0] < item["image"].shape[2]).all() and (points[:, 1] < 128).all()
    batch = collate_systems(items)
    assert batch["has_notes"].all()
    assert len(batch["note_points"]) == sum(len(item["notes"][1]) for item in items)
    assert set(batch["note_points"][:, 0].long().tolist()) == set(range(len(items)))


def test_note_map_targets_mark_each_note_in_its_patch_and_the_loss_skips_images_without_notes():
    from acai_omr.model.heads import NoteMapHead

    head = NoteMapHead(dim=8, rows=4, patch_height=16, patch_width=16)
    rest = NOTE_LABELS.index("rest")
    # image 0: a C4 at (20, 40) -> row 2, column 1; image 1 has no notes recorded
    points = torch.tensor([[0, 20.0, 40.0, NOTE_LABELS.index("C4")], [0, 20.0, 41.0, rest]])
    target = head.targets(points, (2, 4 * 5, len(NOTE_LABELS)))
    assert target.sum() == 2 and target[0, 2 * 5 + 1, NOTE_LABELS.index("C4")] == 1
    assert target[0, 2 * 5 + 1, rest] == 1
    memory = torch.randn(2, 20, 8)
    valid = torch.ones(2, 20, dtype=torch.bool)
    loss = head(memory, valid, points, torch.tensor([True, False]))
    # image 1's patches do not count: changing its memory leaves the loss as it is
    memory2 = memory.clone()
    memory2[1] = torch.randn(20, 8)
    assert torch.allclose(loss, head(memory2, valid, points, torch.tensor([True, False])))
    # a read-out that names the notes scores better than one that names none
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-8.0)
    silent = head(memory, valid, points, torch.tensor([True, False]))
    assert silent > 0.5  # two notes missed
    assert head(memory, valid, torch.zeros(0, 4), torch.tensor([True, False])) < 0.05


@needs_corpora
@pytest.mark.parametrize("pitch_pointer", [False, True], ids=["own-head", "pitch-pointer"])
def test_supervised_run_with_the_note_map_loss_logs_it_and_it_falls(tmp_path, pitch_pointer):
    """The note-map loss trains a head of the objective's, or, with a PitchPointer, the pointer's own
    map (the one the decoder reads pitches from), which then ships with the weights. A run's trained
    head can start another run's head or pointer (`--init-note-map`)."""
    from acai_omr.model import OMRModel
    from acai_omr.train.common import read_log
    from acai_omr.train.supervised import load_note_map_into, train_supervised
    from test_train import tiny_model_config, tiny_supervised_config

    _write_rendered_split(tmp_path / "data", _rendered_systems(0) + _rendered_systems(1))
    cfg = tiny_supervised_config(tmp_path / "data", tmp_path / "run", steps=30, batch_size=2, lr=3e-3,
                                 ss_start=2.0, aux_notes=1.0, augment=False, crop_measures=1.0,
                                 crop_max_measures=1, pitch_pointer=pitch_pointer, pointer_lr_scale=10.0)
    model_cfg = tiny_model_config(image_height=128, max_image_width=1024, max_tokens=512,
                                  pitch_pointer=pitch_pointer)
    trainer = train_supervised(cfg, model_cfg)
    losses = [r["note_loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model = trainer.objective.model
    if pitch_pointer:
        assert trainer.objective.note_head.proj is None  # no second map beside the pointer's
        assert "decoder.pointer.note_map.weight" in model.state_dict()
        train_log = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
        assert all("pointer_gate" in r for r in train_log)
        # the pointer's untrained query, key and gate move at 10x the rate; its map (started trained) does not
        name_of = {id(p): n for n, p in trainer.objective.named_parameters()}
        rate = {name_of[id(p)]: g["initial_lr"] / cfg.lr for g in trainer.optimizer.param_groups for p in g["params"]}
        pointer = {n: r for n, r in rate.items() if n.startswith("model.decoder.pointer.")}
        assert {n for n, r in pointer.items() if r == pytest.approx(10.0)} == {
            f"model.decoder.pointer.{n}" for n in ("query.weight", "query.bias", "key.weight", "key.bias", "gate")}
        assert rate["model.decoder.pointer.note_map.weight"] == pytest.approx(1.0)
        # the log's rate is the run's own (--lr through its schedule), not the pointer's ten times it
        assert all(0 < r["lr"] <= cfg.lr * 1.0001 for r in train_log)
    pointed = OMRModel(dataclasses.replace(model_cfg, pitch_pointer=True))
    load_note_map_into(pointed.decoder.pointer.note_map, str(tmp_path / "run" / "last.pt"))
    trained = model.decoder.pointer.note_map if pitch_pointer else trainer.objective.note_head.proj
    assert torch.equal(pointed.decoder.pointer.note_map.weight, trained.weight)
    # and a continued run starts from the trained head, whichever model holds it
    cfg2 = dataclasses.replace(cfg, out=str(tmp_path / "run2"), steps=1, init_note_map=str(tmp_path / "run" / "last.pt"))
    train_supervised(cfg2, model_cfg)
    losses2 = [r["note_loss"] for r in read_log(tmp_path / "run2" / "log.jsonl") if r["kind"] == "train"]
    assert losses2[0] < np.mean(losses[:5])  # its first step scores as a trained head does
