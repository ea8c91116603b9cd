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

from acai_omr.data.dataset import collate_systems
from acai_omr.model.model import key_padding_mask
from acai_omr.train.supervised import memory_spread
from dev_model import add_model_args, load_for_bench


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
    add_model_args(parser, systems=8, threads=1)
    args = parser.parse_args()

    model, cfg, dataset = load_for_bench(args)
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
