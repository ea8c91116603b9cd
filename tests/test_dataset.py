"""SystemDataset, collate_systems and WidthBucketSampler on a tiny on-disk manifest."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from acai_omr.data.dataset import SystemDataset, collate_systems, seed_worker
from acai_omr.data.sampler import WidthBucketSampler
from acai_omr.lmx.vocab import VOCAB
from test_data_degrade import synthetic_system

HEIGHT = 64
LMX = "measure key:fifths:0 time beats:4 beat-type:4 clef:G2 staff:1 C4 voice:1 quarter stem:up staff:1"


def write_split(root: Path, split: str, systems: list[tuple[str, np.ndarray, str]]) -> None:
    """Write PNGs into shards/00000/ and a manifest in the renderer's format."""
    shard = root / split / "shards" / "00000"
    shard.mkdir(parents=True)
    with (root / split / "manifest.jsonl").open("w") as handle:
        for system_id, image, lmx in systems:
            cv2.imwrite(str(shard / f"{system_id}.png"), image)
            record = {
                "id": system_id, "image": f"shards/00000/{system_id}.png", "lmx": lmx, "musicxml": "",
                "source": "synthetic", "corpus": "test", "engraver": "none", "options": {},
                "width": image.shape[1], "height": image.shape[0],
            }
            handle.write(json.dumps(record) + "\n")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    systems = [(f"sys{i}", synthetic_system(300 + 150 * i, 120, seed=i), LMX + " measure" * i) for i in range(5)]
    systems.append(("unknown", synthetic_system(400, 120), LMX + " not-a-token"))
    systems.append(("long", synthetic_system(400, 120), LMX + " measure" * 200))
    write_split(tmp_path, "train", systems)
    return tmp_path


def make(root: Path, **kwargs) -> SystemDataset:
    options = dict(height=HEIGHT, augment=True, seed=7, max_tokens=64)
    options.update(kwargs)
    return SystemDataset(root, "train", **options)


# ----------------------------------------------------------------------------- dataset


def test_item_has_image_tokens_and_id(data_root):
    ds = make(data_root, augment=False)
    assert len(ds) == 5 and ds.skipped == {"too_long": 1, "unknown_token": 1}
    item = ds[2]
    assert item["id"] == "sys2"
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape[:2] == (1, HEIGHT)
    assert image.shape[2] == round((300 + 150 * 2) * HEIGHT / 120)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[0, 0, 0] == 1.0 and image.min() < 0.3, "1.0 is white paper, dark is ink"
    tokens = item["tokens"]
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [VOCAB.bos_id, *VOCAB.encode(LMX + " measure" * 2), VOCAB.eos_id]


def test_widths_match_items_without_augmentation(data_root):
    ds = make(data_root, augment=False)
    assert ds.widths.tolist() == [ds[i]["image"].shape[2] for i in range(len(ds))]


def test_augmentation_is_a_function_of_seed_epoch_index(data_root):
    ds, twin = make(data_root), make(data_root)
    a = ds[(3, 5)]["image"]
    assert torch.equal(a, twin[(3, 5)]["image"])
    ds.set_epoch(5)
    assert torch.equal(a, ds[3]["image"]), "int index uses the epoch from set_epoch"
    other_epoch = ds[(3, 6)]["image"]
    assert a.shape != other_epoch.shape or not torch.equal(a, other_epoch)
    other_seed = make(data_root, seed=8)[(3, 5)]["image"]
    assert a.shape != other_seed.shape or not torch.equal(a, other_seed)


def _ink(image: torch.Tensor) -> np.ndarray:
    """Ink strokes without slow shading (difference of Gaussians), so shadows cannot fool the alignment."""
    gray = image[0].numpy().astype(np.float64)
    return cv2.GaussianBlur(gray, (0, 0), 8.0) - cv2.GaussianBlur(gray, (0, 0), 1.5)


def test_return_clean_gives_aligned_undegraded_target(data_root):
    ds = make(data_root, return_clean=True)
    for index in range(len(ds)):
        item = ds[(index, 1)]
        image, clean = item["image"], item["clean"]
        assert image.shape == clean.shape
        (dx, dy), _ = cv2.phaseCorrelate(_ink(clean), _ink(image))
        assert abs(dx) < 1.5 and abs(dy) < 1.5, (index, dx, dy)
        assert torch.equal(item["image"], make(data_root)[(index, 1)]["image"]), "return_clean changes nothing else"
    plain = make(data_root, augment=False, return_clean=True)[0]
    assert torch.equal(plain["image"], plain["clean"])


def test_overwide_system_is_shrunk_uniformly_and_padded_white(tmp_path):
    write_split(tmp_path, "train", [("wide", synthetic_system(3000, 100), LMX)])
    ds = SystemDataset(tmp_path, "train", height=50, augment=False, seed=0, max_tokens=None, max_width=600)
    image = ds[0]["image"]
    assert image.shape == (1, 50, 600) and ds.widths.tolist() == [600]
    # 3000x100 -> 600x20: 15 white rows above and below
    assert torch.all(image[:, :14] == 1.0) and torch.all(image[:, -14:] == 1.0)
    assert image[:, 15:35].min() < 0.5


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        SystemDataset(tmp_path, "train", height=HEIGHT, augment=False, seed=0, max_tokens=None)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "manifest.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:1: missing field\(s\) image, lmx"):
        SystemDataset(tmp_path, "train", height=HEIGHT, augment=False, seed=0, max_tokens=None)
    (tmp_path / "train" / "manifest.jsonl").write_text("\n{oops\n")
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: invalid JSON"):
        SystemDataset(tmp_path, "train", height=HEIGHT, augment=False, seed=0, max_tokens=None)


def test_missing_image_file_is_a_clear_error(data_root):
    (data_root / "train" / "shards" / "00000" / "sys0.png").unlink()
    with pytest.raises(FileNotFoundError, match="sys0.png"):
        make(data_root)[0]


# ----------------------------------------------------------------------------- collate


def test_collate_pads_with_white_to_a_patch_multiple(data_root):
    ds = make(data_root, return_clean=True)
    items = [ds[(i, 0)] for i in (0, 3, 1)]
    batch = collate_systems(items, patch_width=16)
    widths = [item["image"].shape[2] for item in items]
    assert batch["widths"].tolist() == widths
    assert batch["images"].shape == (3, 1, HEIGHT, -(-max(widths) // 16) * 16)
    for row, item in enumerate(items):
        assert torch.equal(batch["images"][row, :, :, : widths[row]], item["image"])
        assert torch.all(batch["images"][row, :, :, widths[row] :] == 1.0)
        assert torch.equal(batch["clean"][row, :, :, : widths[row]], item["clean"])
        assert torch.all(batch["clean"][row, :, :, widths[row] :] == 1.0)
    lengths = [len(item["tokens"]) for item in items]
    assert batch["token_lengths"].tolist() == lengths
    assert batch["tokens"].shape == (3, max(lengths))
    for row, item in enumerate(items):
        assert torch.equal(batch["tokens"][row, : lengths[row]], item["tokens"])
        assert torch.all(batch["tokens"][row, lengths[row] :] == VOCAB.pad_id)
    assert batch["ids"] == ["sys0", "sys3", "sys1"]


def test_collate_rejects_mixed_heights():
    item = {"image": torch.ones(1, 32, 40), "tokens": torch.tensor([1, 2]), "id": "a"}
    other = {"image": torch.ones(1, 48, 40), "tokens": torch.tensor([1, 2]), "id": "b"}
    with pytest.raises(ValueError, match="same height"):
        collate_systems([item, other], patch_width=16)


def test_dataloader_workers_reproduce_single_process_batches(data_root):
    """Workers do not change (or repeat) augmentations: they depend on (seed, epoch, index) only."""
    ds = make(data_root)

    def epoch_batches(workers: int, epoch: int) -> list[torch.Tensor]:
        sampler = WidthBucketSampler(ds.widths, batch_size=2, seed=1)
        sampler.set_epoch(epoch)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, worker_init_fn=seed_worker,
                            collate_fn=partial(collate_systems, patch_width=8))
        return [batch["images"] for batch in loader]

    single, parallel = epoch_batches(0, 4), epoch_batches(2, 4)
    assert len(single) == len(parallel) == 3
    assert all(torch.equal(a, b) for a, b in zip(single, parallel))
    next_epoch = epoch_batches(0, 5)
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(single, next_epoch))


# ----------------------------------------------------------------------------- sampler


def flat(batches) -> list[int]:
    return [index for batch in batches for index in batch]


@pytest.mark.parametrize("count,batch_size", [(1, 4), (10, 3), (64, 8), (101, 16)])
def test_sampler_yields_every_index_once_per_epoch(count, batch_size):
    widths = np.random.default_rng(0).integers(200, 2000, size=count)
    sampler = WidthBucketSampler(widths, batch_size, seed=3, yield_epoch=False)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(count))
        assert all(1 <= len(b) <= batch_size for b in batches) and len(batches) == len(sampler)


def test_sampler_drop_last_keeps_only_full_batches():
    sampler = WidthBucketSampler(np.arange(50), 8, seed=0, drop_last=True, yield_epoch=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6 and all(len(b) == 8 for b in batches)
    assert len(set(flat(batches))) == 48


def test_sampler_batches_hold_similar_widths():
    widths = np.random.default_rng(1).integers(100, 3000, size=400)
    # one chunk covers everything: batches are disjoint runs of the sorted widths
    sampler = WidthBucketSampler(widths, 10, seed=0, chunk_batches=100, yield_epoch=False)
    spans = sorted((widths[b].min(), widths[b].max()) for b in sampler)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))
    # with chunks of 16 batches, batches are still far narrower than random ones
    sampler = WidthBucketSampler(widths, 10, seed=0, chunk_batches=16, yield_epoch=False)
    bucketed = np.mean([np.ptp(widths[b]) for b in sampler])
    random_batches = np.random.default_rng(2).permutation(400).reshape(-1, 10)
    assert bucketed < 0.25 * np.mean([np.ptp(widths[b]) for b in random_batches])
    # without shuffle, the whole epoch is in width order
    ordered = flat(WidthBucketSampler(widths, 10, shuffle=False, yield_epoch=False))
    assert np.all(np.diff(widths[ordered]) >= 0)


def test_sampler_order_depends_on_seed_and_epoch_only():
    widths = np.random.default_rng(3).integers(100, 3000, size=200)
    a = WidthBucketSampler(widths, 8, seed=5, yield_epoch=False)
    b = WidthBucketSampler(widths, 8, seed=5, yield_epoch=False)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(a) != list(WidthBucketSampler(widths, 8, seed=6, yield_epoch=False))


@pytest.mark.parametrize("count", [96, 100, 61])
def test_sampler_rank_shards_are_disjoint_complete_and_equal_length(count):
    widths = np.random.default_rng(4).integers(100, 3000, size=count)
    world = 3
    shards = [WidthBucketSampler(widths, 8, seed=2, rank=r, world_size=world, yield_epoch=False) for r in range(world)]
    for shard in shards:
        shard.set_epoch(7)
    batches = [list(s) for s in shards]
    assert len({len(b) for b in batches}) == 1, "every rank must take the same number of steps"
    assert all(len(b) == len(s) for b, s in zip(batches, shards))
    seen = [flat(b) for b in batches]
    assert sorted(sum(seen, [])) == list(range(count))


def test_sampler_pads_when_fewer_leftovers_than_ranks():
    shards = [WidthBucketSampler(np.arange(9), 4, rank=r, world_size=2, yield_epoch=False) for r in range(2)]
    batches = [list(s) for s in shards]
    assert [len(b) for b in batches] == [2, 2]
    assert set(flat(batches[0]) + flat(batches[1])) == set(range(9))


def test_sampler_resume_skips_the_first_batches():
    widths = np.random.default_rng(5).integers(100, 3000, size=100)
    sampler = WidthBucketSampler(widths, 8, seed=1, yield_epoch=False)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start_batch=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5
    sampler.set_epoch(4)
    assert len(list(sampler)) == len(full)


def test_sampler_tags_indices_with_epoch_for_the_dataset():
    sampler = WidthBucketSampler([10, 20, 30], 2, seed=0)
    sampler.set_epoch(9)
    pairs = flat(list(sampler))
    assert sorted(pairs) == [(0, 9), (1, 9), (2, 9)]


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        WidthBucketSampler([1, 2], 0)
    with pytest.raises(ValueError):
        WidthBucketSampler([1, 2], 2, rank=2, world_size=2)
    with pytest.raises(ValueError):
        WidthBucketSampler([], 2)


def test_measure_crops_replace_image_and_tokens_together(tmp_path):
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES

    write_split(tmp_path, "train", [("two", drawn_system(), TWO_MEASURES)])
    whole = make(tmp_path, augment=False, height=160)[0]
    measures = TWO_MEASURES.split(" measure ")
    seen = set()
    for epoch in range(12):
        ds = make(tmp_path, augment=False, height=160, crop_measures=1.0, max_crop_measures=1)
        item = ds[(0, epoch)]
        text = " ".join(VOCAB.decode(item["tokens"][1:-1].tolist()))
        assert item["tokens"][0] == VOCAB.bos_id and item["tokens"][-1] == VOCAB.eos_id
        seen.add(text)
        assert item["image"].shape[2] < whole["image"].shape[2]  # narrower than the system
    assert seen == {measures[0], "measure " + measures[1]}


def test_epoch_widths_are_the_widths_items_load_with(tmp_path):
    """The sampler buckets crops by width before loading them: the width it is told must be the one
    the item has, crop or whole, epoch after epoch."""
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES

    blank = np.full((160, 300), 255, np.uint8)  # no staves: never cropped, stays whole
    write_split(tmp_path, "train", [("two", drawn_system(), TWO_MEASURES), ("blank", blank, TWO_MEASURES)])
    ds = make(tmp_path, augment=False, height=160, crop_measures=0.5, max_crop_measures=1)
    assert ds.bounds[1] is None and ds.bounds[0]["bounds"] == [[10, 200], [200, 390]]
    seen = set()
    for epoch in range(8):
        widths = ds.epoch_widths(epoch)
        assert [ds[(i, epoch)]["image"].shape[2] for i in range(2)] == widths.tolist()
        seen.add(int(widths[0]))
    assert len(seen) >= 2  # crops of different measures, or the whole system


def test_measure_bounds_are_cached_per_split(tmp_path):
    from acai_omr.data.measures import BOUNDS_FILE
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES

    write_split(tmp_path, "train", [("two", drawn_system(), TWO_MEASURES)])
    make(tmp_path, augment=False, height=160, crop_measures=1.0)
    cache = tmp_path / "train" / BOUNDS_FILE
    assert json.loads(cache.read_text())["bounds"] == [[10, 200], [200, 390]]
    (tmp_path / "train" / "shards" / "00000" / "two.png").unlink()  # a cached split never decodes again
    assert make(tmp_path, augment=False, height=160, crop_measures=1.0).bounds[0]["width"] == 400


def test_sampler_takes_widths_per_epoch():
    calls = []

    def widths(epoch):
        calls.append(epoch)
        return np.array([1, 100, 2, 101]) if epoch % 2 == 0 else np.array([100, 1, 101, 2])

    sampler = WidthBucketSampler(widths, 2, seed=0, yield_epoch=False)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        narrow = {0, 2} if epoch % 2 == 0 else {1, 3}
        assert narrow in [set(batch) for batch in sampler]
    assert calls[-1] == 3


def test_all_crops_drops_systems_that_cannot_be_cropped(tmp_path):
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES

    blank = np.full((160, 300), 255, np.uint8)
    write_split(tmp_path, "train", [("two", drawn_system(), TWO_MEASURES), ("blank", blank, TWO_MEASURES)])
    ds = make(tmp_path, augment=False, height=160, crop_measures=1.0)
    assert len(ds) == 1 and ds.skipped == {"uncroppable": 1} and ds.records[0]["id"] == "two"
    assert ds[(0, 0)]["image"].shape[2] == ds.epoch_widths(0)[0] < 400


def test_header_share_starts_crops_at_the_first_measure(tmp_path):
    """--crop-first-share: that share of crops hold the system's header (clefs, key); a system whose first
    measure prints a time signature is always cropped from its start; share 0 keeps uniform runs."""
    from drawn import drawn_system
    from test_data_measures import TWO_MEASURES

    timed = TWO_MEASURES.replace("key:fifths:0", "key:fifths:0 time beats:4 beat-type:4")
    write_split(tmp_path, "train", [("timed", drawn_system(), timed), ("plain", drawn_system(), TWO_MEASURES)])
    firsts = {share: [[make(tmp_path, augment=False, height=160, crop_measures=1.0, max_crop_measures=1,
                            crop_first_share=share).crop_plan(i, epoch)[0] for epoch in range(40)] for i in range(2)]
              for share in (0.0, 0.5)}
    assert set(firsts[0.0][0]) == {0, 1} and set(firsts[0.0][1]) == {0, 1}  # uniform: either measure
    assert set(firsts[0.5][0]) == {0}  # prints a time signature: always its header
    plain_first = firsts[0.5][1].count(0) / 40
    assert 0.6 <= plain_first <= 0.95  # 0.5 + 0.5 * 1/2 = 0.75 expected
    item = make(tmp_path, augment=False, height=160, crop_measures=1.0, max_crop_measures=1,
                crop_first_share=0.5)[(0, 3)]
    assert VOCAB.decode(item["tokens"][1:-1].tolist()) == timed.split(" measure ")[0].split()
