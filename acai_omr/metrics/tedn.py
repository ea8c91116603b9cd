"""TEDn: normalized tree edit distance between a predicted and a gold MusicXML part.

Re-implemented from docs/lmx-tedn-spec.md §4 (Mayer et al., ICDAR 2024), with
the same values as the reference (zss + Levenshtein) but a compiled
Zhang–Shasha kernel, so one system takes milliseconds instead of seconds.

The pieces, in the order the data goes through them:

1. `prepare_gold`: canonical text, one part, durations as fractions of a quarter.
2. `prune` (flavour "lmx" only, both sides): drop what LMX cannot express.
3. `_NoteCoder`: every <note> becomes one node whose text codes pitch, voice,
   type and stem; gold notes are coded first, so pitch letters are assigned in
   order of first appearance, gold before prediction.
4. `_build_tree`: filter children, flatten to postorder arrays.
5. Cost model (prediction = source, gold = target): insert a gold note costs
   1 + len(code), any other insert or delete 1; a rename costs 1 for a tag
   change plus the Levenshtein distance of the codes when a note is involved,
   else 1 if the stripped texts differ.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from acai_omr.lmx.delinearize import delinearize
from acai_omr.lmx.musicxml import parse_score_string, read_score
from acai_omr.metrics._jit import jit
from acai_omr.metrics.zhang_shasha import FlatTree, tree_edit_distance

FLAVORS = ("lmx", "full")


@dataclass
class TednResult:
    """Edit cost of one prediction and the cost of building its gold from nothing."""

    edit_cost: int
    gold_cost: int

    @property
    def value(self) -> float:
        """edit_cost / gold_cost (can exceed 1: extra predicted nodes cost too)."""
        if self.gold_cost == 0:
            return 0.0 if self.edit_cost == 0 else float("inf")
        return self.edit_cost / self.gold_cost


def corpus_tedn(results: Iterable[TednResult]) -> float:
    """Micro-averaged TEDn in percent: Σ edit_cost / Σ gold_cost × 100."""
    edit = gold = 0
    for result in results:
        edit += result.edit_cost
        gold += result.gold_cost
    if gold == 0:
        return 0.0 if edit == 0 else float("inf")
    return 100.0 * edit / gold


# --------------------------------------------------------------------------
# Gold preparation


def _strip_texts(root: ET.Element) -> None:
    """What ET.canonicalize(strip_text=True) does to text: strip it, whitespace-only becomes none."""
    for element in root.iter():
        if element.text is not None:
            element.text = element.text.strip() or None
        if element.tail is not None:
            element.tail = element.tail.strip() or None


def _durations_to_fractions(part: ET.Element) -> None:
    """Divide each note/forward/backup <duration> by the <divisions> in force; delete <divisions>.

    The results are str(Fraction) strings ("3/2", "1"), the same form the
    delinearizer writes with fractional durations, so equal durations compare equal.
    """
    divisions: int | None = None
    for measure in part:
        for element in measure:
            if element.tag == "attributes":
                divisions_element = element.find("divisions")
                if divisions_element is not None:
                    try:
                        divisions = int((divisions_element.text or "").strip())
                    except ValueError:
                        raise ValueError(f"gold <divisions> is not an integer: {divisions_element.text!r}") from None
                    if divisions <= 0:
                        raise ValueError(f"gold <divisions> must be positive, got {divisions}")
                    element.remove(divisions_element)
            elif element.tag in ("note", "forward", "backup"):
                duration = element.find("duration")
                if duration is None:
                    continue
                if divisions is None:
                    raise ValueError("gold has a <duration> before any <divisions>")
                try:
                    value = Fraction((duration.text or "").strip())
                except ValueError:
                    raise ValueError(f"gold <duration> is not a number: {duration.text!r}") from None
                duration.text = str(value / divisions)


def prepare_gold(gold: str | Path | ET.Element) -> ET.Element:
    """The gold <part> in the form TEDn compares: stripped text, fractional durations.

    `gold` is a MusicXML file path, an XML string, or an Element: a
    `score-partwise` (which must hold exactly one <part>) or a <part>. A <part>
    with no <divisions> anywhere is taken as already prepared (its durations are
    kept as they are), so preparing twice is harmless. The input is not modified.
    """
    if isinstance(gold, ET.Element):
        root = copy.deepcopy(gold)
    elif isinstance(gold, (str, Path)):
        if isinstance(gold, str) and gold.lstrip().startswith("<"):
            root = parse_score_string(gold, source="gold")
        else:
            root = read_score(gold)  # .musicxml, .xml or .mxl; MusicXMLError (a ValueError) if unusable
    else:
        raise TypeError(f"gold must be a path, an XML string or an Element, not {type(gold).__name__}")

    if root.tag == "score-partwise":
        parts = root.findall("part")
        if len(parts) != 1:
            raise ValueError(f"gold score-partwise must have exactly one <part>, found {len(parts)}")
        part = parts[0]
    elif root.tag == "part":
        part = root
        if part.find(".//divisions") is None:
            _strip_texts(part)
            return part
    else:
        raise ValueError(f"gold root must be <score-partwise> or <part>, not <{root.tag}>")
    _strip_texts(part)
    _durations_to_fractions(part)
    return part


# --------------------------------------------------------------------------
# Pruning (flavour "lmx"): remove from both sides what LMX cannot express.

_PRUNED_UNDER_MEASURE = frozenset(
    {"sound", "listening", "figured-bass", "bookmark", "grouping", "print", "direction", "barline", "harmony"}
)
_PRUNED_UNDER_NOTE = frozenset({"cue", "lyric", "instrument", "play", "listen", "notehead-text", "notehead"})
_PRUNED_UNDER_ATTRIBUTES = frozenset({"instruments", "staff-details", "measure-style", "directive", "part-symbol"})
_KEPT_IN_TIME_MODIFICATION = frozenset({"actual-notes", "normal-notes"})
_KEPT_IN_NOTATIONS = frozenset({"tied", "slur", "tuplet", "ornaments", "articulations", "fermata", "arpeggiate"})
_KEPT_IN_ARTICULATIONS = frozenset({"staccato", "accent", "strong-accent", "tenuto"})
_KEPT_IN_ORNAMENTS = frozenset({"tremolo", "trill-mark"})


def _remove_children(element: ET.Element, keep) -> None:
    for child in [child for child in element if not keep(child.tag)]:
        element.remove(child)


def _prune_note(note: ET.Element) -> None:
    # Like the reference, only the first <rest>, <time-modification> and <notations> are
    # cleaned; MuseScore writes at most one of each.
    _remove_children(note, lambda tag: tag not in _PRUNED_UNDER_NOTE)
    rest = note.find("rest")
    if rest is not None:
        rest[:] = []
    time_modification = note.find("time-modification")
    if time_modification is not None:
        _remove_children(time_modification, _KEPT_IN_TIME_MODIFICATION.__contains__)
    notations = note.find("notations")
    if notations is None:
        return
    _remove_children(notations, _KEPT_IN_NOTATIONS.__contains__)
    for element in list(notations):
        if element.tag == "tuplet":
            element[:] = []
        elif element.tag == "articulations":
            _remove_children(element, _KEPT_IN_ARTICULATIONS.__contains__)
            for articulation in element:
                articulation.clear()
        elif element.tag == "ornaments":
            _remove_children(element, _KEPT_IN_ORNAMENTS.__contains__)
            for ornament in element:
                if ornament.tag == "trill-mark":
                    ornament.clear()
        if element.tag in ("articulations", "ornaments") and len(element) == 0:
            notations.remove(element)
    if len(notations) == 0:
        note.remove(notations)


def prune(part: ET.Element) -> None:
    """Apply the "lmx" flavour pruning to a <part>, in place (spec §4.1 step 3).

    Durations are kept (forward/backup need them); <key><mode>, <transpose>,
    <clef-octave-change> and <forward><voice|staff> are not pruned, as in the reference.
    """
    for measure in part:
        if measure.tag != "measure":
            continue
        _remove_children(measure, lambda tag: tag not in _PRUNED_UNDER_MEASURE)
        for element in measure:
            if element.tag == "note":
                _prune_note(element)
            elif element.tag == "attributes":
                _remove_children(element, lambda tag: tag not in _PRUNED_UNDER_ATTRIBUTES)


# --------------------------------------------------------------------------
# Note codes

# The reference's pitch alphabet (169 symbols, capital R skipped because R means rest).
# It contains "~" (the missing-pitch code) at position 90 and "-" (the missing-stem code)
# at position 71; letters are compared inside Levenshtein, so these collisions are kept for
# identical values. Past the 169th distinct pitch the reference raises; we continue with
# private-use characters instead, which cannot collide with anything.
PITCH_ALPHABET = (
    "0123456789"
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQ"
    "STUVWXYZ"
    ".,!?:;/\\|-_=+><[]{}()*&^%$#@~`"
    "áčďéěíňóřšťúůýžäëïöüÿ"
    "ÁČĎÉĚÍŇÓŘŠŤÚŮÝŽÄËÏÖÜŸ"
    "бгґдєйжилпфцчшщьюя"
    "БГҐДЄЙЖИЛПФЦЧШЩЬЮЯ"
)
assert len(PITCH_ALPHABET) == 169
_EXTRA_PITCH_SYMBOLS_START = 0xE000

_TYPE_DIGITS = {
    "1024th": "0", "512th": "0", "256th": "0", "128th": "0", "64th": "1", "32nd": "2", "16th": "3",
    "eighth": "4", "quarter": "5", "half": "6", "whole": "7", "breve": "8", "long": "9", "maxima": "9",
}
_STEM_LETTERS = {"up": "U", "down": "D", "none": "N"}
_UNKNOWN_CODE = "?"  # an unknown <type> or <stem> value (the reference crashes on these)
_CODED_NOTE_CHILDREN = frozenset({"pitch", "voice", "type", "stem"})


def _text(element: ET.Element | None) -> str:
    return "" if element is None or element.text is None else element.text.strip()


class _NoteCoder:
    """Turns a <note> into its code: pitch symbol, voice, type digit, stem letter.

    One coder is shared by gold and prediction, so the same (step, alter,
    octave) gets the same symbol on both sides.
    """

    def __init__(self) -> None:
        self.pitch_symbols: dict[tuple[str, str, str], str] = {}

    def _pitch_symbol(self, pitch: ET.Element) -> str:
        key = (
            _text(pitch.find("step")) or "C",
            _text(pitch.find("alter")) or "0",
            _text(pitch.find("octave")) or "0",
        )
        symbol = self.pitch_symbols.get(key)
        if symbol is None:
            n = len(self.pitch_symbols)
            symbol = PITCH_ALPHABET[n] if n < len(PITCH_ALPHABET) else chr(_EXTRA_PITCH_SYMBOLS_START + n)
            self.pitch_symbols[key] = symbol
        return symbol

    def code(self, note: ET.Element) -> str:
        if note.find("rest") is not None:
            pitch_code = "R"
        else:
            pitch = note.find("pitch")
            pitch_code = "~" if pitch is None else self._pitch_symbol(pitch)
        voice_code = _text(note.find("voice")) or "1"
        type_text = _text(note.find("type"))
        type_code = _TYPE_DIGITS.get(type_text, _UNKNOWN_CODE) if type_text else "7"
        stem = note.find("stem")
        stem_code = "-" if stem is None else _STEM_LETTERS.get(_text(stem), _UNKNOWN_CODE)
        return pitch_code + voice_code + type_code + stem_code


# --------------------------------------------------------------------------
# Trees and costs

_FILTERED_EVERYWHERE = frozenset({"footnote", "level"})
_FILTERED_UNDER = {
    "score-partwise": frozenset(
        {"work", "movement-number", "movement-title", "identification", "defaults", "credit", "part-list"}
    ),
    "measure": frozenset({"print", "sound", "listening"}),
    "note": frozenset({"duration", "listen", "play", "tie"}) | _CODED_NOTE_CHILDREN,
}


def _tree_children(element: ET.Element) -> list[ET.Element]:
    filtered = _FILTERED_UNDER.get(element.tag, frozenset())
    return [c for c in element if c.tag not in _FILTERED_EVERYWHERE and c.tag not in filtered]


def _build_tree(root: ET.Element, coder: _NoteCoder) -> FlatTree:
    """Flatten a part; labels are (tag, text) with a note's text replaced by its code."""
    codes = {id(note): coder.code(note) for note in root.iter("note")}

    def label(element: ET.Element) -> tuple[str, str]:
        if element.tag == "note":
            return ("note", codes[id(element)])
        return (element.tag, _text(element))

    return FlatTree.build(root, _tree_children, label)


@jit
def _levenshtein(a, a_len, b, b_len, row):
    """Levenshtein distance of two code-point arrays, using `row` (>= b_len + 1) as scratch."""
    for y in range(b_len + 1):
        row[y] = y
    for x in range(1, a_len + 1):
        diagonal = row[0]
        row[0] = x
        for y in range(1, b_len + 1):
            above = row[y]
            best = diagonal + (0 if a[x - 1] == b[y - 1] else 1)
            if above + 1 < best:
                best = above + 1
            if row[y - 1] + 1 < best:
                best = row[y - 1] + 1
            row[y] = best
            diagonal = above
    return row[b_len]


@jit
def _rename_costs(tags1, texts1, chars1, lengths1, notes1, tags2, texts2, chars2, lengths2, notes2):
    """Rename cost for every (prediction label, gold label) pair."""
    n1 = tags1.shape[0]
    n2 = tags2.shape[0]
    costs = np.zeros((n1, n2), dtype=np.int64)
    row = np.zeros(chars2.shape[1] + 1, dtype=np.int64)
    for p in range(n1):
        for g in range(n2):
            cost = 0 if tags1[p] == tags2[g] else 1
            if notes1[p] or notes2[g]:
                cost += _levenshtein(chars1[p], lengths1[p], chars2[g], lengths2[g], row)
            elif texts1[p] != texts2[g]:
                cost += 1
            costs[p, g] = cost
    return costs


def _label_arrays(labels: list[tuple[str, str]], tag_ids: dict, text_ids: dict):
    """Per distinct label: tag id, text id, padded code points, text length, is-note flag."""
    n = len(labels)
    width = max((len(text) for _, text in labels), default=0)
    chars = np.zeros((n, max(width, 1)), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    tags = np.zeros(n, dtype=np.int64)
    texts = np.zeros(n, dtype=np.int64)
    notes = np.zeros(n, dtype=np.bool_)
    for k, (tag, text) in enumerate(labels):
        tags[k] = tag_ids.setdefault(tag, len(tag_ids))
        texts[k] = text_ids.setdefault(text, len(text_ids))
        notes[k] = tag == "note"
        lengths[k] = len(text)
        chars[k, : len(text)] = [ord(ch) for ch in text]
    return tags, texts, chars, lengths, notes


def _costs(pred: FlatTree, gold: FlatTree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tag_ids: dict[str, int] = {}
    text_ids: dict[str, int] = {}
    tags1, texts1, chars1, lengths1, notes1 = _label_arrays(pred.label_values, tag_ids, text_ids)
    tags2, texts2, chars2, lengths2, notes2 = _label_arrays(gold.label_values, tag_ids, text_ids)
    rename = _rename_costs(tags1, texts1, chars1, lengths1, notes1, tags2, texts2, chars2, lengths2, notes2)
    delete = np.ones(len(pred.label_values), dtype=np.int64)
    insert = np.where(notes2, 1 + lengths2, 1).astype(np.int64)
    return delete, insert, rename


def tedn(pred_part: ET.Element, gold_part: ET.Element, flavor: str = "lmx") -> TednResult:
    """TEDn of a predicted <part> against a prepared gold <part> (see `prepare_gold`).

    Neither input is modified. Both are expected to carry durations as fraction
    strings (the delinearizer's fractional mode and `prepare_gold` do this).
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, not {flavor!r}")
    if not isinstance(pred_part, ET.Element) or not isinstance(gold_part, ET.Element):
        raise TypeError("tedn compares two ElementTree elements; use tedn_lmx for LMX tokens")
    if pred_part.tag != gold_part.tag:
        raise ValueError(f"cannot compare <{pred_part.tag}> with <{gold_part.tag}>")
    if flavor == "lmx":
        pred_part, gold_part = copy.deepcopy(pred_part), copy.deepcopy(gold_part)
        prune(pred_part)
        prune(gold_part)
    coder = _NoteCoder()
    gold_tree = _build_tree(gold_part, coder)  # gold first: it gets the first pitch symbols
    pred_tree = _build_tree(pred_part, coder)
    delete, insert, rename = _costs(pred_tree, gold_tree)
    edit_cost = tree_edit_distance(pred_tree, gold_tree, delete, insert, rename)
    gold_root_text = gold_tree.label_values[gold_tree.labels[-1]][1]
    gold_cost = int(insert[gold_tree.labels[:-1]].sum()) + (1 if gold_root_text else 0)
    return TednResult(edit_cost=edit_cost, gold_cost=gold_cost)


# --------------------------------------------------------------------------
# LMX predictions


def _tokens(lmx: str | Sequence[str]) -> list[str]:
    if isinstance(lmx, str):
        return lmx.split()
    return [str(token) for token in lmx]


def _delinearize(tokens: list[str]):
    """Delinearize with fractional durations; returns (part or None, n_errors, unparseable)."""
    try:
        result = delinearize(tokens, fractional_durations=True)
    except Exception:  # a delinearizer crash scores like the reference: an empty prediction
        return None, 0, True
    if result.unparseable or result.part is None:
        return None, len(result.errors), True
    return result.part, len(result.errors), False


def well_formedness(lmx: str | Sequence[str]) -> tuple[bool, int]:
    """(unparseable, number of soft errors the delinearizer logged) for one LMX sequence."""
    _, n_errors, unparseable = _delinearize(_tokens(lmx))
    return unparseable, n_errors


def tedn_lmx(pred_lmx: str | Sequence[str], gold: str | Path | ET.Element, flavor: str = "lmx") -> TednResult:
    """TEDn of predicted LMX tokens against gold MusicXML (path, XML string or Element).

    An unparseable prediction is scored as an empty <part>, so edit_cost = gold_cost.
    """
    gold_part = prepare_gold(gold)
    pred_part, _, _ = _delinearize(_tokens(pred_lmx))
    if pred_part is None:
        pred_part = ET.Element(gold_part.tag)
    return tedn(pred_part, gold_part, flavor=flavor)
