"""Ordered tree edit distance (Zhang & Shasha, 1989), distance only, compiled with numba.

TEDn needs the ordered tree edit distance between two MusicXML trees of a few
hundred nodes each. The `zss` package builds an edit-operation list for every
cell of its tables, which makes it take seconds per system; this module keeps
only the cost tables and runs the textbook keyroot / forest-distance recursion
in a compiled kernel over flat arrays:

- nodes are numbered in postorder;
- `leftmost[i]` is the postorder index of the leftmost leaf under node i;
- keyroots are the root plus every node that has a left sibling (equivalently,
  the highest-numbered node for each distinct leftmost leaf);
- every node carries a label id; costs are given per label (delete / insert)
  and per label pair (rename), so callers compute expensive label costs
  (Levenshtein of note codes) once per distinct pair, not per node pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, TypeVar

import numpy as np

from acai_omr.metrics._jit import jit

Node = TypeVar("Node")


@dataclass
class FlatTree:
    """A tree as postorder arrays, plus the distinct labels its label ids refer to."""

    labels: np.ndarray  # int64 [n]: label id of each node, in postorder
    leftmost: np.ndarray  # int64 [n]: postorder index of each node's leftmost leaf
    keyroots: np.ndarray  # int64 [k]: keyroot postorder indices, ascending
    label_values: list  # label id -> the label it stands for

    @property
    def size(self) -> int:
        return len(self.labels)

    @classmethod
    def build(
        cls,
        root: Node | None,
        children: Callable[[Node], Iterable[Node]],
        label: Callable[[Node], Hashable],
    ) -> "FlatTree":
        """Flatten a tree given its root, a children function and a label function.

        Iterative, so deep trees cannot hit the recursion limit. `root=None` is
        the empty tree.
        """
        label_ids: dict[Hashable, int] = {}
        labels: list[int] = []
        leftmost: list[int] = []
        if root is not None:
            # Each stack entry: (node, its children list, next child position, leftmost leaf so far).
            stack: list[list] = [[root, list(children(root)), 0, -1]]
            while stack:
                top = stack[-1]
                node, kids, position = top[0], top[1], top[2]
                if position < len(kids):
                    top[2] += 1
                    child = kids[position]
                    stack.append([child, list(children(child)), 0, -1])
                    continue
                stack.pop()
                index = len(labels)
                first_leaf = index if top[3] < 0 else top[3]
                labels.append(label_ids.setdefault(label(node), len(label_ids)))
                leftmost.append(first_leaf)
                if stack and stack[-1][3] < 0:
                    stack[-1][3] = first_leaf  # the first finished child fixes the parent's leftmost leaf
        leftmost_array = np.asarray(leftmost, dtype=np.int64)
        # A keyroot is the highest-numbered node for each distinct leftmost leaf.
        last_with_leftmost: dict[int, int] = {}
        for index, first_leaf in enumerate(leftmost):
            last_with_leftmost[first_leaf] = index
        keyroots = np.asarray(sorted(last_with_leftmost.values()), dtype=np.int64)
        values = [None] * len(label_ids)
        for value, label_id in label_ids.items():
            values[label_id] = value
        return cls(np.asarray(labels, dtype=np.int64), leftmost_array, keyroots, values)


@jit
def _zhang_shasha_kernel(left1, keyroots1, labels1, left2, keyroots2, labels2, delete, insert, rename):
    """Distance between two non-empty flat trees; costs are indexed by label id."""
    n1 = left1.shape[0]
    n2 = left2.shape[0]
    node_delete = np.empty(n1, dtype=np.int32)  # per-node costs, looked up once
    for i in range(n1):
        node_delete[i] = delete[labels1[i]]
    node_insert = np.empty(n2, dtype=np.int32)
    for j in range(n2):
        node_insert[j] = insert[labels2[j]]
    tree_dist = np.zeros((n1, n2), dtype=np.int32)
    forest = np.zeros((n1 + 1, n2 + 1), dtype=np.int32)
    for a in keyroots1:
        la = left1[a]
        rows = a - la + 2
        for b in keyroots2:
            lb = left2[b]
            cols = b - lb + 2
            first = forest[0]
            first[0] = 0
            for y in range(1, cols):
                first[y] = first[y - 1] + node_insert[lb + y - 1]
            for x in range(1, rows):
                i = la + x - 1
                li = left1[i]
                del_cost = node_delete[i]
                above = forest[x - 1]
                row = forest[x]
                row[0] = above[0] + del_cost
                td_row = tree_dist[i]
                if li == la:
                    # i is on the leftmost path of a: whole-tree cells where j is on b's leftmost path.
                    rename_row = rename[labels1[i]]
                    for y in range(1, cols):
                        j = lb + y - 1
                        best = above[y] + del_cost
                        candidate = row[y - 1] + node_insert[j]
                        if candidate < best:
                            best = candidate
                        lj = left2[j]
                        if lj == lb:
                            candidate = above[y - 1] + rename_row[labels2[j]]
                            if candidate < best:
                                best = candidate
                            td_row[j] = best
                        else:
                            candidate = forest[0, lj - lb] + td_row[j]
                            if candidate < best:
                                best = candidate
                        row[y] = best
                else:
                    # i's subtree ends before a's leftmost leaf path: reuse stored tree distances.
                    prefix = forest[li - la]
                    for y in range(1, cols):
                        j = lb + y - 1
                        best = above[y] + del_cost
                        candidate = row[y - 1] + node_insert[j]
                        if candidate < best:
                            best = candidate
                        candidate = prefix[left2[j] - lb] + td_row[j]
                        if candidate < best:
                            best = candidate
                        row[y] = best
    return tree_dist[n1 - 1, n2 - 1]


def tree_edit_distance(
    tree1: FlatTree,
    tree2: FlatTree,
    delete: np.ndarray,
    insert: np.ndarray,
    rename: np.ndarray,
) -> int:
    """Minimum cost to turn tree1 into tree2 (ordered trees, integer costs).

    delete[k]: cost of deleting a tree1 node with label id k;
    insert[k]: cost of inserting a tree2 node with label id k;
    rename[k1, k2]: cost of relabelling a tree1 label k1 into a tree2 label k2.
    """
    # int32 tables halve the memory traffic of the kernel; sums of node costs stay far below 2**31.
    delete = np.ascontiguousarray(delete, dtype=np.int32)
    insert = np.ascontiguousarray(insert, dtype=np.int32)
    rename = np.ascontiguousarray(rename, dtype=np.int32)
    if delete.shape != (len(tree1.label_values),) or insert.shape != (len(tree2.label_values),):
        raise ValueError("delete/insert cost arrays must have one entry per distinct label")
    if rename.shape != (len(tree1.label_values), len(tree2.label_values)):
        raise ValueError("rename cost matrix must be (labels of tree1) x (labels of tree2)")
    if tree1.size == 0:
        return int(insert[tree2.labels].sum(dtype=np.int64))
    if tree2.size == 0:
        return int(delete[tree1.labels].sum(dtype=np.int64))
    return int(
        _zhang_shasha_kernel(
            tree1.leftmost, tree1.keyroots, tree1.labels,
            tree2.leftmost, tree2.keyroots, tree2.labels,
            delete, insert, rename,
        )
    )
