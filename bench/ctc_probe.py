"""Can the encoder learn where the notes are? The encoder alone with the reading-order CTC head
(`acai_omr.train.supervised.ReadingOrderCTCHead`) on degraded training crops; reports the CTC loss
and, on dev crops, the label error rate of greedy CTC read-outs (edit distance to the notes in
reading order over their count; 100% = reads nothing).

    poetry run python bench/ctc_probe.py --init weights --steps 150
    poetry run python bench/ctc_probe.py --init fresh --steps 150
"""

from __future__ import annotations

import argparse
import time

import torch

from acai_omr.config import DegradeConfig, ModelConfig
from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import OMRModel
from acai_omr.train.supervised import ReadingOrderCTCHead, reading_order_targets


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def greedy_ctc(log_probs: torch.Tensor, length: int) -> list[int]:
    """[T, V] -> labels: best class per position, repeats merged, blanks dropped."""
    best = log_probs[:length].argmax(dim=-1).tolist()
    out, last = [], None
    for label in best:
        if label != last and label != VOCAB.pad_id:
            out.append(label)
        last = label
    return out


def label_error_rate(encoder, head, batches) -> float:
    errors = total = 0
    with torch.no_grad():
        for batch in batches:
            memory, valid = encoder(batch["images"], batch["widths"])
            B, N, D = memory.shape
            cols = N // head.rows
            columns = memory.view(B, head.rows, cols, D).transpose(1, 2).reshape(B, cols * head.rows, D)
            log_probs = head.proj(columns).log_softmax(-1)
            lengths = valid.view(B, head.rows, cols)[:, 0].sum(dim=1) * head.rows
            for row, target in enumerate(reading_order_targets(batch["tokens"])):
                errors += edit_distance(greedy_ctc(log_probs[row], int(lengths[row])), target)
                total += len(target)
    return 100.0 * errors / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", default="weights", help="a weights folder, or 'fresh'")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", default="data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.init == "fresh":
        cfg = ModelConfig.small()
        encoder = OMRModel(cfg).encoder
    else:
        from acai_omr.model.weights import load_model

        model, cfg = load_model(args.init)
        encoder = model.encoder.float().train()
    head = ReadingOrderCTCHead(cfg.enc_dim, cfg.vocab_size, cfg.image_height // cfg.patch_height)
    train = SystemDataset(args.data, "train", cfg.image_height, True, 5, 512, max_width=cfg.max_image_width,
                          degrade_config=DegradeConfig(), crop_measures=1.0, max_crop_measures=2)
    dev = SystemDataset(args.data, "dev", cfg.image_height, False, 0, 512, max_width=cfg.max_image_width,
                        crop_measures=1.0, max_crop_measures=2)
    dev_batches = [collate_systems([dev[i] for i in range(start, len(dev), max(1, len(dev) // 48))][:8],
                                   cfg.patch_width) for start in range(6)]
    encoder.eval()
    print(f"dev label error rate before: {label_error_rate(encoder, head, dev_batches):.1f}%", flush=True)
    encoder.train()
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        picks = torch.randint(len(train), (args.batch_size,), generator=generator).tolist()
        batch = collate_systems([train[i] for i in picks], cfg.patch_width)
        memory, valid = encoder(batch["images"], batch["widths"])
        loss = head(memory, valid, reading_order_targets(batch["tokens"]))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0:
            encoder.eval()
            ler = label_error_rate(encoder, head, dev_batches)
            encoder.train()
            print(f"step {step} ctc(last 25) {sum(losses[-25:]) / 25:.3f} dev LER {ler:.1f}% "
                  f"{time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
