"""Can the encoder learn to see at all? The encoder alone with a symbol-presence head, on degraded
measure crops; compare the loss with the crops' base rate (0.192 BCE on 481 training crops).

Measured 2026-12-02 (150 steps, LR 1e-3, 16 crops per step): conv stem 0.1947, conv stem with its
per-position LayerNorm at eps 1 ("eps") 0.1975, linear stem 0.1947 -- all at the base rate.

    poetry run python bench/symbol_probe.py --variant conv --steps 150
    poetry run python bench/symbol_probe.py --base-rate   # the BCE of always predicting each token's frequency
    # a few symbols only, each against its own base rate (clean one-measure crops):
    poetry run python bench/symbol_probe.py --clean --max-measures 1 --steps 250 --tokens clef:G2,rest,16th,sharp
"""

from __future__ import annotations

import argparse
import time

import torch

from acai_omr.config import DegradeConfig, ModelConfig
from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import OMRModel
from acai_omr.train.supervised import SymbolPresenceHead, symbol_presence


def base_rate(dataset: SystemDataset, every: int = 100) -> float:
    """Mean over the vocabulary of the entropy of each token's presence in every `every`-th item (undegraded)."""
    present = torch.stack([symbol_presence(dataset[i]["tokens"][None], len(VOCAB))[0]
                           for i in range(0, len(dataset), every)])
    p = present.mean(dim=0).clamp(1e-6, 1 - 1e-6)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("conv", "eps", "linear"), default="conv")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--data", default="data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base-rate", action="store_true", help="print the crops' base-rate BCE and stop")
    parser.add_argument("--tokens", default="", help="comma-separated LMX tokens: learn only these, and report "
                        "each one's BCE over the last 50 steps against its base rate in the batches seen")
    parser.add_argument("--clean", action="store_true", help="undegraded crops")
    parser.add_argument("--max-measures", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.base_rate:
        crops = SystemDataset(args.data, "train", 128, False, 0, 512, max_width=2048, crop_measures=1.0)
        print(f"base-rate BCE {base_rate(crops):.4f}")
        return

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.small()
    if args.variant == "linear":
        cfg.stem = "linear"
    encoder = OMRModel(cfg).encoder
    if args.variant == "eps":  # LayerNorm that does not blow faint noise up to unit size
        for norm in encoder.patch_embed.norms:
            norm.eps = 1.0
    head = SymbolPresenceHead(cfg.enc_dim, cfg.vocab_size)
    dataset = SystemDataset(args.data, "train", cfg.image_height, not args.clean, 5, 512,
                            max_width=cfg.max_image_width, degrade_config=DegradeConfig(), crop_measures=1.0,
                            max_crop_measures=args.max_measures)
    chosen = torch.tensor([VOCAB.encode([t])[0] for t in args.tokens.split(",")]) if args.tokens else None
    seen_present, per_token = [], []
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        batch = collate_systems([dataset[i] for i in torch.randint(len(dataset), (16,), generator=generator).tolist()],
                                cfg.patch_width)
        memory, valid = encoder(batch["images"], batch["widths"])
        if chosen is None:
            loss = head(memory, valid, batch["tokens"])
        else:  # only the chosen tokens: per-patch logits, max over the image, BCE per token
            logits = head.proj(memory)[..., chosen].masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
            present = symbol_presence(batch["tokens"], len(VOCAB))[:, chosen]
            token_bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, present, reduction="none")
            loss = token_bce.mean()
            seen_present.append(present)
            per_token.append(token_bce.detach().mean(dim=0))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0:
            print(f"{args.variant} step {step} bce(last 25) {sum(losses[-25:]) / 25:.4f} {time.time() - start:.0f}s",
                  flush=True)
    if chosen is not None:
        p = torch.cat(seen_present).mean(dim=0).clamp(1e-6, 1 - 1e-6)
        base = -(p * p.log() + (1 - p) * (1 - p).log())
        last = torch.stack(per_token[-50:]).mean(dim=0)
        for name, frequency, b, l in zip(args.tokens.split(","), p.tolist(), base.tolist(), last.tolist()):
            print(f"{name:>12}  present {frequency:.2f}  base-rate BCE {b:.3f}  last-50 BCE {l:.3f}")


if __name__ == "__main__":
    main()
