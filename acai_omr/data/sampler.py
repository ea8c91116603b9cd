"""Width-bucketed, rank-sharded, resumable batch sampler.

Systems vary a lot in width and a batch is padded to its widest image, so
batches are built from systems of similar width. With shuffling, an epoch is:
a random permutation, cut into chunks of `chunk_batches` batches; each chunk
sorted by width and cut into batches; the batch order shuffled. The chunks keep
batches random from epoch to epoch while their widths stay close.

The order depends only on (seed, epoch), so every DDP rank computes the same
epoch and takes its own disjoint share, and a resumed run replays it exactly.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class WidthBucketSampler(Sampler):
    """A batch sampler (for `DataLoader(batch_sampler=...)`) over items of the given widths.

    Every rank gets the same number of batches (DDP steps must match) and the
    ranks' shares are disjoint. With `drop_last`, only full batches are made
    and the leftover items (different ones each epoch when shuffling) sit the
    epoch out. Without it every item is used exactly once: the batches are made
    as even as needed for their count to divide among the ranks, and indices
    repeat only when there are fewer items than batches.

    Batches are lists of indices, or of `(index, epoch)` pairs when
    `yield_epoch` (SystemDataset then augments with that epoch even inside
    worker processes, which never see `set_epoch`). `widths` is an array, or
    a function of the epoch giving one (items whose width changes per epoch,
    such as measure crops: `SystemDataset.epoch_widths`).
    """

    def __init__(
        self,
        widths: Sequence[int] | np.ndarray | Callable[[int], np.ndarray],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        chunk_batches: int = 50,
        yield_epoch: bool = True,
    ):
        self.widths_of_epoch = widths if callable(widths) else None
        self.widths = np.asarray(widths(0) if callable(widths) else widths)
        if self.widths.ndim != 1 or len(self.widths) == 0:
            raise ValueError(f"widths must be a non-empty 1-D sequence, got shape {self.widths.shape}")
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(f"batch_size and chunk_batches must be >= 1, got {batch_size} and {chunk_batches}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.chunk_batches, self.yield_epoch = chunk_batches, yield_epoch
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use `epoch`'s order; skip this rank's first `start_batch` batches (to resume mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch
        if self.widths_of_epoch is not None:
            self.widths = np.asarray(self.widths_of_epoch(epoch))

    def _total_batches(self) -> int:
        """Batches of the whole epoch, over all ranks: a multiple of world_size."""
        if self.drop_last:
            full = len(self.widths) // self.batch_size
            return full - full % self.world_size
        needed = -(-len(self.widths) // self.batch_size)
        return -(-needed // self.world_size) * self.world_size

    def _batch_sizes(self, total_batches: int) -> np.ndarray:
        """Sizes of the epoch's batches, at most batch_size each, as equal as possible."""
        if self.drop_last:
            return np.full(total_batches, self.batch_size)
        count = max(len(self.widths), total_batches)  # every batch gets at least one index
        sizes = np.full(total_batches, count // total_batches)
        sizes[: count % total_batches] += 1
        return sizes

    def _epoch_batches(self) -> list[np.ndarray]:
        """All ranks' batches of the current epoch, in order, before sharding."""
        total = self._total_batches()
        if total == 0:
            return []
        sizes = self._batch_sizes(total)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.widths)) if self.shuffle else np.arange(len(self.widths))
        order = np.resize(order, bounds[-1])  # drops leftovers (drop_last) or repeats indices (padding)
        chunk_size = self.chunk_batches if self.shuffle else total  # without shuffle: one chunk, width order
        for first in range(0, total, chunk_size):
            chunk = slice(bounds[first], bounds[min(first + chunk_size, total)])
            order[chunk] = order[chunk][np.argsort(self.widths[order[chunk]], kind="stable")]
        batches = np.split(order, bounds[1:-1])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(total)]
        return batches

    def __iter__(self) -> Iterator[list]:
        own = self._epoch_batches()[self.rank :: self.world_size]
        for batch in own[self.start_batch :]:
            if self.yield_epoch:
                yield [(int(index), self.epoch) for index in batch]
            else:
                yield [int(index) for index in batch]

    def __len__(self) -> int:
        return max(0, self._total_batches() // self.world_size - self.start_batch)
