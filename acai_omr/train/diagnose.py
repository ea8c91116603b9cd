"""`acai-omr diagnose image-use`: does the model read the image?

Teacher-forced dev loss with the real images, blank pages and another system's image. A decoder
that has collapsed into a language model of LMX scores the same loss whatever image it is given
(the gap is ~0); a model that reads the music does much worse on a blank or wrong image. The
linear-stem weights shipped on 2026-12-02 gave 1.228 nats with the real images, 1.234 with blank
pages (gap 0.006) and wrote the same opening for every system; this is the check that found it.

The loss gap can hide that the notes are not read: it also counts the measure layout, clefs and
rests a glance gives. `accuracy` splits the teacher-forced accuracy by token class (pitch,
duration, key, ...) with the real image and with another system's.

    acai-omr diagnose image-use --weights weights --data data --split dev --systems 48
    acai-omr diagnose image-use --weights runs/<run>/last.pt --crop-measures 1   # a run as it goes
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter

from acai_omr.lmx.reading_order import NOTE_LABEL_INDEX, REST
from acai_omr.lmx.vocab import VOCAB


DURATIONS = {"maxima", "long", "breve", "whole", "half", "quarter", "eighth", "16th", "32nd", "64th", "128th",
             "256th", "512th", "1024th"}


def token_class(token: str) -> str:
    """'pitch', 'duration', 'rest', or the token's name before ':' (key, clef, voice, ...)."""
    if token in NOTE_LABEL_INDEX and token != REST:
        return "pitch"
    if token in DURATIONS:
        return "duration"
    if token in ("rest", "rest:measure"):
        return "rest"
    return token.split(":")[0]


def count_correct(logits, tokens, correct: Counter, total: Counter | None) -> None:
    """Add each target token's class to `total` and, when the argmax names it, to `correct`."""
    predicted, targets = logits.argmax(-1), tokens[:, 1:]
    for row in range(targets.shape[0]):
        for position, target in enumerate(targets[row].tolist()):
            if target in VOCAB.special_ids:
                continue
            name = token_class(VOCAB.tokens[target])
            correct[name] += int(predicted[row, position] == target)
            if total is not None:
                total[name] += 1


def run_image_use(args: argparse.Namespace) -> int:
    import torch  # not at CLI start-up

    from acai_omr.data.dataset import SystemDataset, collate_systems
    from acai_omr.model.weights import load_model
    from acai_omr.train.export import model_from_checkpoint
    from acai_omr.train.supervised import SupervisedObjective

    torch.set_num_threads(args.threads)
    model, cfg = (model_from_checkpoint if args.weights.endswith(".pt") else load_model)(args.weights)
    model = model.float().eval()
    dataset = SystemDataset(args.data, args.split, cfg.image_height, augment=False, seed=0, max_tokens=cfg.max_tokens,
                            max_width=cfg.max_image_width, crop_measures=args.crop_measures)
    chosen = random.Random(args.seed).sample(range(len(dataset)), min(args.systems, len(dataset)))
    objective = SupervisedObjective(model).eval()
    totals = {"real": 0.0, "blank": 0.0, "other_system": 0.0}
    batches = 0
    correct_real, correct_other, total = Counter(), Counter(), Counter()
    with torch.no_grad():
        for start in range(0, len(chosen), args.batch_size):
            batch = collate_systems([dataset[i] for i in chosen[start:start + args.batch_size]],
                                    cfg.patch_width)
            images, widths, tokens = batch["images"], batch["widths"], batch["tokens"]
            shifted = torch.roll(torch.arange(len(widths)), 1)
            totals["real"] += objective(images, widths, tokens)[0].item()
            totals["blank"] += objective(torch.ones_like(images), widths, tokens)[0].item()
            totals["other_system"] += objective(images[shifted], widths[shifted], tokens)[0].item()
            count_correct(model(images, widths, tokens[:, :-1]), tokens, correct_real, total)
            count_correct(model(images[shifted], widths[shifted], tokens[:, :-1]), tokens, correct_other, None)
            batches += 1
    report = {name: round(value / batches, 4) for name, value in totals.items()}
    report["gap_blank"] = round(report["blank"] - report["real"], 4)
    report["gap_other_system"] = round(report["other_system"] - report["real"], 4)
    report["accuracy"] = {name: {"tokens": count, "real": round(correct_real[name] / count, 3),
                                 "other_system": round(correct_other[name] / count, 3)}
                          for name, count in total.most_common(8)}
    report.update(weights=args.weights, split=args.split, systems=len(chosen), crop_measures=args.crop_measures)
    print(json.dumps(report))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("image-use", help="does the model read the image? (loss with real, blank and "
                                   "other systems' images)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="weights", help="weights folder, or a run's last.pt")
    parser.add_argument("--data", default="data")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--systems", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop-measures", type=float, default=0.0,
                        help="share of systems cut to 1-2 measures (acai_omr.data.measures)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_image_use)
