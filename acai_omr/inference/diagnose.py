"""`acai-omr diagnose ...`: what an evaluation report says beyond its TEDn.

TEDn says a transcription is poor, not why. These read the JSON `acai-omr eval model --json`
writes (each system's prediction and per-token log-probabilities) and answer two questions:

* `pitch-errors`: how wrong are the pitches, the key and the time signatures? Notes of prediction
  and gold are matched by (measure, onset, staff); for every onset both hold, the top pitched
  note of the prediction is compared with the gold's in diatonic steps (E4 -> G4 is +2). A model
  that reads pitch puts most of these at 0; one that guesses spreads them over +-5; octave (+-7)
  or clef (+-12) errors show as peaks of their own. The same numbers with each prediction paired
  with another system's gold are the floor a guess reaches.
* `confidence`: does a per-system confidence figure mean anything? The rank correlation
  (Spearman) of each candidate figure with the system's TEDn; a useful one is negative.

    acai-omr eval model --split lieder-dev --weights weights --json runs/eval.json
    acai-omr diagnose pitch-errors runs/eval.json --split lieder-dev
    acai-omr diagnose confidence runs/dev.json runs/eval.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from acai_omr.inference.confidence import CANDIDATES
from acai_omr.inference.evaluate import LIEDER_DEV, lieder_dev_folder
from acai_omr.lmx.reading_order import REST, drawn_events


# ---------------------------------------------------------------- pitch errors

def onsets(tokens: list[str]) -> dict[tuple, list[int]]:
    """(measure, onset, staff) -> heights (diatonic steps from C0) of the pitched notes starting there."""
    grouped = defaultdict(list)
    for measure, onset, staff, negative_height, label in drawn_events(tokens):
        if label != REST:
            grouped[(measure, onset, staff)].append(-negative_height)
    return grouped


def compare(gold: list[str], pred: list[str]) -> dict:
    """Counts of one system: gold and predicted onsets, those both hold, and the top notes' step differences."""
    gold_onsets, pred_onsets = onsets(gold), onsets(pred)
    shared = gold_onsets.keys() & pred_onsets.keys()
    return {"gold": len(gold_onsets), "pred": len(pred_onsets), "shared": len(shared),
            "diffs": [(key[2], max(pred_onsets[key]) - max(gold_onsets[key])) for key in shared]}


def first_token(tokens: list[str], prefix: str) -> str | None:
    return next((token for token in tokens if token.startswith(prefix)), None)


def opening_time(tokens: list[str]) -> tuple[str, ...] | None:
    """The time signature the system's first measure prints (`time beats:N beat-type:M`), or None."""
    first = tokens[:tokens.index("measure", 1)] if "measure" in tokens[1:] else tokens
    if "time" not in first:
        return None
    at = first.index("time")
    return tuple(first[at:at + 3])


def summarize(pairs: list[tuple[list[str], list[str]]]) -> dict:
    gold_n = pred_n = shared_n = 0
    diffs_by_staff = defaultdict(list)
    keys_right = times_printed = times_right = times_invented = 0
    for gold, pred in pairs:
        counts = compare(gold, pred)
        gold_n, pred_n, shared_n = gold_n + counts["gold"], pred_n + counts["pred"], shared_n + counts["shared"]
        for staff, diff in counts["diffs"]:
            diffs_by_staff[staff].append(diff)
        keys_right += first_token(gold, "key:") == first_token(pred, "key:")
        gold_time, pred_time = opening_time(gold), opening_time(pred)
        times_printed += gold_time is not None
        times_right += gold_time is not None and gold_time == pred_time
        times_invented += gold_time is None and pred_time is not None
    every = [d for diffs in diffs_by_staff.values() for d in diffs]

    def shares(diffs: list[int]) -> dict:
        n = max(1, len(diffs))
        return {"n": len(diffs), "exact": sum(d == 0 for d in diffs) / n,
                "within_1": sum(abs(d) <= 1 for d in diffs) / n,
                "octave": sum(abs(d) == 7 for d in diffs) / n,
                "median_abs": statistics.median(abs(d) for d in diffs) if diffs else None,
                "mean": statistics.fmean(diffs) if diffs else None}

    return {"onset_recall": shared_n / max(1, gold_n), "onset_precision": shared_n / max(1, pred_n),
            "key_right": keys_right / max(1, len(pairs)), "all": shares(every),
            "time_printed": times_printed, "time_right": times_right / max(1, times_printed),
            "time_invented": times_invented,
            "by_staff": {staff: shares(diffs) for staff, diffs in sorted(diffs_by_staff.items())},
            "histogram": dict(sorted(Counter(max(-14, min(14, d)) for d in every).items()))}


def gold_tokens(split: str, data: Path, ids: list[str]) -> dict[str, list[str]]:
    """Gold LMX by system id: the .lmx files of lieder-dev, else the split's manifest."""
    if split == LIEDER_DEV:
        folder = lieder_dev_folder()
        return {i: (folder / f"{i}.lmx").read_text().split() for i in ids}
    from acai_omr.data.dataset import read_manifest  # torch: not at CLI start-up

    records = {str(r["id"]): r for r in read_manifest(data / split / "manifest.jsonl")}
    return {i: records[i]["lmx"].split() for i in ids}


def pitch_report(report: Path, split: str, data: Path) -> dict:
    """`summarize` of the report against its own gold, and against another system's gold (the floor)."""
    rows = json.loads(Path(report).read_text())["systems"]
    golds = gold_tokens(split, data, [row["id"] for row in rows])
    pairs = [(golds[row["id"]], row["prediction"].split()) for row in rows]
    shuffled = [(pairs[(i + 1) % len(pairs)][0], pairs[i][1]) for i in range(len(pairs))]
    return {"own gold": summarize(pairs), "another system's gold": summarize(shuffled), "systems": len(pairs)}


def run_pitch_errors(args: argparse.Namespace) -> int:
    result = pitch_report(args.report, args.split, args.data)
    for name in ("own gold", "another system's gold"):
        figures = result[name]
        print(f"== {name} ({result['systems']} systems)")
        print(f"onsets: recall {figures['onset_recall']:.1%}, precision {figures['onset_precision']:.1%}; "
              f"key signature right {figures['key_right']:.1%}; time signature right on {figures['time_right']:.1%} "
              f"of the {figures['time_printed']} systems that print one, written where none is printed on "
              f"{figures['time_invented']}")
        for label, stats in [("all", figures["all"])] + [(f"staff {s}", v) for s, v in figures["by_staff"].items()]:
            if stats["n"]:
                print(f"  top note, {label}: n={stats['n']} exact {stats['exact']:.1%}, within 1 step "
                      f"{stats['within_1']:.1%}, octave off {stats['octave']:.1%}, median |diff| "
                      f"{stats['median_abs']}, mean diff {stats['mean']:+.2f}")
        print("  diff histogram (clipped to +-14):", " ".join(f"{d:+d}:{n}" for d, n in figures["histogram"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


# ---------------------------------------------------------------- confidence

def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def run_confidence(args: argparse.Namespace) -> int:
    for report in args.reports:
        rows = [r for r in json.loads(Path(report).read_text())["systems"] if r.get("token_logprobs") is not None]
        tedn = [r["tedn"] for r in rows]
        print(f"== {report} ({len(rows)} systems, median TEDn {statistics.median(tedn):.1f}%)")
        for name, figure in CANDIDATES.items():
            values = [figure(r["prediction"].split(), r["token_logprobs"]) for r in rows]
            print(f"  {name:<24} Spearman with TEDn {spearman(values, tedn):+.3f}")
    return 0


def register(subparsers) -> None:
    pitch = subparsers.add_parser("pitch-errors", help="pitch, key and time-signature errors of an evaluation report",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pitch.add_argument("report", type=Path, help="JSON written by `acai-omr eval model --json`")
    pitch.add_argument("--split", default=LIEDER_DEV, help="the split the report evaluated (lieder-dev, dev, ...)")
    pitch.add_argument("--data", type=Path, default=Path("data"), help="dataset root of rendered splits")
    pitch.add_argument("--json", type=Path, help="also write the figures here")
    pitch.set_defaults(func=run_pitch_errors)
    confidence = subparsers.add_parser("confidence", help="how well candidate confidence figures rank systems by TEDn",
                                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    confidence.add_argument("reports", nargs="+", type=Path, help="JSON written by `acai-omr eval model --json`")
    confidence.set_defaults(func=run_confidence)
