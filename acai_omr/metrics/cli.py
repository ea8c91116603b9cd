"""`acai-omr eval score`: TEDn and SER of a folder of predictions against a folder of gold systems.

Files are matched by name: gold `NAME.musicxml` (or `.xml`/`.mxl`) with
prediction `NAME.lmx` or `NAME.musicxml`. A missing prediction is scored as an
empty one (TEDn 100%) and listed. SER needs gold tokens: `NAME.lmx` beside the
gold file, else the linearizer's output for the gold MusicXML.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

GOLD_SUFFIXES = (".musicxml", ".xml", ".mxl")  # preference order when several exist
PRED_SUFFIXES = (".lmx", ".musicxml", ".xml")


@dataclass
class SampleScore:
    """Everything `score` records about one gold system."""

    name: str
    edit_cost: int = 0
    gold_cost: int = 0
    ser_edits: int | None = None
    ser_gold_len: int | None = None
    ser_notuplets_edits: int | None = None
    ser_notuplets_gold_len: int | None = None
    missing: bool = False
    unparseable: bool = False
    soft_errors: int = 0
    error: str | None = None  # the gold could not be scored at all


def read_lmx_tokens(path: Path) -> list[str]:
    """Tokens of a predicted .lmx file: one line per system, or the fixture format
    (`key: value` header, `---`, `#` comments). Unknown tokens are kept: the
    delinearizer counts them as errors instead of refusing the file."""
    lines = [line.split("#", 1)[0] for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    if any(line.strip() == "---" for line in lines):
        lines = lines[[line.strip() for line in lines].index("---") + 1:]
        lines = [line for line in lines if line.strip() != "---"]
    return " ".join(lines).split()


def _gold_tokens(gold_path: Path) -> list[str] | None:
    from acai_omr.lmx.linearize import linearize_score

    beside = gold_path.with_suffix(".lmx")
    if beside.is_file():
        return read_lmx_tokens(beside)
    try:
        return linearize_score(gold_path, fail_on_unknown=False)
    except Exception:  # the gold cannot be linearized: no SER for this sample
        return None


def _predicted_part(pred_path: Path):
    """(part or None, predicted tokens, unparseable, soft errors) for one prediction file."""
    from acai_omr.metrics.tedn import _delinearize, prepare_gold

    if pred_path.suffix == ".lmx":
        tokens = read_lmx_tokens(pred_path)
        part, n_errors, unparseable = _delinearize(tokens)
        return part, tokens, unparseable, n_errors
    from acai_omr.lmx.linearize import linearize_score
    from acai_omr.lmx.musicxml import read_score

    try:
        root = read_score(pred_path)
        part = prepare_gold(root)  # same duration conversion as the gold; raises unless one <part>
    except Exception:
        return None, [], True, 0
    try:
        tokens = linearize_score(root, fail_on_unknown=False)
    except Exception:  # TEDn still scores it; SER sees no tokens
        tokens = []
    return part, tokens, False, 0


def score_sample(job: tuple[str, str, str | None, str]) -> SampleScore:
    """Score one (name, gold path, prediction path or None, flavor); never raises."""
    import xml.etree.ElementTree as ET

    from acai_omr.metrics.ser import ser
    from acai_omr.metrics.tedn import prepare_gold, tedn

    name, gold_name, pred_name, flavor = job
    gold_path = Path(gold_name)
    result = SampleScore(name)
    try:
        gold = prepare_gold(gold_path)
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"
        return result
    if pred_name is None:
        result.missing = True
        part, tokens = None, []
    else:
        try:
            part, tokens, result.unparseable, result.soft_errors = _predicted_part(Path(pred_name))
        except Exception:  # an unreadable file scores like an unparseable prediction
            part, tokens, result.unparseable = None, [], True
    if part is None:
        part = ET.Element(gold.tag)
    scored = tedn(part, gold, flavor=flavor)
    result.edit_cost, result.gold_cost = scored.edit_cost, scored.gold_cost
    gold_tokens = _gold_tokens(gold_path)
    if gold_tokens is not None:
        result.ser_edits, result.ser_gold_len = ser(gold_tokens, tokens or [])
        result.ser_notuplets_edits, result.ser_notuplets_gold_len = ser(gold_tokens, tokens or [], notuplets=True)
    return result


def _find(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for suffix in reversed(suffixes):  # earlier suffixes overwrite later ones
        for path in folder.glob(f"*{suffix}"):
            if path.is_file():
                found[path.name[: -len(suffix)]] = path
    return found


def build_jobs(gold_dir: Path, pred_dir: Path, flavor: str) -> list[tuple[str, str, str | None, str]]:
    """One job per gold file, longest prediction first (so the slowest start first)."""
    golds = _find(gold_dir, GOLD_SUFFIXES)
    preds = _find(pred_dir, PRED_SUFFIXES)
    jobs = [(name, str(gold), str(preds[name]) if name in preds else None, flavor) for name, gold in golds.items()]

    def size(job) -> int:
        return os.path.getsize(job[2]) if job[2] else 0

    jobs.sort(key=lambda job: (-size(job), job[0]))
    return jobs


def summarize(results: list[SampleScore], flavor: str) -> dict:
    from acai_omr.metrics.ser import corpus_ser
    from acai_omr.metrics.tedn import TednResult, corpus_tedn

    scored = [r for r in results if r.error is None]
    with_ser = [r for r in scored if r.ser_edits is not None]
    return {
        "flavor": flavor,
        "samples": len(results),
        "scored": len(scored),
        "failed_gold": sorted(r.name for r in results if r.error is not None),
        "missing_predictions": sorted(r.name for r in scored if r.missing),
        "tedn_percent": corpus_tedn(TednResult(r.edit_cost, r.gold_cost) for r in scored),
        "edit_cost": sum(r.edit_cost for r in scored),
        "gold_cost": sum(r.gold_cost for r in scored),
        "ser_samples": len(with_ser),
        "ser_percent": corpus_ser((r.ser_edits, r.ser_gold_len) for r in with_ser) if with_ser else None,
        "ser_notuplets_percent": (
            corpus_ser((r.ser_notuplets_edits, r.ser_notuplets_gold_len) for r in with_ser) if with_ser else None
        ),
        "unparseable": sum(r.unparseable for r in scored),
        # soft errors of parseable predictions only (an unparseable one is already scored as empty)
        "soft_errors": sum(r.soft_errors for r in scored if not r.unparseable),
        "predictions_with_soft_errors": sum(r.soft_errors > 0 for r in scored if not r.unparseable),
    }


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    gold_dir, pred_dir = Path(args.gold), Path(args.pred)
    for label, folder in (("--gold", gold_dir), ("--pred", pred_dir)):
        if not folder.is_dir():
            print(f"error: {label} {folder} is not a folder", file=sys.stderr)
            return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    jobs = build_jobs(gold_dir, pred_dir, args.flavor)
    if not jobs:
        print(f"error: no gold MusicXML ({', '.join(GOLD_SUFFIXES)}) in {gold_dir}", file=sys.stderr)
        return 1

    progress = tqdm(total=len(jobs), desc="scoring", unit="system", file=sys.stderr)
    results: list[SampleScore] = []
    if args.workers == 1:
        for job in jobs:
            results.append(score_sample(job))
            progress.update()
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            for result in pool.imap_unordered(score_sample, jobs):
                results.append(result)
                progress.update()
    progress.close()
    results.sort(key=lambda r: r.name)

    summary = summarize(results, args.flavor)
    print(f"scored {summary['scored']} of {summary['samples']} systems")
    for name in summary["failed_gold"]:
        error = next(r.error for r in results if r.name == name)
        print(f"  gold could not be read: {name}: {error}")
    if summary["missing_predictions"]:
        print(f"missing predictions (scored as empty): {len(summary['missing_predictions'])}: "
              + ", ".join(summary["missing_predictions"][:10])
              + (" ..." if len(summary["missing_predictions"]) > 10 else ""))
    print(f"TEDn-{args.flavor}: {summary['tedn_percent']:.3f}%  "
          f"(edit {summary['edit_cost']} / gold {summary['gold_cost']})")
    if summary["ser_percent"] is not None:
        print(f"SER: {summary['ser_percent']:.3f}%  SERnotuplets: {summary['ser_notuplets_percent']:.3f}%  "
              f"(over {summary['ser_samples']} systems with gold tokens)")
    else:
        print("SER: n/a (no gold tokens could be found or made)")
    print(f"unparseable predictions: {summary['unparseable']}")
    print(f"soft delinearizer errors: {summary['soft_errors']} "
          f"(in {summary['predictions_with_soft_errors']} predictions)")
    if args.json:
        payload = {"summary": summary, "samples": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def paired_difference(before: dict[str, float], after: dict[str, float]) -> dict:
    """Per-system TEDn change from `before` to `after` over the systems both scored: how many got better
    and worse, the mean change and its standard error (points; negative is better). A leg is judged on
    the corpus figures; this says whether their difference is more than the noise of which systems moved."""
    ids = sorted(set(before) & set(after))
    if len(ids) < 2:
        raise ValueError(f"the two reports share {len(ids)} system(s); a paired comparison needs two or more")
    diffs = [after[i] - before[i] for i in ids]
    mean = sum(diffs) / len(diffs)
    se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    return {"systems": len(ids), "better": sum(d < 0 for d in diffs), "worse": sum(d > 0 for d in diffs),
            "mean_change": mean, "standard_error": se}


def _report_tedn(path: str) -> dict[str, float]:
    systems = json.loads(Path(path).read_text(encoding="utf-8")).get("systems", [])
    return {str(s["id"]): float(s["tedn"]) for s in systems if s.get("tedn") is not None}


def run_compare(args: argparse.Namespace) -> int:
    try:
        result = paired_difference(_report_tedn(args.before), _report_tedn(args.after))
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{result['systems']} systems: {result['better']} better, {result['worse']} worse, "
          f"TEDn change {result['mean_change']:+.2f} +- {result['standard_error']:.2f} points")
    return 0


def register(subparsers) -> None:
    from acai_omr.config import TednConfig

    compare = subparsers.add_parser(
        "compare", help="per-system TEDn change between two `eval model --json` reports (paired)",
        description="Systems better and worse from BEFORE to AFTER, and the mean change with its standard error.")
    compare.add_argument("before", help="report JSON of the weights compared against")
    compare.add_argument("after", help="report JSON of the new weights")
    compare.set_defaults(func=run_compare)

    parser = subparsers.add_parser(
        "score",
        help="TEDn and SER of predicted systems (.lmx or .musicxml) against gold MusicXML",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gold", required=True, help="folder of gold NAME.musicxml (and optional NAME.lmx)")
    parser.add_argument("--pred", required=True, help="folder of predicted NAME.lmx or NAME.musicxml")
    parser.add_argument("--flavor", choices=("lmx", "full"), default=TednConfig().flavor)
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1; TEDn takes ~10 ms a system)")
    parser.add_argument("--json", metavar="OUT", help="also write per-sample results and totals as JSON")
    parser.set_defaults(func=run_score)
