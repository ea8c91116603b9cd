"""Speed of the OMR model: parameters, training samples/s, greedy-decoding seconds per system.

A "typical system" is a 4-measure two-staff system: aspect ratio 5 (width =
5 x image_height, the lieder-dev median is 4.9) and ~300 LMX tokens.
Training = forward + backward + AdamW step on a batch of such systems.
Inference = greedy decoding of one system for exactly --tokens steps (eos
suppressed so every run does the same work), with the KV cache.

    poetry run python bench/bench_model.py --preset small --threads 2
    poetry run python bench/bench_model.py --preset small --set image_height=160 --set patch_width=8
    poetry run python bench/bench_model.py --preset large --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from acai_omr.config import ModelConfig
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.model import OMRModel


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def make_batch(cfg: ModelConfig, batch: int, aspect: float, tokens: int, device):
    pw = cfg.patch_width
    width = min(cfg.max_image_width, int(round(cfg.image_height * aspect / pw)) * pw)
    images = torch.rand(batch, 1, cfg.image_height, width, device=device)
    widths = torch.full((batch,), width, dtype=torch.long, device=device)
    seq = torch.randint(3, cfg.vocab_size, (batch, tokens + 1), device=device)
    seq[:, 0] = VOCAB.bos_id
    return images, widths, seq


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(model, cfg, device, batch, aspect, tokens, steps, amp):
    images, widths, seq = make_batch(cfg, batch, aspect, tokens, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images, widths, seq[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - start), batch * steps / (time.process_time() - cpu_start)


@torch.no_grad()
def bench_decode(model, cfg, device, aspect, tokens, repeats, amp):
    images, widths, _ = make_batch(cfg, 1, aspect, tokens, device)
    model.eval()

    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            memory, valid = model.encode(images, widths)
            cache = model.decoder.new_cache(memory, valid, tokens + 1)
            last = torch.full((1, 1), VOCAB.bos_id, dtype=torch.long, device=device)
            for _ in range(tokens):
                logits = model.decoder(last, None, None, cache=cache)[:, -1]
                logits[:, VOCAB.eos_id] = float("-inf")
                last = logits.argmax(-1, keepdim=True)

    run()
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run()
    sync(device)
    return (time.perf_counter() - start) / repeats, (time.process_time() - cpu_start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["small", "large"], default="small")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ModelConfig field (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--decode-threads", type=int, default=1, help="torch threads for decoding")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--aspect", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--decode-repeats", type=int, default=2)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = ModelConfig.small() if args.preset == "small" else ModelConfig.large()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    model = OMRModel(cfg).to(device)
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    width = min(cfg.max_image_width, int(round(cfg.image_height * args.aspect / cfg.patch_width)) * cfg.patch_width)
    patches = (cfg.image_height // cfg.patch_height) * (width // cfg.patch_width)
    print(f"config: {args.preset} {overrides or ''} device={device} threads={args.threads}")
    print(f"image {cfg.image_height}x{width}, patch {cfg.patch_height}x{cfg.patch_width} -> {patches} patches; "
          f"{args.tokens} tokens")
    print(f"params: {model.num_parameters() / 1e6:.2f} M (encoder {enc / 1e6:.2f} M, decoder {dec / 1e6:.2f} M)")
    if args.train_steps > 0:
        wall, cpu = bench_train(model, cfg, device, args.batch, args.aspect, args.tokens, args.train_steps, args.amp)
        print(f"train: {wall:.2f} samples/s wall ({cpu:.2f} per CPU-second of all threads; "
              f"batch {args.batch}, fwd+bwd+AdamW, {args.threads} threads)")
    torch.set_num_threads(args.decode_threads)
    wall, cpu = bench_decode(model, cfg, device, args.aspect, args.tokens, args.decode_repeats, args.amp)
    print(f"inference: {wall:.3f} s/system wall ({cpu:.3f} CPU-s; greedy, {args.tokens} tokens, KV cache, "
          f"{args.decode_threads} threads)")
    if device.type == "cpu":
        import os
        print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(wall figures are slowed by other processes; CPU-s approximate an idle machine)")


if __name__ == "__main__":
    main()
