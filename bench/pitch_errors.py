"""How wrong are the pitches? Aligns each predicted system with its gold by where notes start.

TEDn says a transcription is poor, not why. Here the notes of prediction and gold are matched by
(measure, onset, staff), and for every onset both hold, the top pitched note of the prediction is
compared with the gold's in diatonic steps (E4 -> G4 is +2). A model that reads pitch puts most
of these at 0; one that guesses within the staff's usual range spreads them over +-5; octave (+-7)
or clef (+-12, a treble reading of a bass staff) errors show as peaks of their own. The same
numbers with each prediction paired with another system's gold are the floor a guess reaches.

    poetry run acai-omr eval model --split lieder-dev --weights weights --json runs/eval.json
    poetry run python bench/pitch_errors.py runs/eval.json --split lieder-dev
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from acai_omr.inference.evaluate import LIEDER_DEV, lieder_dev_folder
from acai_omr.lmx.reading_order import REST, drawn_events


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
    from acai_omr.data.dataset import read_manifest

    records = {str(r["id"]): r for r in read_manifest(data / split / "manifest.jsonl")}
    return {i: records[i]["lmx"].split() for i in ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="JSON written by `acai-omr eval model --json`")
    parser.add_argument("--split", default=LIEDER_DEV)
    parser.add_argument("--data", type=Path, default=Path("data"))
    args = parser.parse_args()
    rows = json.loads(Path(args.report).read_text())["systems"]
    golds = gold_tokens(args.split, args.data, [row["id"] for row in rows])
    pairs = [(golds[row["id"]], row["prediction"].split()) for row in rows]
    # the floor: each prediction against the next system's gold
    shuffled = [(pairs[(i + 1) % len(pairs)][0], pairs[i][1]) for i in range(len(pairs))]
    for name, chosen in (("own gold", pairs), ("another system's gold", shuffled)):
        result = summarize(chosen)
        print(f"== {name} ({len(chosen)} systems)")
        print(f"onsets: recall {result['onset_recall']:.1%}, precision {result['onset_precision']:.1%}; "
              f"key signature right {result['key_right']:.1%}; time signature right on {result['time_right']:.1%} "
              f"of the {result['time_printed']} systems that print one, written where none is printed on "
              f"{result['time_invented']}")
        for label, stats in [("all", result["all"])] + [(f"staff {s}", v) for s, v in result["by_staff"].items()]:
            if stats["n"]:
                print(f"  top note, {label}: n={stats['n']} exact {stats['exact']:.1%}, within 1 step "
                      f"{stats['within_1']:.1%}, octave off {stats['octave']:.1%}, median |diff| "
                      f"{stats['median_abs']}, mean diff {stats['mean']:+.2f}")
        print("  diff histogram (clipped to +-14):", " ".join(f"{d:+d}:{n}" for d, n in result["histogram"].items()))


if __name__ == "__main__":
    main()
