"""`acai-omr eval model`: transcribe dev systems with a trained model and score them.

Two dev sets, reported separately: the rendered dev split (`data/dev`,
systems engraved by our own data engine from the corpora's dev pieces) and
`lieder-dev` (198 systems engraved by MuseScore, the better predictor of
real-world accuracy). Scores: corpus TEDn (micro-averaged, spec §4.3), SER,
the rate of unparseable predictions, and decoding seconds per system. The
periodic dev evaluation during training calls `evaluate_model` too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from acai_omr.config import DecodeConfig

LIEDER_DEV = "lieder-dev"


@dataclass
class EvalSample:
    """One dev system: the model's input tensor and everything needed to score and show it."""

    id: str
    image: "object"  # torch.Tensor [1, H, W], 1 = white
    gold_tokens: list[str]
    gold_musicxml: str | Path  # path or XML text
    image_path: Path | None = None
    pieces: list | None = None  # [1, H, w] tensors the model reads one at a time (None: the whole image)

    def model_inputs(self) -> list[tuple["object", int]]:
        """(tensor, valid width) of each piece the model decodes for this system, left to right."""
        return [(piece, piece.shape[-1]) for piece in (self.pieces or [self.image])]


# ---------------------------------------------------------------- loading


def _prepare(gray, height: int, max_width: int, degraded: bool, seed: int, index: int, read_measures: int = 0):
    """uint8 grayscale -> (model input [1, height, W], the pieces the model reads or None), exactly as
    training prepares images; pieces are cut at barlines when `read_measures` > 0 (`reading_spans`)."""
    import numpy as np

    from acai_omr.data.degrade import degrade
    from acai_omr.data.preprocess import reading_pieces, system_input

    if degraded:
        gray = degrade(gray, np.random.default_rng([seed, index]))
    image = system_input(gray, height, max_width)
    if read_measures < 1:
        return image, None
    return image, reading_pieces(gray, height, max_width, read_measures)


def lieder_dev_folder() -> Path:
    """Where the 198 lieder-dev systems are: `<shared>/conformance/lieder-dev`."""
    from acai_omr.paths import shared_dir

    return shared_dir() / "conformance" / LIEDER_DEV


def load_lieder_dev(height: int, max_width: int, limit: int | None = None, degraded: bool = False,
                    seed: int = 0, folder: Path | None = None, read_measures: int = 0) -> list[EvalSample]:
    """The 198 MuseScore-engraved conformance systems (PNG + gold .musicxml + gold .lmx)."""
    from acai_omr.data.preprocess import load_gray

    folder = Path(folder) if folder else lieder_dev_folder()
    pngs = sorted(folder.glob("*.png"))
    if not pngs:
        raise FileNotFoundError(f"no lieder-dev systems in {folder} (set ACAI_SHARED to the shared folder)")
    samples = []
    for index, png in enumerate(pngs[:limit] if limit else pngs):
        image, pieces = _prepare(load_gray(png), height, max_width, degraded, seed, index, read_measures)
        samples.append(EvalSample(png.stem, image, png.with_suffix(".lmx").read_text().split(),
                                  png.with_suffix(".musicxml"), png, pieces))
    return samples


def load_rendered_split(root: Path, split: str, height: int, max_width: int, limit: int | None = None,
                        degraded: bool = False, seed: int = 0, read_measures: int = 0) -> list[EvalSample]:
    """Systems of a split built by the data engine (`<root>/<split>/manifest.jsonl`).

    The gold MusicXML is the manifest's `musicxml` file when it names one,
    else the delinearized gold LMX (whose TEDn floor is 0 by construction).
    """
    from acai_omr.data.dataset import read_manifest
    from acai_omr.data.preprocess import load_gray
    from acai_omr.lmx.delinearize import delinearize

    split_dir = Path(root) / split
    records = read_manifest(split_dir / "manifest.jsonl")
    samples = []
    for index, record in enumerate(records[:limit] if limit else records):
        image_path = split_dir / record["image"]
        tokens = record["lmx"].split() if isinstance(record["lmx"], str) else list(record["lmx"])
        xml_name = record.get("musicxml")
        gold_xml = split_dir / xml_name if xml_name else delinearize(tokens).to_musicxml()
        image, pieces = _prepare(load_gray(image_path), height, max_width, degraded, seed, index, read_measures)
        samples.append(EvalSample(str(record["id"]), image, tokens, gold_xml, image_path, pieces))
    return samples


def load_eval_samples(split: str, data_root: str | Path = "data", height: int = 128, max_width: int = 2048,
                      limit: int | None = None, degraded: bool = False, seed: int = 0,
                      read_measures: int = 0) -> list[EvalSample]:
    """`read_measures` > 0 also cuts each system into the pieces a measure-reading model decodes."""
    if split == LIEDER_DEV:
        return load_lieder_dev(height, max_width, limit, degraded, seed, read_measures=read_measures)
    return load_rendered_split(Path(data_root), split, height, max_width, limit, degraded, seed, read_measures)


# ---------------------------------------------------------------- transcription and scoring


def transcribe(model, samples: list[EvalSample], device, beam: int = 1, max_len: int | None = None,
               batch_size: int = 8, constrained: bool = True, group_pitches: bool = True,
               read_header: bool = True, stop_runaways: bool = True) -> tuple[list, float]:
    """Decoded results per sample (in order: tokens, confidence, per-token log-probs) and the total
    decoding seconds.

    The same batched decoding as the product (`batch.decode_systems`, pieces
    included); grammar-constrained and with pitches competing as one in greedy
    decoding by default, as the web app and `acai-omr transcribe` decode.
    """
    from acai_omr.inference.batch import decode_systems

    started = time.perf_counter()
    results = decode_systems(model, [s.model_inputs() for s in samples], batch_size=batch_size,
                             beam=beam, max_len=max_len, constrained=constrained, group_pitches=group_pitches,
                             read_header=read_header, stop_runaways=stop_runaways)
    return results, time.perf_counter() - started


def score(samples: list[EvalSample], predictions: list[list[str]], flavor: str = "lmx") -> dict:
    """Per-system and corpus scores: TEDn (micro), SER, unparseable rate."""
    from acai_omr.metrics.ser import corpus_ser, ser
    from acai_omr.metrics.tedn import corpus_tedn, tedn_lmx, well_formedness

    rows, tedn_results, ser_pairs, unparseable = [], [], [], 0
    for sample, pred in zip(samples, predictions):
        result = tedn_lmx(pred, sample.gold_musicxml, flavor=flavor)
        bad, n_errors = well_formedness(pred)
        edits, gold_len = ser(sample.gold_tokens, pred)
        tedn_results.append(result)
        ser_pairs.append((edits, gold_len))
        unparseable += int(bad)
        rows.append({"id": sample.id, "tedn": 100.0 * result.value, "edit_cost": result.edit_cost,
                     "gold_cost": result.gold_cost, "ser": 100.0 * edits / max(1, gold_len),
                     "unparseable": bad, "soft_errors": n_errors, "pred_tokens": len(pred),
                     "gold_tokens": len(sample.gold_tokens), "prediction": " ".join(pred)})
    n = len(samples)
    summary = {"systems": n, "tedn": corpus_tedn(tedn_results) if n else None,
               "ser": corpus_ser(ser_pairs) if n else None, "unparseable_rate": unparseable / n if n else None,
               "flavor": flavor}
    return {"summary": summary, "systems": rows}


def evaluate_model(model, samples: list[EvalSample], device, beam: int = 1, max_len: int | None = None,
                   batch_size: int = 8, flavor: str = "lmx", constrained: bool = True,
                   group_pitches: bool = True, read_header: bool = True, stop_runaways: bool = True) -> dict:
    results, seconds = transcribe(model, samples, device, beam=beam, max_len=max_len, batch_size=batch_size,
                                  constrained=constrained, group_pitches=group_pitches, read_header=read_header,
                                  stop_runaways=stop_runaways)
    report = score(samples, [r.tokens for r in results], flavor)
    for row, result in zip(report["systems"], results):  # what `acai-omr diagnose confidence` ranks systems by
        row["confidence"] = round(result.confidence, 4)
        row["token_logprobs"] = [round(v, 3) for v in result.token_logprobs]
    report["summary"]["seconds_per_system"] = seconds / max(1, len(samples))
    report["summary"]["runaway_stop"] = stop_runaways and beam == 1
    report["summary"]["runaways"] = sum(r.runaway for r in results)  # systems with a piece closed early
    report["summary"]["beam"] = beam
    report["summary"]["constrained"] = constrained
    report["summary"]["group_pitches"] = group_pitches and beam == 1
    report["summary"]["header_head"] = read_header and beam == 1 and getattr(model, "header", None) is not None
    return report


# ---------------------------------------------------------------- side-by-side examples


def render_musicxml_png(xml: str, width_px: int = 1600):
    """MusicXML text -> grayscale uint8 image of its first page (verovio SVG, rasterised)."""
    import io

    import numpy as np
    import verovio
    from PIL import Image

    toolkit = verovio.toolkit()
    toolkit.setOptions({"pageWidth": 2400, "adjustPageHeight": True, "scale": 40, "header": "none",
                        "footer": "none", "breaks": "auto"})
    if not toolkit.loadData(xml):
        raise ValueError("verovio cannot read this MusicXML")
    svg = toolkit.renderToSVG(1)
    png = _svg_to_png(svg)
    image = Image.open(io.BytesIO(png)).convert("LA")
    flat = Image.new("L", image.size, 255)
    flat.paste(image.convert("L"), mask=image.getchannel("A"))
    if flat.width > width_px:
        flat = flat.resize((width_px, max(1, round(flat.height * width_px / flat.width))))
    return np.asarray(flat)


def _svg_to_png(svg: str) -> bytes:
    """Rasterise SVG with whichever renderer is present (cairosvg, resvg, ImageMagick)."""
    try:
        import cairosvg

        return cairosvg.svg2png(bytestring=svg.encode(), background_color="white")
    except ImportError:
        pass
    import subprocess

    done = subprocess.run(["convert", "-background", "white", "svg:-", "png:-"], input=svg.encode(),
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"cannot rasterise SVG: {done.stderr.decode(errors='replace')[:200]}")
    return done.stdout


def write_example(sample: EvalSample, prediction: list[str], path: Path, tedn: float) -> None:
    """One PNG: the input crop, the gold rendered, the prediction rendered (or why it could not be)."""
    import cv2
    import numpy as np

    from acai_omr.lmx.delinearize import delinearize

    panels: list[tuple[str, np.ndarray | None]] = []
    source = (sample.image[0].numpy() * 255).astype(np.uint8)  # what the model saw (degraded or not)
    panels.append((f"input {sample.id}", source))
    gold_xml = Path(sample.gold_musicxml).read_text() if isinstance(sample.gold_musicxml, Path) else sample.gold_musicxml
    for title, xml_fn in (("gold", lambda: gold_xml), (f"prediction (TEDn {tedn:.1f}%)",
                                                      lambda: delinearize(prediction).to_musicxml())):
        try:
            panels.append((title, render_musicxml_png(xml_fn())))
        except Exception as exc:  # an unparseable or unrenderable prediction is still an example
            panels.append((f"{title}: not renderable ({type(exc).__name__})", None))
    width = max(p.shape[1] for _, p in panels if p is not None)
    rows = []
    for title, panel in panels:
        label = np.full((28, width), 255, dtype=np.uint8)
        cv2.putText(label, title, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
        rows.append(label)
        if panel is not None:
            padded = np.full((panel.shape[0], width), 255, dtype=np.uint8)
            padded[:, : panel.shape[1]] = panel
            rows.append(padded)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


# ---------------------------------------------------------------- CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="transcribe dev systems with a model and report TEDn, SER, unparseable rate",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="dev", help="dev (rendered, under --data), lieder-dev, or another built split")
    p.add_argument("--degraded", action="store_true", help="apply the scan/photo degradation (seeded) to the inputs")
    p.add_argument("--data", default="data", help="dataset root holding <split>/manifest.jsonl")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights/)")
    p.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy")
    p.add_argument("--max-len", type=int, default=None, help="decoding length cap (tokens, per piece read)")
    p.add_argument("--read-measures", type=int, default=None,
                   help="measures per piece the model reads (0 = whole systems; default: the weights' read_measures)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N systems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--int8", action="store_true", help="evaluate the int8-quantized model the product runs on CPU")
    p.add_argument("--no-grammar", dest="constrained", action="store_false",
                   help="decode without the LMX grammar constraint (the product always uses it)")
    p.add_argument("--token-argmax", dest="group_pitches", action="store_false",
                   help="greedy: take the single likeliest token, without letting the pitch tokens compete as one "
                        "(the product groups them; this measures the difference)")
    p.add_argument("--no-header", dest="read_header", action="store_false",
                   help="greedy: let the decoder write the key and time signature itself, not the weights' header "
                        "head (the product uses the head; this measures the difference)")
    p.add_argument("--no-runaway-stop", dest="stop_runaways", action="store_false",
                   help="greedy: let a looping piece run to the token cap (the product closes it early; "
                        "this measures the difference)")
    p.add_argument("--flavor", default="lmx", choices=["lmx", "full"], help="TEDn flavour")
    p.add_argument("--seed", type=int, default=0, help="degradation seed")
    p.add_argument("--json", dest="json_out", default=None, help="write the full report (per system) here")
    p.add_argument("--examples", default=None, help="folder for side-by-side example PNGs")
    p.add_argument("--n-examples", type=int, default=4)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run_eval_model)


def run_eval_model(args) -> int:
    import sys

    import torch

    from acai_omr.model.weights import load_model

    if args.beam < 1 or (args.limit is not None and args.limit < 1):
        print("error: --beam and --limit must be at least 1", file=sys.stderr)
        return 2
    if args.read_measures is not None and args.read_measures < 0:
        print("error: --read-measures must be 0 or more", file=sys.stderr)
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model, cfg = load_model(args.weights, device, int8=args.int8)
        read_measures = cfg.read_measures if args.read_measures is None else args.read_measures
        samples = load_eval_samples(args.split, args.data, cfg.image_height, cfg.max_image_width, args.limit,
                                    args.degraded, args.seed, read_measures)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    decoding = DecodeConfig(batch_size=args.batch_size, beam=args.beam, max_tokens=args.max_len or 0,
                            constrained=args.constrained, read_measures=read_measures,
                            stop_runaways=args.stop_runaways)
    report = evaluate_model(model, samples, device, flavor=args.flavor, group_pitches=args.group_pitches,
                            read_header=args.read_header, **decoding.options(cfg.max_tokens))
    summary = report["summary"]
    summary.update({"split": args.split, "degraded": args.degraded, "weights": str(args.weights or "default"),
                    "int8": args.int8, "read_measures": read_measures,
                    "pieces": sum(len(s.model_inputs()) for s in samples)})
    reading = f", {read_measures} measure(s) per piece, {summary['pieces']} pieces" if read_measures else ""
    decoding = f"beam {args.beam}" if args.beam > 1 else ("greedy" + ("" if args.group_pitches else ", token argmax")
                                                          + (", header head" if summary["header_head"] else ""))
    print(f"{args.split}{' (degraded)' if args.degraded else ''}: {summary['systems']} systems, {decoding}{reading}")
    print(f"  TEDn-{args.flavor}: {summary['tedn']:.2f}%   SER: {summary['ser']:.2f}%   "
          f"unparseable: {100 * summary['unparseable_rate']:.1f}%   {summary['seconds_per_system']:.3f} s/system")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    if args.examples:
        by_id = {s.id: s for s in samples}
        rows = sorted(report["systems"], key=lambda r: r["tedn"])
        # best, worst and median-ish systems show the range of what the model does
        picks = {rows[0]["id"], rows[-1]["id"]} | {r["id"] for r in rows[len(rows) // 2:][: max(0, args.n_examples - 2)]}
        for row in rows:
            if row["id"] in picks:
                write_example(by_id[row["id"]], row["prediction"].split(), Path(args.examples) / f"{row['id']}.png",
                              row["tedn"])
        print(f"  examples: {args.examples}")
    return 0
