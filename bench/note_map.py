"""Does the encoder's output say where which note is? Scores a note-map read-out
(`acai_omr.train.supervised.NoteMapHead`) on dev crops whose noteheads and rests the renderer
recorded: the one a `--aux-notes` run trained (its checkpoint), or a fresh one fitted here on the
frozen encoder of any weights (`--probe-steps N`, training crops), which measures what the memory
already holds without the loss.

    poetry run python bench/note_map.py --weights runs/notes-1/last.pt --crop-measures 1
    poetry run python bench/note_map.py --weights weights --probe-steps 150 --crop-measures 1

Reports, clean and degraded: recall (notes whose patch scores their label above 0.5),
precision (patch-label pairs scored above 0.5 that hold such a note), and pitch accuracy on
patches holding exactly one pitched note (the best-scoring pitch label is that note's).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from acai_omr.config import DegradeConfig
from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.lmx.reading_order import NOTE_LABELS
from acai_omr.model.weights import load_model
from acai_omr.train.export import model_from_checkpoint
from acai_omr.train.common import load_checkpoint
from acai_omr.train.supervised import NoteMapHead

REST = NOTE_LABELS.index("rest")


def split(args, cfg, name: str, degraded: bool, seed: int) -> SystemDataset:
    return SystemDataset(args.data, name, cfg.image_height, augment=degraded, seed=seed, max_tokens=512,
                         max_width=cfg.max_image_width, crop_measures=args.crop_measures, return_notes=True,
                         degrade_config=DegradeConfig(strength=args.degrade_strength, p_clean=0.0))


def batches(dataset: SystemDataset, count: int, batch_size: int, seed: int):
    with_notes = [i for i in range(len(dataset)) if dataset.has_notes(i)]
    chosen = random.Random(seed).sample(with_notes, min(count, len(with_notes)))
    for start in range(0, len(chosen), batch_size):
        yield collate_systems([dataset[i] for i in chosen[start:start + batch_size]])


def score(encoder, head: NoteMapHead, loader) -> dict:
    found = notes = predicted = single = single_right = 0
    with torch.no_grad():
        for batch in loader:
            memory, valid = encoder(batch["images"], batch["widths"])
            probs = head.proj(memory.float()).sigmoid()
            target = head.targets(batch["note_points"], probs.shape)
            mask = (valid & batch["has_notes"][:, None])[..., None]
            positive = (probs > 0.5) & mask
            notes += int((target * mask).sum())
            found += int((positive & (target > 0)).sum())  # true positives: recall's and precision's numerator
            predicted += int(positive.sum())
            pitched = target[..., :REST]
            one = (pitched.sum(-1) == 1) & mask[..., 0]
            single += int(one.sum())
            single_right += int(((probs[..., :REST].argmax(-1) == pitched.argmax(-1)) & one).sum())
    return {"recall": round(found / max(notes, 1), 4), "precision": round(found / max(predicted, 1), 4),
            "pitch_accuracy_single": round(single_right / max(single, 1), 4), "note_labels": notes,
            "single_note_patches": single}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="weights", help="weights folder, or a run's last.pt")
    parser.add_argument("--data", default="data")
    parser.add_argument("--systems", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop-measures", type=float, default=1.0)
    parser.add_argument("--degrade-strength", type=float, default=0.6)
    parser.add_argument("--probe-steps", type=int, default=0, help="fit a fresh read-out on the frozen encoder first")
    parser.add_argument("--probe-batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from_checkpoint = args.weights.endswith(".pt")
    model, cfg = (model_from_checkpoint if from_checkpoint else load_model)(args.weights)
    model = model.float().eval()
    head = NoteMapHead(cfg.enc_dim, cfg.image_height // cfg.patch_height, cfg.patch_height, cfg.patch_width)
    report = {"weights": args.weights}
    if args.probe_steps:
        train = split(args, cfg, "train", degraded=True, seed=1)
        optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr)
        started, losses = time.perf_counter(), []
        for step, batch in enumerate(batches(train, args.probe_steps * args.probe_batch, args.probe_batch, seed=2)):
            with torch.no_grad():
                memory, valid = model.encoder(batch["images"], batch["widths"])
            loss = head(memory, valid, batch["note_points"], batch["has_notes"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        report["probe"] = {"steps": len(losses), "loss_first10": round(sum(losses[:10]) / max(1, len(losses[:10])), 4),
                           "loss_last10": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
                           "seconds": round(time.perf_counter() - started, 1)}
    elif from_checkpoint:
        state = load_checkpoint(args.weights)["objective"]
        prefix = "note_head."
        head_state = {k.removeprefix("module.")[len(prefix):]: v for k, v in state.items()
                      if k.removeprefix("module.").startswith(prefix)}
        if not head_state:
            raise SystemExit(f"{args.weights} has no note-map head (not an --aux-notes run): use --probe-steps")
        head.load_state_dict(head_state)
    else:
        raise SystemExit("weights folders hold no note-map head: pass a run's last.pt or --probe-steps N")
    head.eval()
    for name, degraded in (("clean", False), ("degraded", True)):
        dev = split(args, cfg, "dev", degraded, seed=3)
        report[name] = score(model.encoder, head, batches(dev, args.systems, 16, seed=4))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
