"""The scale-out path: DistributedDataParallel with 2 CPU processes over gloo.

Both ranks run the real `train_supervised` (tiny model, tiny on-disk dataset,
teacher forcing then scheduled sampling) the way `torchrun` would start them;
afterwards their parameters must be bit-identical, must have moved, and the
ranks must have trained on different batches (the sampler shards by rank).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from test_train import make_tiny_dataset, tiny_model_config, tiny_supervised_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, data: str, out: str) -> None:
    # what torchrun sets for each process
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from acai_omr.data.sampler import WidthBucketSampler
    from acai_omr.train.supervised import train_supervised

    seen: list[list[str]] = []
    original_iter = WidthBucketSampler.__iter__

    def recording_iter(self):  # note which systems this rank trained on
        for batch in original_iter(self):
            seen.append([int(index) for index, _ in batch])
            yield batch

    WidthBucketSampler.__iter__ = recording_iter
    cfg = tiny_supervised_config(Path(data), Path(out), steps=4, batch_size=2, ss_start=0.5, threads=1)
    trainer = train_supervised(cfg, tiny_model_config())
    torch.save({"params": trainer.objective.state_dict(), "batches": seen, "step": trainer.state.step},
               Path(out) / f"rank{rank}.pt")
    # Leave without the interpreter's teardown: a native thread torch or gloo still holds at exit can
    # abort the process ("terminate called without an active exception", seen once in a fresh-clone
    # run after the rank had finished and saved), which mp.spawn reports as a failed rank.
    os._exit(0)


def test_ddp_on_cpu_keeps_ranks_identical_and_shards_the_data(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", train=16, dev=2)
    out = tmp_path / "run"
    mp.spawn(_rank_main, args=(2, _free_port(), str(data), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    a, b = ranks[0]["params"], ranks[1]["params"]
    assert all(torch.equal(a[k], b[k]) for k in a), "DDP ranks diverged"

    torch.manual_seed(0)  # the initial weights both ranks started from
    from acai_omr.model import OMRModel

    initial = OMRModel(tiny_model_config()).state_dict()
    assert any(not torch.equal(initial[k], a["model." + k]) for k in initial), "training did not move the weights"

    seen0 = {i for batch in ranks[0]["batches"] for i in batch}
    seen1 = {i for batch in ranks[1]["batches"] for i in batch}
    assert seen0 and seen1 and not seen0 & seen1, "ranks must train on disjoint shards"
    assert (out / "last.pt").exists() and (out / "log.jsonl").exists()  # written once, by rank 0
