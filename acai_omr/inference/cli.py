"""`acai-omr transcribe INPUT... -o OUTDIR`: pages, PDFs, system crops and folders of them -> MusicXML.

Each input file becomes one output (`<stem>.musicxml`, or the --format asked
for): its systems are found on every page (or the whole image is one system
with --system, or the boxes come from --boxes), decoded together in batches,
and joined in reading order. A bad file is reported and skipped; the batch
goes on, and the exit code is 1 if any input failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from acai_omr.config import DecodeConfig
from acai_omr.render.formats import FORMATS

INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".heic", ".heif", ".pdf"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe", help="Transcribe pages, PDFs or system images to MusicXML (or another format of the registry)",
        description="Transcribe images and PDFs of pianoform music. Folders are searched recursively for "
                    f"{', '.join(sorted(INPUT_SUFFIXES))} files. Systems are detected on each page unless "
                    "--system (each image is one system crop) or --boxes gives them. One output per input.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", type=Path, help="image files, PDFs or folders")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR", help="output folder")
    parser.add_argument("--format", choices=[name for f in FORMATS.values() for name in (f.key, *f.aliases)],
                        default="musicxml", metavar="FORMAT",
                        help="; ".join(f"{f.key}: {f.description}" for f in FORMATS.values()) + " (default: musicxml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--system", action="store_true", help="each input image is one system crop (no detection)")
    mode.add_argument("--boxes", type=Path, action="append", metavar="FILE",
                      help="system boxes from `acai-omr detect -o FILE` (matched to inputs by file name; "
                           "may be repeated)")
    parser.add_argument("--pages", help="PDF/TIFF pages to read, e.g. '1-3,5' (default: all)")
    parser.add_argument("--dpi", type=int, default=None, help="PDF rasterization resolution (default 200)")
    parser.add_argument("--weights", type=Path, default=None, metavar="DIR",
                        help="folder with model.safetensors + config.json (default: the repository's weights/)")
    parser.add_argument("--beam", type=int, default=1, metavar="N", help="beam size (1 = greedy)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="systems decoded together")
    parser.add_argument("--no-grammar", dest="constrained", action="store_false",
                        help="do not constrain decoding to well-formed LMX")
    parser.add_argument("--max-len", type=int, default=None, help="most tokens per piece read (a system, or a run of measures)")
    parser.add_argument("--read-measures", type=int, default=None, metavar="N",
                        help="cut each system at its barlines into runs of N measures, decoded separately and joined "
                             "(0 = whole systems; default: the weights' read_measures)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 linear layers on CPU: changes the output, no faster once batched (see README, inference speed)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


class InputError(ValueError):
    """One input cannot be transcribed; the batch goes on."""


@dataclass
class Summary:
    inputs: int = 0
    systems: int = 0
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)


def expand_inputs(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given (any suffix: content decides), folders searched recursively; missing paths are failures."""
    files, missing = [], []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                missing.append((path, "the folder holds no image or PDF files"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def load_box_reports(paths: list[Path] | None) -> dict[str, dict]:
    """`acai-omr detect` reports by the file name of their input."""
    reports = {}
    for path in paths or []:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            name = Path(report["input"]).name
            report["pages"] = [{"page": int(p["page"]), "boxes": [dict(b) for b in p["systems"]]}
                               for p in report["pages"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path}: not a boxes file written by `acai-omr detect` ({error})") from error
        reports[name] = report
    return reports


def systems_of(path: Path, args, reports: dict[str, dict]):
    """(crops, pages, boxes) of one input: detected, given by --boxes, or the whole image (--system)."""
    from acai_omr.config import DetectConfig
    from acai_omr.detect import PageInputError, SystemBox, crop_system, detect_systems, load_page_images, parse_pages

    cfg = DetectConfig()
    try:
        numbers = parse_pages(args.pages)
        images = load_page_images(path, pages=numbers, dpi=args.dpi, cfg=cfg)
    except PageInputError as error:
        raise InputError(str(error)) from error
    numbers = numbers or list(range(1, len(images) + 1))
    crops, pages, boxes = [], [], []
    if args.system:
        for number, image in zip(numbers, images):
            crops.append(image)
            pages.append(number)
            boxes.append((0.0, 0.0, float(image.width), float(image.height)))
        return crops, pages, boxes
    given = None
    if args.boxes:
        report = reports.get(path.name) or (next(iter(reports.values())) if len(reports) == 1 else None)
        if report is None:
            raise InputError(f"no boxes given for {path.name} (the --boxes files name "
                             f"{', '.join(sorted(reports))})")
        given = {p["page"]: p["boxes"] for p in report["pages"]}
    for number, image in zip(numbers, images):
        if given is not None:
            page_boxes = [SystemBox(float(b["x0"]), float(b["y0"]), float(b["x1"]), float(b["y1"]), 1.0,
                                    quad=b.get("quad") or []) for b in given.get(number, [])]
        else:
            page_boxes = detect_systems(image, cfg).boxes
        for box in page_boxes:
            crops.append(crop_system(image, box))
            pages.append(number)
            boxes.append((box.x0, box.y0, box.x1, box.y1))
    if not crops:
        raise InputError("no music systems found" + (" in the given boxes" if given is not None else
                                                     " (give them with --boxes, or --system for a system crop)"))
    return crops, pages, boxes


def write_outputs(systems, stem: str, out_dir: Path, fmt: str, source: Path) -> Path:
    """One input's systems -> out_dir/<stem>.<ext>, in the format the registry names `fmt`."""
    from acai_omr.inference.batch import assemble
    from acai_omr.render.formats import ScoreText, format_named, write_formats

    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = format_named(fmt)
    musicxml = assemble(systems, title=source.stem.replace("_", " "))  # also fills each system's repairs
    score = ScoreText(musicxml, [" ".join(s.tokens) for s in systems],
                      {"input": str(source), "systems": [s.to_json() for s in systems]})
    return write_formats(score, out_dir / stem, [chosen.key])[chosen.key]


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 2
    while stem in used:
        stem, n = f"{path.stem}-{n}", n + 1
    used.add(stem)
    return stem


def run(args: argparse.Namespace) -> int:
    if args.beam < 1 or args.batch_size < 1:
        print("error: --beam and --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        reports = load_box_reports(args.boxes)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files, failures = expand_inputs(args.inputs)
    if not files:
        for path, reason in failures:
            print(f"error: {path}: {reason}", file=sys.stderr)
        return 1

    import torch
    from tqdm import tqdm

    from acai_omr.inference.batch import decode_crops, system_results
    from acai_omr.model.weights import WeightsError, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, cfg = load_model(args.weights, device=args.device, int8=args.int8)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.read_measures is not None and args.read_measures < 0:
        print("error: --read-measures must be 0 or more", file=sys.stderr)
        return 2
    if args.max_len is not None and not 1 <= args.max_len < cfg.max_tokens:
        print(f"error: --max-len must be in 1..{cfg.max_tokens - 1}", file=sys.stderr)
        return 2

    decoding = DecodeConfig(batch_size=args.batch_size, beam=args.beam, max_tokens=args.max_len or 0,
                            constrained=args.constrained,
                            read_measures=-1 if args.read_measures is None else args.read_measures)
    summary = Summary(inputs=len(files) + len(failures), failures=list(failures))
    used: set[str] = set()
    bar = tqdm(files, desc="transcribe", unit="input", disable=not args.progress, file=sys.stderr)
    for path in bar:
        try:
            crops, pages, boxes = systems_of(path, args, reports)
            decoded = decode_crops(model, crops, read_measures=decoding.pieces, **decoding.options(cfg.max_tokens))
            systems = system_results(decoded, pages, boxes)
            out = write_outputs(systems, _unique_stem(path, used), args.output, args.format, path)
        except InputError as error:
            summary.failures.append((path, str(error)))
            continue
        except Exception as error:  # one bad file never stops the batch
            summary.failures.append((path, f"{type(error).__name__}: {error}"))
            continue
        summary.systems += len(systems)
        summary.written.append(out)
        cut = sum(not s.finished for s in systems)
        note = f", {cut} cut at the length limit" if cut else ""
        bar.write(f"{path} -> {out}: {len(systems)} system(s){note}")
    bar.close()

    done = len(summary.written)
    print(f"{done} of {summary.inputs} input(s) transcribed ({summary.systems} systems) into {args.output}")
    if summary.failures:
        print(f"{len(summary.failures)} failed:", file=sys.stderr)
        for path, reason in summary.failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
