"""TEDn computed the slow, obvious way with the `zss` package (a dev dependency).

Used only to cross-check the compiled kernel (tests, bench/bench_tedn.py): it
takes the same pruned parts and note codes as `tedn`, builds plain node
objects and lets `zss.distance` evaluate the cost model from per-node
callbacks, which is how the reference implementation computes TEDn.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from acai_omr.metrics.tedn import TednResult, _NoteCoder, _text, _tree_children, prune


@dataclass
class ZssNode:
    tag: str
    text: str
    children: list["ZssNode"] = field(default_factory=list)


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for x, char_a in enumerate(a, 1):
        current = [x]
        for y, char_b in enumerate(b, 1):
            current.append(min(previous[y] + 1, current[y - 1] + 1, previous[y - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _insert(node: ZssNode) -> int:
    return 1 + len(node.text) if node.tag == "note" else 1


def _remove(node: ZssNode) -> int:
    return 1


def _update(a: ZssNode, b: ZssNode) -> int:
    cost = 0 if a.tag == b.tag else 1
    if a.tag == "note" or b.tag == "note":
        return cost + _levenshtein(a.text, b.text)
    return cost + (a.text != b.text)


def to_zss_tree(root: ET.Element, coder: _NoteCoder) -> ZssNode:
    """The TEDn tree (filtered children, notes replaced by their codes) as plain nodes."""
    codes = {id(note): coder.code(note) for note in root.iter("note")}

    def convert(element: ET.Element) -> ZssNode:
        text = codes[id(element)] if element.tag == "note" else _text(element)
        return ZssNode(element.tag, text, [convert(child) for child in _tree_children(element)])

    return convert(root)


def zss_trees(pred_part: ET.Element, gold_part: ET.Element, flavor: str = "lmx") -> tuple[ZssNode, ZssNode]:
    """Prediction and gold trees exactly as `tedn` sees them (gold coded first)."""
    if flavor == "lmx":
        pred_part, gold_part = copy.deepcopy(pred_part), copy.deepcopy(gold_part)
        prune(pred_part)
        prune(gold_part)
    coder = _NoteCoder()
    gold = to_zss_tree(gold_part, coder)
    pred = to_zss_tree(pred_part, coder)
    return pred, gold


def zss_distance(pred: ZssNode, gold: ZssNode) -> int:
    import zss

    distance = zss.distance(
        pred, gold, lambda node: node.children, insert_cost=_insert, remove_cost=_remove, update_cost=_update
    )
    return int(distance)


def tedn_zss(pred_part: ET.Element, gold_part: ET.Element, flavor: str = "lmx") -> TednResult:
    """TEDn with zss doing the tree edit distance, for both edit and gold cost (as the reference)."""
    pred, gold = zss_trees(pred_part, gold_part, flavor)
    return TednResult(edit_cost=zss_distance(pred, gold), gold_cost=zss_distance(ZssNode(gold.tag, ""), gold))
