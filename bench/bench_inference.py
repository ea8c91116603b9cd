"""Inference speed on CPU, every variant in one run so the ratios are fair.

Systems: the first --systems images of shared/conformance/lieder-dev (real
MuseScore engravings), decoded to exactly --tokens tokens each unless the
model stops earlier (a "typical system" is 4 measures, ~300 tokens).

Variants (all greedy, grammar-constrained as the product decodes):
  naive      one system at a time, no KV cache (the decoder re-reads the whole prefix every step)
  cached     one system at a time, KV cache
  batched    all systems sorted by width, --batch at a time, KV cache (what the product runs)
  batched-1thread  the same with one torch thread (thread setting by measurement)
  int8       batched, with torch dynamic int8 quantization of every nn.Linear (opt-in: --int8)
  compile    batched, decoder step through torch.compile (skipped if it fails)
  onnx       batched, encoder in torch, every decoder step in ONNX Runtime (bench/onnx_decoder.py;
             needs `poetry install --with accel`, skipped without onnxruntime)
Accuracy: TEDn of each variant's output against the gold (decoded to --eval-len tokens
so the model's own <eos> decides), and whether its tokens equal the fp32 batched ones.
Then a page: an engraved page with its systems detected, cropped, decoded and joined, and the
peak memory of an `acai-omr transcribe` process (a worker) on one page.

    poetry run python bench/bench_inference.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from acai_omr.inference.batch import decode_prepared
from acai_omr.inference.decode import mask_logits, resolve_max_len, grammar_for
from acai_omr.lmx.vocab import VOCAB
from acai_omr.model.weights import quantize_int8


def naive_decode(model, image, width, max_len: int) -> list[int]:
    """Greedy decoding of one system without a cache: step t runs the decoder over all t tokens so far."""
    grammar = grammar_for(True)
    tokens = torch.tensor([[VOCAB.bos_id]])
    states = grammar.initial(1, tokens.device)
    finished = torch.zeros(1, dtype=torch.bool)
    pw = model.cfg.patch_width
    padded = torch.ones(1, 1, image.shape[-2], -(-image.shape[-1] // pw) * pw)
    padded[0, :, :, : image.shape[-1]] = image
    with torch.inference_mode():
        memory, valid = model.encode(padded, torch.tensor([width]))
        for step in range(max_len):
            logits = model.decoder(tokens, memory, valid)[:, -1].float()
            token = mask_logits(logits, finished, states, grammar, max_len - step).argmax(-1)
            if int(token) == VOCAB.eos_id:
                break
            states = grammar.advance(states, token)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
    return tokens[0, 1:].tolist()


def timed(fn, repeats: int = 1):
    fn()  # warm-up (allocator, lazy init, compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, min(times)


def tedn_of(samples, predictions) -> float:
    from acai_omr.inference.evaluate import score

    return score(samples, predictions)["summary"]["tedn"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights folder (default: weights/)")
    parser.add_argument("--systems", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=300, help="decoded tokens per system for the speed runs")
    parser.add_argument("--eval-len", type=int, default=768, help="length cap for the accuracy runs")
    parser.add_argument("--eval-systems", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--naive-systems", type=int, default=3, help="naive decoding is slow: time only this many")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    from acai_omr.inference.evaluate import load_lieder_dev
    from acai_omr.model.weights import load_model

    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.weights)
    model.eval()
    samples = load_lieder_dev(cfg.image_height, cfg.max_image_width, limit=max(args.systems, args.eval_systems))
    speed_samples = samples[: args.systems]
    prepared = [(s.image, s.image.shape[-1]) for s in speed_samples]
    max_len = resolve_max_len(model, args.tokens)
    report: dict = {"threads": args.threads, "systems": len(prepared), "tokens_cap": max_len, "variants": {}}
    print(f"{len(prepared)} lieder-dev systems, <= {max_len} tokens each, {args.threads} threads")

    def record(name, seconds, results, systems):
        tokens = sum(len(r.token_ids) + int(r.finished) for r in results) if results else None
        row = {"seconds_per_system": seconds / systems, "tokens": tokens}
        report["variants"][name] = row
        extra = f", {tokens / seconds:.0f} tokens/s" if tokens else ""
        print(f"  {name:8s} {seconds / systems:.3f} s/system{extra}")

    # naive: a few systems only
    naive_set = prepared[: args.naive_systems]
    _, naive_s = timed(lambda: [naive_decode(model, img, w, max_len) for img, w in naive_set])
    record("naive", naive_s, None, len(naive_set))
    cached, cached_s = timed(lambda: decode_prepared(model, prepared, batch_size=1, max_len=max_len))
    record("cached", cached_s, cached, len(prepared))
    batched, batched_s = timed(lambda: decode_prepared(model, prepared, batch_size=args.batch, max_len=max_len))
    record("batched", batched_s, batched, len(prepared))

    torch.set_num_threads(1)
    one, one_s = timed(lambda: decode_prepared(model, prepared, batch_size=args.batch, max_len=max_len))
    record("batched-1thread", one_s, one, len(prepared))
    torch.set_num_threads(args.threads)

    int8_model = quantize_int8(copy.deepcopy(model))
    int8, int8_s = timed(lambda: decode_prepared(int8_model, prepared, batch_size=args.batch, max_len=max_len))
    record("int8", int8_s, int8, len(prepared))

    # name -> decode(prepared, max_len): each variant decodes the accuracy set the way it was timed
    def torch_variant(variant):
        return lambda items, cap: decode_prepared(variant, items, batch_size=args.batch, max_len=cap)

    variants = {"batched": torch_variant(model), "int8": torch_variant(int8_model)}
    if not args.no_compile:
        compiled = copy.deepcopy(model)
        compiled.decoder = torch.compile(compiled.decoder, dynamic=True)
        try:
            start = time.perf_counter()
            decode_prepared(compiled, prepared[:1], batch_size=1, max_len=8)
            report["compile_seconds"] = time.perf_counter() - start
            out, compile_s = timed(lambda: decode_prepared(compiled, prepared, batch_size=args.batch,
                                                           max_len=max_len))
            record("compile", compile_s, out, len(prepared))
            variants["compile"] = torch_variant(compiled)
        except Exception as error:  # report, do not hide
            report["variants"]["compile"] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(f"  compile  failed: {type(error).__name__}: {str(error)[:200]}")

    onnx_session = None
    if not args.no_onnx:
        try:
            import tempfile

            from onnx_decoder import decode_prepared_ort, export_step, session

            onnx_path = export_step(model, f"{tempfile.mkdtemp()}/decoder_step.onnx")
            onnx_session = session(onnx_path, args.threads)
            # torch keeps one thread here (its idle threads would compete with ONNX Runtime's: measured
            # 2.22 s against 3.37 s for 8 systems x 300 tokens with both at 2)
            torch.set_num_threads(1)
            out, onnx_s = timed(lambda: decode_prepared_ort(onnx_session, model, prepared, args.batch, max_len))
            torch.set_num_threads(args.threads)
            record("onnx", onnx_s, out, len(prepared))
        except (ImportError, RuntimeError) as error:  # torch's exporter raises OnnxExporterError without onnx
            report["variants"]["onnx"] = {"error": f"not installed: {error}"}
            print(f"  onnx     skipped: {error}")

    ratio = {k: report["variants"]["naive"]["seconds_per_system"] / v["seconds_per_system"]
             for k, v in report["variants"].items() if "seconds_per_system" in v}
    report["speedup_vs_naive"] = ratio
    print("  speed-up over naive: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratio.items()))

    # accuracy of each variant, decoding until the model's own <eos> (or --eval-len)
    eval_samples = samples[: args.eval_systems]
    eval_prepared = [(s.image, s.image.shape[-1]) for s in eval_samples]
    eval_len = resolve_max_len(model, args.eval_len)
    reference = None
    if onnx_session is not None:
        variants["onnx"] = lambda items, cap: decode_prepared_ort(onnx_session, model, items, args.batch, cap)
    for name, decode in variants.items():
        results = decode(eval_prepared, eval_len)
        predictions = [r.tokens for r in results]
        if reference is None:
            reference = predictions
        same = sum(p == q for p, q in zip(predictions, reference))
        tedn = tedn_of(eval_samples, predictions)
        report["variants"][name].update({"tedn": tedn, "identical_to_fp32": same})
        print(f"  {name:8s} TEDn {tedn:.2f}% on {len(eval_samples)} systems; {same} outputs identical to fp32")

    # a page end to end: detection + crops + batched decoding + joining
    from acai_omr.data.pages import render_page
    from acai_omr.detect import crop_system, detect_systems
    from acai_omr.inference.batch import assemble, decode_crops, system_results

    page_times, page_systems = [], []
    for seed in range(3):
        page, _ = render_page(seed=seed, page=0, staff_space_px=12)

        def whole_page():
            boxes = detect_systems(page).boxes
            crops = [crop_system(page, box) for box in boxes]
            results = decode_crops(model, crops, batch_size=args.batch, max_len=max_len)
            systems = system_results(results, [1] * len(boxes), [(b.x0, b.y0, b.x1, b.y1) for b in boxes])
            assemble(systems)
            return len(boxes)

        n, seconds = timed(whole_page)
        page_times.append(seconds)
        page_systems.append(n)
        print(f"  page {seed}: {n} systems, {seconds:.2f} s (detection + {n} x <= {max_len} tokens + joining)")
    report["pages"] = [{"systems": n, "seconds": s} for n, s in zip(page_systems, page_times)]
    report["page_median_seconds"] = statistics.median(page_times)
    # peak memory of a worker: `acai-omr transcribe` (the batch worker: model + detection + decoding) on a page
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        page_path = f"{tmp}/page.png"
        render_page(seed=0, page=0, staff_space_px=12)[0].save(page_path)
        command = [sys.executable, "-m", "acai_omr.cli", "transcribe", page_path, "-o", tmp, "--no-progress",
                   "--max-len", str(max_len), "--threads", str(args.threads)]
        if args.weights:
            command += ["--weights", args.weights]
        start = time.perf_counter()
        with open(f"{tmp}/stderr.txt", "wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            # this child's own rusage: RUSAGE_CHILDREN would also count torch.compile's helper processes
            _, status, usage = os.wait4(process.pid, 0)
        report["cli_page_seconds"] = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"acai-omr transcribe failed: {open(f'{tmp}/stderr.txt').read()[-2000:]}")
    report["worker_peak_rss_mib"] = usage.ru_maxrss / 1024
    print(f"  acai-omr transcribe on a page: {report['cli_page_seconds']:.1f} s including start-up and model "
          f"loading; peak RSS {report['worker_peak_rss_mib']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
