"""The decoder's KV-cached step exported to ONNX and run by ONNX Runtime (an acceleration under trial).

The encoder stays in torch (it runs once per batch); the step loop, which is where
decoding spends its time, runs in ONNX Runtime. One step takes the new token, its
position, the cross-attention keys/values and mask (computed once per batch) and each
layer's past self-attention keys/values, and returns the logits and the grown
keys/values. Token choice reuses the product's greedy loop (`decode_steps`) and
grammar mask, so any difference in output comes from the arithmetic alone.

Needs `onnx` and `onnxruntime` (`poetry install --with accel`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from acai_omr.inference.batch import padded_batches
from acai_omr.inference.decode import collect_results, decode_steps, grammar_for, mask_logits, resolve_max_len


class DecoderStep(nn.Module):
    """One decoding step with explicit past keys/values (concatenated, not preallocated), for export."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, token, position, cross_mask, *kv):
        d = self.decoder
        layers = len(d.blocks)
        past, cross = kv[: 2 * layers], kv[2 * layers:]
        x = d.token_embedding(token)[:, None] + d.pos_embedding(position)[None]
        mask = cross_mask[:, None, None, :]
        grown = []
        for i, block in enumerate(d.blocks):
            h = block.ln1(x)
            k_new, v_new = block.self_attn.keys_values(h)
            k = torch.cat([past[2 * i], k_new], dim=2)
            v = torch.cat([past[2 * i + 1], v_new], dim=2)
            grown += [k, v]
            x = x + block.self_attn.attend(h, k, v)
            x = x + block.cross_attn.attend(block.ln2(x), cross[2 * i], cross[2 * i + 1], mask=mask)
            x = x + block.mlp(block.ln3(x))
        logits = F.linear(d.norm(x), d.token_embedding.weight)[:, 0]
        return (logits, *grown)


def _names(layers: int):
    past = [f"past_{kind}{i}" for i in range(layers) for kind in "kv"]
    cross = [f"cross_{kind}{i}" for i in range(layers) for kind in "kv"]
    grown = [f"grown_{kind}{i}" for i in range(layers) for kind in "kv"]
    return past, cross, grown


def export_step(model, path: str | Path) -> Path:
    """Write the decoder step of `model` to an ONNX file (batch, past length and memory length dynamic)."""
    cfg = model.cfg
    layers, heads, head_dim = cfg.dec_depth, cfg.dec_heads, cfg.dec_dim // cfg.dec_heads
    past_names, cross_names, grown_names = _names(layers)
    B, T, N = 2, 3, 20
    args = (torch.zeros(B, dtype=torch.long), torch.tensor([T]), torch.ones(B, N, dtype=torch.bool),
            *[torch.zeros(B, heads, T, head_dim) for _ in past_names],
            *[torch.randn(B, heads, N, head_dim) for _ in cross_names])
    dynamic = {"token": {0: "batch"}, "cross_mask": {0: "batch", 1: "memory"}, "logits": {0: "batch"}}
    dynamic.update({name: {0: "batch", 2: "past"} for name in past_names})
    dynamic.update({name: {0: "batch", 2: "memory"} for name in cross_names})
    dynamic.update({name: {0: "batch", 2: "grown"} for name in grown_names})
    step = DecoderStep(model.decoder).eval()
    with torch.no_grad():
        torch.onnx.export(step, args, str(path), input_names=["token", "position", "cross_mask", *past_names,
                                                              *cross_names],
                          output_names=["logits", *grown_names], dynamic_axes=dynamic, opset_version=17,
                          dynamo=False)
    return Path(path)


def session(path: str | Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def greedy_ort(sess, model, images, widths, max_len: int, constrained: bool = True):
    """Greedy decoding of one batch with the encoder in torch and every step in ONNX Runtime."""
    cfg = model.cfg
    layers, heads, head_dim = cfg.dec_depth, cfg.dec_heads, cfg.dec_dim // cfg.dec_heads
    past_names, cross_names, _ = _names(layers)
    grammar = grammar_for(constrained)
    B = images.shape[0]
    with torch.inference_mode():
        memory, valid = model.encode(images, widths)
        memory = model.decoder.memory_proj(memory)
        cross = [t.contiguous().numpy() for block in model.decoder.blocks
                 for t in block.cross_attn.keys_values(memory)]
    feeds = {"cross_mask": valid.numpy(), **dict(zip(cross_names, cross))}
    feeds.update({name: np.zeros((B, heads, 0, head_dim), np.float32) for name in past_names})
    position = [0]

    def pick(last, finished, states, remaining):
        feeds["token"] = last.numpy()
        feeds["position"] = np.array([position[0]], dtype=np.int64)
        logits, *grown = sess.run(None, feeds)
        feeds.update(zip(past_names, grown))
        position[0] += 1
        logp = F.log_softmax(mask_logits(torch.from_numpy(logits), finished, states, grammar, remaining), dim=-1)
        token_logp, token = logp.max(dim=-1)
        return token, token_logp

    ids, logps, _ = decode_steps(B, torch.device("cpu"), resolve_max_len(model, max_len), grammar, pick)
    return collect_results(ids, logps)


def decode_prepared_ort(sess, model, prepared, batch_size: int, max_len: int):
    """`batch.decode_prepared`, greedy and grammar-constrained, with the step in ONNX Runtime."""
    results = [None] * len(prepared)
    for indices, images, widths in padded_batches(prepared, batch_size, model.cfg.patch_width):
        for i, result in zip(indices, greedy_ort(sess, model, images, widths, max_len)):
            results[i] = result
    return results
