"""`acai-omr transcribe`: system images -> LMX or MusicXML files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "transcribe", help="Transcribe system images to MusicXML or LMX",
        description="Transcribe images of single systems (two piano staves each) with a trained model. "
                    "Writes <stem>.musicxml or <stem>.lmx per image into the output folder.",
    )
    parser.add_argument("images", nargs="+", metavar="IMG", help="image files (png, jpg, ...)")
    parser.add_argument("--system", action="store_true",
                        help="each image is one system crop (required: page images are not supported here)")
    parser.add_argument("--format", choices=["musicxml", "lmx"], default="musicxml")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR", help="output folder")
    parser.add_argument("--weights", type=Path, default=None, metavar="DIR",
                        help="folder with model.safetensors + config.json (default: the repository's weights/)")
    parser.add_argument("--beam", type=int, default=1, metavar="N", help="beam size (1 = greedy)")
    parser.add_argument("--no-grammar", dest="constrained", action="store_false",
                        help="do not constrain decoding to well-formed LMX")
    parser.add_argument("--max-len", type=int, default=None, help="most tokens per system")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1; step-by-step decoding gains little from more)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.system:
        print("error: pass --system: each image must be a single system crop "
              "(whole-page transcription is not available in this command)", file=sys.stderr)
        return 2
    if args.beam < 1:
        print("error: --beam must be at least 1", file=sys.stderr)
        return 2

    import torch

    from acai_omr.inference.transcribe import ImageError, load_image, transcribe_tensor, write_output
    from acai_omr.model.weights import WeightsError, load_model

    torch.set_num_threads(args.threads or 1)
    try:
        model, cfg = load_model(args.weights, device=args.device)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.max_len is not None and not 1 <= args.max_len < cfg.max_tokens:
        print(f"error: --max-len must be in 1..{cfg.max_tokens - 1}", file=sys.stderr)
        return 2

    failures = 0
    for image_path in args.images:
        image_path = Path(image_path)
        try:
            image, width = load_image(image_path, cfg)
        except ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        result = transcribe_tensor(model, image, width, beam=args.beam, constrained=args.constrained,
                                   max_len=args.max_len)
        try:
            out = write_output(result, image_path.stem, args.output, args.format)
        except OSError as error:
            print(f"error: {image_path}: cannot write output ({error})", file=sys.stderr)
            failures += 1
            continue
        note = "" if result.finished else " (hit the length limit)"
        print(f"{image_path} -> {out}: {len(result.tokens)} tokens, confidence {result.confidence:.2f}{note}")
    if failures:
        print(f"{failures} of {len(args.images)} image(s) failed", file=sys.stderr)
        return 1
    return 0
