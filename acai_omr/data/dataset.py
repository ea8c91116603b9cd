"""Labelled system images as model inputs: manifest reading, image shaping, the Dataset and its collate.

A split lives in `<root>/<split>/`: `manifest.jsonl` (one JSON record per
system: `id`, `image` relative to the split folder, `lmx`, and usually the
image's `width`/`height`) plus the images. Every image becomes a float tensor
[1, height, W] with 1.0 = white paper; training augmentation (scan/photo
degradation) is a pure function of (seed, epoch, index), so worker processes,
resumed runs and DDP ranks all see the same pixels.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from acai_omr.config import DegradeConfig, ModelConfig
from acai_omr.data.degrade import degrade, degrade_pair, degrade_with_points
from acai_omr.data.measures import choose_run, load_measure_bounds, measure_slice
from acai_omr.detect.barlines import crop_span
from acai_omr.data.preprocess import fitted_size, load_gray, system_input
from acai_omr.lmx.reading_order import NOTE_LABEL_INDEX
from acai_omr.lmx.vocab import VOCAB

REQUIRED_FIELDS = ("id", "image", "lmx")
MEASURE_ID = VOCAB.encode(["measure"])[0]
TIME_ID = VOCAB.encode(["time"])[0]
_IMPORTED_IN_PID = os.getpid()  # differs from os.getpid() in a forked process

# ---------------------------------------------------------------- manifest


def read_manifest(path: str | Path) -> list[dict]:
    """Records of a JSONL manifest (blank lines skipped); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            missing = [field for field in REQUIRED_FIELDS if field not in record]
            if missing:
                raise ValueError(f"{path}:{line_number}: missing field(s) {', '.join(missing)}")
            records.append(record)
    return records


# ---------------------------------------------------------------- dataset


class SystemDataset(Dataset):
    """The labelled systems of one split, shaped for the model and optionally degraded.

    Records the model cannot learn from are dropped and counted by reason in
    `skipped`: LMX tokens outside the vocabulary ("unknown_token") or more than
    `max_tokens` tokens with <bos>/<eos> ("too_long"; None = no limit).
    `widths` holds every item's width after `fit_height`, taken from the
    manifest so the sampler can bucket by width without decoding any image.

    An item is `{"id", "image" [1, height, W], "tokens" [bos, ..., eos]}`, plus
    `"clean"` (the same geometry without photometric damage, the MAE target)
    when `return_clean`, and `"notes"` when `return_notes`: where the item's
    noteheads and rests are drawn in its final image, ([N, 2] x/y pixels,
    [N] indices into `NOTE_LABELS`), moved with every crop, distortion and
    resize; None for images whose notes were not recorded (a MuseScore system under an ottava line). With `crop_measures` > 0 that share of items is a
    run of 1..`max_crop_measures` measures of the system and their LMX (the
    crop is drawn from (seed, epoch, index) like the degradation; systems whose
    barlines cannot be matched stay whole, or with `crop_measures` 1 are
    dropped, counted as "uncroppable"). The barlines are found once per
    split and cached (`acai_omr.data.measures.load_measure_bounds`), so
    `epoch_widths(epoch)` gives every item's width, crops included, before
    any image is loaded. Index with `(index, epoch)` (what WidthBucketSampler
    yields) or with an int, which uses the epoch given to `set_epoch`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        height: int,
        augment: bool,
        seed: int,
        max_tokens: int | None,
        return_clean: bool = False,
        max_width: int = ModelConfig.max_image_width,
        degrade_config: DegradeConfig | None = None,
        crop_measures: float = 0.0,
        max_crop_measures: int = 2,
        return_notes: bool = False,
        crop_first_share: float = 0.0,
    ):
        self.split_dir = Path(root) / split
        # chance an item is cut to 1..max_crop_measures measures (acai_omr.data.measures); else whole
        self.crop_measures, self.max_crop_measures = crop_measures, max_crop_measures
        # chance a crop starts at the system's first measure; systems that print a time signature then always do
        self.crop_first_share = crop_first_share
        self.height, self.max_width = height, max_width
        self.augment, self.seed, self.return_clean = augment, seed, return_clean
        self.degrade_config = degrade_config
        self.epoch = 0
        manifest = read_manifest(self.split_dir / "manifest.jsonl")
        self.records, self._token_ids, self.skipped = _learnable_records(manifest, max_tokens)
        self._prints_time = np.array([_opens_with_time(ids) for ids in self._token_ids], dtype=bool)
        if return_clean and return_notes:
            raise ValueError("return_notes moves the notes with the degraded image; the MAE's clean twin has none")
        # drawn notes as compact arrays (the manifest's JSON lists would cost ~1 kB per note in memory)
        drawn = [record.pop("notes", None) for record in self.records]
        self._notes = [_note_arrays(notes) for notes in drawn] if return_notes else None
        self.widths = np.array([self._fitted_width(record) for record in self.records], dtype=np.int64)
        self.bounds = load_measure_bounds(self.split_dir, self.records) if crop_measures > 0 else None
        if self.bounds is not None and crop_measures >= 1.0:
            # every item a crop: a system whose barlines do not match its LMX cannot be one
            keep = [i for i, entry in enumerate(self.bounds) if entry is not None]
            if len(keep) < len(self.records):
                self.skipped["uncroppable"] = len(self.records) - len(keep)
            self.records = [self.records[i] for i in keep]
            self._token_ids = [self._token_ids[i] for i in keep]
            self._prints_time = self._prints_time[keep]
            if self._notes is not None:
                self._notes = [self._notes[i] for i in keep]
            self.bounds = [self.bounds[i] for i in keep]
            self.widths = self.widths[keep]

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def has_notes(self, index: int) -> bool:
        """Whether the item's engraver recorded where its notes are drawn (needs `return_notes`)."""
        if self._notes is None:
            raise ValueError("note positions are loaded only with return_notes=True")
        return self._notes[index] is not None

    def image_path(self, record: dict) -> Path:
        return self.split_dir / record["image"]

    def crop_plan(self, index: int, epoch: int) -> tuple[int, int] | None:
        """(first measure, count) of the item's crop in this epoch, or None when it stays whole."""
        if not self.bounds:
            return None
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        if rng.random() >= self.crop_measures or self.bounds[index] is None:
            return None
        first_share = self.crop_first_share
        if first_share > 0 and self._prints_time[index]:
            first_share = 1.0
        return choose_run(len(self.bounds[index]["bounds"]), rng, self.max_crop_measures, first_share)

    def epoch_widths(self, epoch: int) -> np.ndarray:
        """Every item's width after `fit_height` in this epoch (crops as cut in it): what batches pad to."""
        if not self.bounds:
            return self.widths
        widths = self.widths.copy()
        for index, entry in enumerate(self.bounds):
            plan = self.crop_plan(index, epoch)
            if plan is not None:
                x0, x1 = crop_span(entry["bounds"], *plan, entry["width"])
                widths[index] = fitted_size(x1 - x0, entry["height"], self.height, self.max_width)[0]
        return widths

    def _fitted_width(self, record: dict) -> int:
        """Width after fit_height: from the manifest's image size, else from the image file's header."""
        if record.get("width") and record.get("height"):
            width, height = int(record["width"]), int(record["height"])
        else:
            with Image.open(self.image_path(record)) as image:  # reads the header only
                width, height = image.size
        return fitted_size(width, height, self.height, self.max_width)[0]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        index = range(len(self.records))[index]  # negative indices and bounds, as a list has them
        record = self.records[index]
        gray = load_gray(self.image_path(record))
        token_ids = self._token_ids[index]
        notes = self._notes[index] if self._notes is not None else None
        points = notes[0].astype(np.float64) if notes is not None else None
        plan = self.crop_plan(index, epoch)
        if plan is not None:
            first, count = plan
            x0, x1 = crop_span(self.bounds[index]["bounds"], first, count, gray.shape[1])
            gray = gray[:, x0:x1]
            token_ids = label_ids(measure_slice(token_ids[1:-1].tolist(), first, count, marker=MEASURE_ID))
            if points is not None:
                points = points - [x0, 0]
        clean = None
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, index])
            if self.return_clean:
                gray, clean = degrade_pair(gray, rng, self.degrade_config)
            elif points is not None:  # the same pixels as degrade's, and the notes moved with them
                gray, points = degrade_with_points(gray, points, rng, self.degrade_config)
            else:  # the same degraded pixels as degrade_pair's, without the cost of the clean twin
                gray = degrade(gray, rng, self.degrade_config)
        item = {
            "id": str(record["id"]),
            "image": self._shape(gray),
            "tokens": torch.from_numpy(token_ids).long(),
            "crop": plan,  # (first measure, count) of the system's measures this item holds; None = whole
        }
        if self.return_clean:
            item["clean"] = item["image"] if clean is None else self._shape(clean)
        if self._notes is not None:
            item["notes"] = None if notes is None else _fit_points(points, notes[1], gray.shape, self.height,
                                                                   self.max_width)
        return item

    def _shape(self, gray: np.ndarray) -> torch.Tensor:
        return system_input(gray, self.height, self.max_width)


def _note_arrays(notes: list | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A manifest's [[x, y, label], ...] -> ([N, 2] float32 x/y, [N] int16 label indices); None stays None."""
    if notes is None:
        return None
    known = [note for note in notes if note[2] in NOTE_LABEL_INDEX]
    points = np.array([note[:2] for note in known], dtype=np.float32).reshape(-1, 2)
    return points, np.array([NOTE_LABEL_INDEX[note[2]] for note in known], dtype=np.int16)


def _fit_points(points: np.ndarray, labels: np.ndarray, shape: tuple[int, int], height: int,
                max_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of an image of `shape` moved as `fit_height` moves its pixels; those outside it dropped."""
    new_width, new_height = fitted_size(shape[1], shape[0], height, max_width)
    moved = points * [new_width / shape[1], new_height / shape[0]] + [0, (height - new_height) // 2]
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < new_width) & (moved[:, 1] >= 0) & (moved[:, 1] < height)
    return (torch.from_numpy(moved[inside].astype(np.float32)),
            torch.from_numpy(labels[inside].astype(np.int64)))


def _opens_with_time(token_ids: np.ndarray) -> bool:
    """Whether a system's first measure prints a time signature (its LMX has a `time` token there)."""
    return TIME_ID in measure_slice(token_ids[1:-1].tolist(), 0, 1, marker=MEASURE_ID)


def label_ids(ids: list[int]) -> np.ndarray:
    """LMX token ids framed by <bos>/<eos>; int16 holds any vocabulary id and keeps millions of label
    sequences small in memory."""
    return np.array([VOCAB.bos_id, *ids, VOCAB.eos_id], dtype=np.int16)


def _learnable_records(records: list[dict], max_tokens: int | None) -> tuple[list[dict], list[np.ndarray], dict]:
    """The records to keep, their token ids with <bos>/<eos>, and the count of records dropped per reason."""
    kept, token_ids, skipped = [], [], Counter()
    for record in records:
        try:
            ids = VOCAB.encode(record["lmx"])  # a whitespace-separated string or a list of tokens
        except ValueError:
            skipped["unknown_token"] += 1
            continue
        if max_tokens is not None and len(ids) + 2 > max_tokens:
            skipped["too_long"] += 1
            continue
        kept.append(record)
        token_ids.append(label_ids(ids))
    return kept, token_ids, dict(skipped)


# ---------------------------------------------------------------- batching


def collate_systems(items: list[dict], patch_width: int = ModelConfig.patch_width) -> dict:
    """Stack items into a batch: images (and clean targets) padded with white to a common width that
    is a multiple of `patch_width`, token sequences padded with <pad>; true widths/lengths kept."""
    heights = {item["image"].shape[1] for item in items}
    if len(heights) > 1:
        raise ValueError(f"a batch needs images of the same height, got heights {sorted(heights)}")
    widths = torch.tensor([item["image"].shape[2] for item in items], dtype=torch.long)
    padded_width = -(-int(widths.max()) // patch_width) * patch_width
    lengths = torch.tensor([len(item["tokens"]) for item in items], dtype=torch.long)
    tokens = torch.full((len(items), int(lengths.max())), VOCAB.pad_id, dtype=torch.long)
    for row, item in enumerate(items):
        tokens[row, : lengths[row]] = item["tokens"]
    batch = {
        "images": _pad_images([item["image"] for item in items], padded_width),
        "widths": widths,
        "tokens": tokens,
        "token_lengths": lengths,
        "ids": [item["id"] for item in items],
        "crops": [item.get("crop") for item in items],
    }
    if "clean" in items[0]:
        batch["clean"] = _pad_images([item["clean"] for item in items], padded_width)
    if "notes" in items[0]:
        # every drawn note of the batch as one [M, 4] tensor: (row in the batch, x, y, label index)
        rows = []
        for row, item in enumerate(items):
            if item["notes"] is not None:
                points, labels = item["notes"]
                rows.append(torch.cat([torch.full((len(labels), 1), float(row)), points, labels[:, None].float()], dim=1))
        batch["note_points"] = torch.cat(rows) if rows else torch.zeros(0, 4)
        batch["has_notes"] = torch.tensor([item["notes"] is not None for item in items])
    return batch


def split_systems_batch(batch: dict, max_pixels: int) -> list[tuple[dict, float]]:
    """A `collate_systems` batch cut into row slices of at most `max_pixels` padded image pixels each,
    with each slice's share of the rows (what its mean loss weighs in the batch's).

    The slices' gradients, summed, are the batch's (exactly where its rows hold equal numbers of
    tokens; otherwise each slice's token mean weighs by its rows); the memory is a slice's. A batch
    of wide systems at 192 px (32 x 12 x 128 patches) holds 2.25 times the encoder attention of the
    widest at 128 px and outgrows 24 GiB on a CPU.
    """
    rows = int(batch["images"].shape[0])
    per_row = int(batch["images"][0].numel())
    if max_pixels <= 0 or rows * per_row <= max_pixels:
        return [(batch, 1.0)]
    parts = -(-rows * per_row // max_pixels)
    size = -(-rows // parts)
    out = []
    for start in range(0, rows, size):
        stop = min(rows, start + size)
        part = {}
        for key, value in batch.items():
            if key == "note_points":  # rows of (batch row, x, y, label): keep this slice's, renumbered
                mine = (value[:, 0] >= start) & (value[:, 0] < stop)
                value = value[mine].clone()
                value[:, 0] -= start
            elif torch.is_tensor(value) or isinstance(value, list):
                value = value[start:stop]
            part[key] = value
        longest = int(part["token_lengths"].max())
        part["tokens"] = part["tokens"][:, :longest]  # this slice's own padding only
        out.append((part, (stop - start) / rows))
    return out


def _pad_images(images: list[torch.Tensor], width: int) -> torch.Tensor:
    """[B, 1, H, width], each image at the left and white (1.0) to its right."""
    channels, height, _ = images[0].shape
    out = torch.ones(len(images), channels, height, width, dtype=images[0].dtype)
    for row, image in enumerate(images):
        out[row, :, :, : image.shape[2]] = image
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one compute thread per worker (workers already run in parallel)
    and seeded global RNGs for any library code that uses them. Augmentation does not use them:
    it depends on (seed, epoch, index) alone, whatever the worker count."""
    torch.set_num_threads(1)
    if os.getpid() == _IMPORTED_IN_PID:
        # A spawned worker imported this module afresh, and its OpenCV would use every core. A forked
        # worker already runs OpenCV on one thread, and there cv2.setNumThreads deadlocks: it waits
        # for the parent's pool threads, which the fork did not copy.
        cv2.setNumThreads(1)
    seed = torch.initial_seed() % 2**32  # DataLoader's distinct seed for this worker
    random.seed(seed)
    np.random.seed(seed)
