"""Build a split: normalized pieces -> render units -> PNG shards and a manifest, resumable.

The work is cut into units (one engraver, its pieces, a seed); a unit's key
names it exactly, so a re-run skips what the manifest already holds. Each unit
renders in a worker process and comes back whole; the writer appends its rows
to ``manifest.jsonl`` in one write, then records the unit as done.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from acai_omr.config import DataBuildConfig
from acai_omr.data.ingest import NormalizedCache, list_sources, normalize_sources
from acai_omr.data.layout import LEFT_OUT_KINDS, UNMEASURED
from acai_omr.data.measures import BOUNDS_FILE
from acai_omr.data.musescore_render import render_batch
from acai_omr.data.verovio_render import VerovioEngraver, sample_options
from acai_omr.lmx import linearize_part, part_to_score, read_score, score_to_string
from acai_omr.lmx.clock import LONGEST_MEASURE_QUARTERS, measure_extents
from acai_omr.paths import shared_dir
from acai_omr.render.musescore import find_mscore

SHARD_SIZE = 1000  # images per shards/NNNNN/ folder


@dataclass(frozen=True)
class Unit:
    """One job of the build: an engraver, the (corpus, piece) pairs it renders, and its seed."""

    engraver: str  # verovio or musescore
    pieces: tuple[tuple[str, str], ...]
    seed: int

    @property
    def key(self) -> str:
        return f"{self.engraver}:{self.seed}:" + ",".join(f"{c}/{p}" for c, p in self.pieces)


@dataclass
class UnitResult:
    unit: Unit
    records: list[dict] = field(default_factory=list)  # manifest fields except image / musicxml paths
    images: list[np.ndarray] = field(default_factory=list)
    musicxml: list[str] = field(default_factory=list)  # the gold system as a one-part score
    errors: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # systems rendered but not kept, and why


_ENGRAVER = None  # one Verovio toolkit per worker process


def _verovio():
    global _ENGRAVER
    if _ENGRAVER is None:
        _ENGRAVER = VerovioEngraver()
    return _ENGRAVER


def _piece_rng(unit: Unit, corpus: str, piece: str) -> random.Random:
    return random.Random(f"{unit.seed}/{unit.engraver}/{corpus}/{piece}")


def run_unit(unit: Unit, cache_root: str, config: DataBuildConfig | None = None) -> UnitResult:
    """Render one unit; failures become error strings (never exceptions) so the build goes on."""
    config = config or DataBuildConfig()
    cache = NormalizedCache(Path(cache_root))
    result = UnitResult(unit)
    scores = []
    for corpus, piece in unit.pieces:
        try:
            scores.append(((corpus, piece), read_score(cache.piece_path(corpus, piece))))
        except Exception as error:
            result.errors.append(f"{corpus}/{piece}: unreadable normalized score: {error}")
    if unit.engraver == "verovio":
        rendered = []
        for (corpus, piece), score in scores:
            rng = _piece_rng(unit, corpus, piece)
            try:
                staff_space = round(rng.uniform(config.min_staff_space, config.max_staff_space), 2)
                dropped: list[str] = []
                rendered.append(((corpus, piece), _verovio().render_systems(
                    score, sample_options(rng), rng, staff_space, time_probability=config.time_probability,
                    left_out=dropped)))
                result.left_out += [f"{corpus}/{piece} {why}" for why in dropped]
            except Exception as error:
                rendered.append(((corpus, piece), f"verovio failed: {type(error).__name__}: {error}"))
    elif unit.engraver == "musescore":
        rng = random.Random(f"{unit.seed}/{unit.key}")
        dropped: list[list[str]] = [[] for _ in scores]
        try:
            outcomes = render_batch([score for _, score in scores], rng,
                                    time_probability=config.musescore_time_probability, left_out=dropped)
        except Exception as error:
            outcomes = [f"musescore failed: {type(error).__name__}: {error}"] * len(scores)
        result.left_out += [f"{corpus}/{piece} {why}" for ((corpus, piece), _), whys in zip(scores, dropped)
                            for why in whys]
        rendered = [(name, outcome) for (name, _), outcome in zip(scores, outcomes)]
    else:
        raise ValueError(f"unknown engraver {unit.engraver!r}")

    for (corpus, piece), systems in rendered:
        if isinstance(systems, str):
            result.errors.append(f"{corpus}/{piece}: {systems}")
            continue
        for system in systems:
            try:
                tokens = linearize_part(system.part, fail_on_unknown=False)
            except Exception as error:
                result.errors.append(f"{corpus}/{piece} system {system.options.get('system')}: {error}")
                continue
            longest = max((peak for peak, _ in measure_extents(tokens)), default=0)
            if longest > LONGEST_MEASURE_QUARTERS:  # it would teach the decoder the loops it must not write
                result.left_out.append(f"{corpus}/{piece} system {system.options.get('system')}: an "
                                       f"{UNMEASURED} ({float(longest):g} quarters in one measure)")
                continue
            index = len(result.records)
            result.records.append({
                "id": f"{unit.engraver}-s{unit.seed}-{corpus}-{piece}-{system.options.get('system', index):03d}",
                "lmx": " ".join(tokens), "source": f"{corpus}/{piece}", "corpus": corpus,
                "engraver": unit.engraver, "options": system.options, "unit": unit.key,
                "width": int(system.image.shape[1]), "height": int(system.image.shape[0]),
            })
            if system.notes is not None:  # noteheads and rests as [x, y, label] (image px)
                result.records[-1]["notes"] = [list(note) for note in system.notes]
            result.images.append(system.image)
            result.musicxml.append(score_to_string(part_to_score(system.part, part_id="P2")))
    return result


class SplitWriter:
    """Appends rendered units to ``<split>/manifest.jsonl`` and ``shards/``; knows which units are done."""

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = self.split_dir / "manifest.jsonl"
        self.done_file = self.split_dir / "units.done"
        self.count = 0
        self.done: set[str] = set()
        self._recover()

    def _recover(self) -> None:
        """Drop a line cut off by a kill; count the rows; units done = listed or present in the manifest."""
        if self.manifest.exists():
            text = self.manifest.read_text()
            if text and not text.endswith("\n"):
                text = text[: text.rfind("\n") + 1]
                self.manifest.write_text(text)
            for line in text.splitlines():
                if line.strip():
                    self.count += 1
                    self.done.add(json.loads(line).get("unit", ""))
        if self.done_file.exists():
            self.done |= set(self.done_file.read_text().split("\n"))
        self.done.discard("")

    def write(self, result: UnitResult) -> int:
        """Store the unit's images, gold MusicXML and rows; returns how many systems it added."""
        lines = []
        for record, image, xml in zip(result.records, result.images, result.musicxml):
            shard = f"shards/{self.count // SHARD_SIZE:05d}"
            (self.split_dir / shard).mkdir(parents=True, exist_ok=True)
            name = record["id"]
            cv2.imwrite(str(self.split_dir / shard / f"{name}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
            (self.split_dir / shard / f"{name}.musicxml").write_text(xml)
            lines.append(json.dumps({**record, "image": f"{shard}/{name}.png",
                                     "musicxml": f"{shard}/{name}.musicxml"}) + "\n")
            self.count += 1
        with self.manifest.open("a") as handle:
            handle.write("".join(lines))
        with self.done_file.open("a") as handle:
            handle.write(result.unit.key + "\n")
        self.done.add(result.unit.key)
        return len(lines)


# ---------------------------------------------------------------- the whole build

def plan_units(pieces: list[tuple[str, str]], config: DataBuildConfig, musescore: bool, passes: int):
    """Render units pass after pass over the shuffled pieces; each pass re-engraves them with new settings."""
    for rendering_pass in range(passes):
        order = list(pieces)
        random.Random(f"{config.seed}/{rendering_pass}").shuffle(order)
        share = config.musescore_share if musescore else 0.0
        cut = round(len(order) * share)
        batch = max(1, config.musescore_batch)
        seed = config.seed * 1000 + rendering_pass
        units = [Unit("musescore", tuple(order[start: min(cut, start + batch)]), seed)
                 for start in range(0, cut, batch)]
        units += [Unit("verovio", (piece,), seed) for piece in order[cut:]]
        # interleave engravers and corpora, so a build stopped at any size holds the same mix
        random.Random(f"{config.seed}/{rendering_pass}/units").shuffle(units)
        yield from units


def _run_unit_args(args):
    return run_unit(*args)


def build_split(config: DataBuildConfig, progress: bool = True, max_passes: int = 50) -> dict:
    """Normalize the split's pieces, then render units until the split holds ``config.systems`` systems."""
    from tqdm import tqdm

    out = Path(config.out)
    cache = NormalizedCache(Path(config.cache) if config.cache else out / "cache" / "normalized")
    corpora = tuple(c.strip() for c in config.corpora.split(",") if c.strip())
    sources = list_sources(shared_dir() / "corpora", config.split, corpora)
    normalized = normalize_sources(sources, cache, workers=config.workers, progress=progress)
    failures = {f"{s.corpus}/{s.piece_id}": cache.reason(s) for s in sources if cache.status(s) == "failed"}
    pieces = [(s.corpus, s.piece_id) for s in sources if cache.status(s) == "ok"]
    if not pieces:
        raise RuntimeError(f"no usable pieces for split {config.split!r} ({len(failures)} failed to parse)")

    writer = SplitWriter(out / config.split)
    errors_log = (out / config.split / "errors.log").open("a")
    musescore = find_mscore() is not None
    units = (u for u in plan_units(pieces, config, musescore, max_passes) if u.key not in writer.done)
    bar = tqdm(total=config.systems, initial=min(writer.count, config.systems), desc=f"render {config.split}",
               unit="system", disable=not progress, file=sys.stderr)
    errors = 0
    left_out: Counter[str] = Counter()

    def consume(results):
        nonlocal errors
        for result in results:
            added = writer.write(result)
            errors += len(result.errors)
            left_out.update(_left_out_kind(why) for why in result.left_out)
            for line in result.errors + [f"left out: {why}" for why in result.left_out]:
                errors_log.write(line + "\n")
            errors_log.flush()
            bar.update(min(added, max(0, config.systems - bar.n)))
            if writer.count >= config.systems:
                return

    def tasks():
        for unit in units:
            if writer.count >= config.systems:
                return
            yield (unit, str(cache.root), config)

    if config.workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(config.workers) as pool:
            consume(pool.imap(_run_unit_args, tasks(), chunksize=1))
            pool.terminate()
    else:
        consume(map(_run_unit_args, tasks()))
    bar.close()
    errors_log.close()
    return {"split": config.split, "systems": writer.count, "pieces": len(pieces), "normalized": dict(normalized),
            "parse_failures": len(failures), "render_errors": errors, "left_out": dict(left_out)}


def _left_out_kind(why: str) -> str:
    """The build summary counts rendered systems it did not keep by why (the log has each one)."""
    return next((kind for kind in LEFT_OUT_KINDS if kind in why), "other")


# ---------------------------------------------------------------- mixing built splits


def merge_splits(roots: list[Path], out: Path, split: str = "train") -> dict:
    """One split made of several built ones (e.g. the Lieder split and a piano-solo one), without copying images.

    The merged manifest points at each root's files by relative path, so a trainer
    takes `--data <out>` as it takes any root; the roots' cached barlines come along,
    so the merged split is not scanned again. Ids must not repeat across roots.
    Returns the systems taken from each root.
    """
    target = Path(out) / split
    target.mkdir(parents=True, exist_ok=True)
    rows, bounds, seen, counts = [], [], set(), {}
    for root in roots:
        source = Path(root) / split
        manifest = source / "manifest.jsonl"
        if not manifest.exists():
            raise FileNotFoundError(f"no manifest at {manifest}")
        offset = Path(os.path.relpath(source.resolve(), target.resolve()))
        taken = 0
        for line in manifest.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record["id"] in seen:
                raise ValueError(f"system id {record['id']} is in more than one of {', '.join(map(str, roots))}")
            seen.add(record["id"])
            for key in ("image", "musicxml"):
                if record.get(key):
                    record[key] = str(offset / record[key])
            rows.append(json.dumps(record) + "\n")
            taken += 1
        counts[str(root)] = taken
        if (source / BOUNDS_FILE).exists():
            bounds.append((source / BOUNDS_FILE).read_text(encoding="utf-8"))
    (target / "manifest.jsonl").write_text("".join(rows), encoding="utf-8")
    (target / BOUNDS_FILE).write_text("".join(text if text.endswith("\n") or not text else text + "\n"
                                              for text in bounds), encoding="utf-8")
    return counts
