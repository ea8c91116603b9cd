"""Has the encoder collapsed? Spread of its output across patches, and how evenly the decoder attends.

A collapsed encoder gives every patch the same vector (spread ~0) and the decoder's cross-attention
is uniform (entropy / log N = 1): the image cannot reach the output. Measured 2026-12-02: the shipped
weights 0.0065 and 1.000 in all three layers; a fresh small model 0.24 (linear stem) / 0.50 (conv).

    poetry run python bench/encoder_collapse.py --weights weights --crop-measures 1
    poetry run python bench/encoder_collapse.py --weights runs/<run>/last.pt
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from acai_omr.data.dataset import SystemDataset, collate_systems
from acai_omr.model.model import key_padding_mask
from acai_omr.model.weights import load_model
from acai_omr.train.supervised import memory_spread
from image_use import load_checkpoint_model


def cross_attention_entropy(model, memory: torch.Tensor, valid: torch.Tensor, tokens: torch.Tensor) -> list[float]:
    """Per decoder layer: mean over heads, tokens and images of the cross-attention entropy / log N."""
    decoder = model.decoder
    memory = decoder.memory_proj(memory)
    x = decoder.token_embedding(tokens) + decoder.pos_embedding(torch.arange(tokens.shape[1]))
    mask = key_padding_mask(valid)
    log_n = valid.sum(dim=1).float().log()[:, None, None]
    ratios = []
    for block in decoder.blocks:
        h = block.ln1(x)
        x = x + block.self_attn(h, h, is_causal=True)
        attn = block.cross_attn
        q = attn.split_heads(attn.q(block.ln2(x)))
        k, _ = attn.keys_values(memory)
        weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf")).softmax(-1)
        entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)  # [B, heads, T]
        ratios.append(round(float((entropy / log_n).mean()), 3))
        x = x + attn(block.ln2(x), memory, mask=mask)
        x = x + block.mlp(block.ln3(x))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="weights")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--crop-measures", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, cfg = load_checkpoint_model(args.weights) if args.weights.endswith(".pt") else load_model(args.weights)
    model = model.float().eval()
    dataset = SystemDataset(args.data, args.split, cfg.image_height, augment=False, seed=0, max_tokens=cfg.max_tokens,
                            max_width=cfg.max_image_width, crop_measures=args.crop_measures)
    step = max(1, len(dataset) // args.systems)
    batch = collate_systems([dataset[i] for i in range(0, step * args.systems, step)], cfg.patch_width)
    with torch.no_grad():
        memory, valid = model.encoder(batch["images"], batch["widths"])
        blank, _ = model.encoder(torch.ones_like(batch["images"]), batch["widths"])
        report = {
            "memory_spread": round(float(memory_spread(memory, valid)), 4),
            "real_vs_blank_relative_difference": round(float((memory - blank).norm() / memory.norm()), 4),
            "cross_attention_entropy_over_log_n": cross_attention_entropy(model, memory, valid,
                                                                           batch["tokens"][:, :-1]),
            "weights": args.weights, "systems": args.systems, "crop_measures": args.crop_measures,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
