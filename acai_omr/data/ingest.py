"""Corpora -> piano-only MusicXML scores, one normalized file per piece, cached on disk.

Every source becomes a ``score-partwise`` with one two-staff piano part, so the
engravers and the linearizer see one shape whatever the corpus: Lieder ``.mxl``
lose their voice part; ``**kern`` goes through music21, whose two piano spines
are joined into one grand-staff part with voices numbered as MuseScore numbers
them (1-4 on the upper staff, 5-8 on the lower). A piece that fails is recorded
with its reason and skipped; nothing stops a build.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from acai_omr.lmx.musicxml import find_piano_part, parse_score_string, part_to_score, read_score, score_to_string

# corpus name -> (folder under the corpora root, file pattern)
CORPORA: dict[str, tuple[str, str]] = {
    "lieder": ("lieder", "*.mxl"),
    "polish-keyboard": ("polish/keyboard", "*.krn"),
    "polish-voice-piano": ("polish/voice-piano", "*.krn"),
    "chopin": ("chopin-first-editions", "*.krn"),
}
DEV_PERCENT = 5  # share of Polish files, and of Chopin works, held out for dev (by a stable hash)


@dataclass(frozen=True)
class Source:
    corpus: str
    piece_id: str
    path: Path
    split: str


def chopin_work(file_name: str) -> str:
    """The catalogue number a Chopin first-edition file belongs to ('028_1-12-...' -> '028')."""
    match = re.match(r"\d+", file_name)
    return match.group(0) if match else Path(file_name).stem


def _held_out(key: str) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100 < DEV_PERCENT


def list_sources(corpora_root: Path, split: str, corpora: tuple[str, ...] | None = None) -> list[Source]:
    """The pieces of one split: Lieder by its own train/dev folders, Polish by file, Chopin by work."""
    if split not in ("train", "dev"):
        raise ValueError(f"unknown split {split!r}: train or dev")
    corpora_root = Path(corpora_root)
    sources = []
    for corpus in corpora or tuple(CORPORA):
        folder, pattern = CORPORA[corpus]
        if corpus == "lieder":
            paths = sorted((corpora_root / folder / split).glob(pattern))
        else:
            key = chopin_work if corpus == "chopin" else (lambda name: name)
            paths = [p for p in sorted((corpora_root / folder).glob(pattern))
                     if _held_out(f"{corpus}/{key(p.name)}") == (split == "dev")]
        sources += [Source(corpus, p.stem, p, split) for p in paths]
    return sources


# ---------------------------------------------------------------- normalization

def piano_only_score(root: ET.Element) -> ET.Element:
    """A new score holding only the piano part (named by instrument, else the 2-staff part)."""
    return part_to_score(find_piano_part(root))


def number_voices_like_musescore(part: ET.Element) -> None:
    """Renumber voices per measure: upper staff 1, 2, ..., lower staff 5, 6, ... in order of appearance."""
    for measure in part.findall("measure"):
        mapping: dict[tuple[str, str], str] = {}
        used = {"1": 0, "2": 0}
        for note in measure.iter("note"):
            voice, staff = note.find("voice"), note.findtext("staff", "1").strip()
            if voice is None or staff not in used:
                continue
            key = (staff, (voice.text or "").strip())
            if key not in mapping:
                used[staff] += 1
                mapping[key] = str(min(used[staff], 4) + (4 if staff == "2" else 0))
            voice.text = mapping[key]


def kern_to_score(path: Path) -> ET.Element:
    """A ``**kern`` file through music21: the last two spines (the piano) as one grand-staff part."""
    import music21
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    parsed = music21.converter.parse(str(path), format="humdrum")
    parts = list(parsed.parts)
    if len(parts) < 2:
        raise ValueError(f"{len(parts)} spine(s): a piano needs two")
    grand = music21.stream.Score()
    staves = []
    for spine in parts[-2:]:  # music21 lists spines top to bottom: right hand, then left hand
        staff = music21.stream.PartStaff()
        for element in spine.elements:
            staff.insert(spine.elementOffset(element), element)
        staves.append(staff)
        grand.insert(0, staff)
    grand.insert(0, music21.layout.StaffGroup(staves, symbol="brace"))
    root = parse_score_string(GeneralObjectExporter(grand).parse(), source=str(path))
    score = piano_only_score(root)
    number_voices_like_musescore(score.find("part"))
    return score


def normalize(source: Source) -> ET.Element:
    """The piano-only score of one source; raises with a reason when the piece is unusable."""
    score = read_score(source.path) if source.path.suffix == ".mxl" else kern_to_score(source.path)
    score = piano_only_score(score) if source.path.suffix == ".mxl" else score
    part = score.find("part")
    staves = {(s.text or "").strip() for s in part.iter("staves")}
    if staves != {"2"}:
        raise ValueError(f"the piano part has staves {sorted(staves) or ['1']}, not 2")
    if not part.findall("measure"):
        raise ValueError("the piano part has no measures")
    return score


class NormalizedCache:
    """``<root>/<corpus>/<piece>.musicxml`` per normalized piece, ``.failed`` with the reason otherwise."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, source: Source) -> Path:
        return self.root / source.corpus / f"{source.piece_id}.musicxml"

    def piece_path(self, corpus: str, piece_id: str) -> Path:
        return self.root / corpus / f"{piece_id}.musicxml"

    def status(self, source: Source) -> str:
        """ok, failed, or missing (not normalized yet)."""
        if self.path(source).exists():
            return "ok"
        return "failed" if self.path(source).with_suffix(".failed").exists() else "missing"

    def reason(self, source: Source) -> str:
        failed = self.path(source).with_suffix(".failed")
        return failed.read_text() if failed.exists() else ""

    def store(self, source: Source) -> str:
        """Normalize one source into the cache; returns its status."""
        target = self.path(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = score_to_string(normalize(source))
        except Exception as error:  # any parser failure only skips this piece
            target.with_suffix(".failed").write_text(f"{type(error).__name__}: {error}"[:500])
            return "failed"
        partial = target.with_suffix(".tmp")
        partial.write_text(text)
        partial.replace(target)  # atomic: a killed build leaves no half-written score
        return "ok"


def _store(args: tuple[NormalizedCache, Source]) -> tuple[Source, str]:
    cache, source = args
    return source, cache.store(source)


def normalize_sources(sources: list[Source], cache: NormalizedCache, workers: int = 1,
                      progress: bool = True) -> Counter:
    """Normalize every source not yet in the cache (resumable); returns counts of ok / failed."""
    from tqdm import tqdm

    todo = [s for s in sources if cache.status(s) == "missing"]
    counts = Counter(cache.status(s) for s in sources if cache.status(s) != "missing")
    if todo:
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = list(tqdm(pool.imap_unordered(_store, [(cache, s) for s in todo]), total=len(todo),
                                    desc="normalize", disable=not progress))
        else:
            results = [_store((cache, s)) for s in tqdm(todo, desc="normalize", disable=not progress)]
        counts.update(status for _, status in results)
    return counts
