"""Label taxonomies: hierarchical classes such as ``sports/ball/soccer``.

A hierarchical model's classes are the tree's **leaves**, named by their full
paths (``FALConfig.id2label`` holds ``"sports/ball/soccer"``, ...;
``FALConfig.hierarchical`` is True). Its head is an ordinary softmax over the
leaves, and an inner node's score is the sum of the scores of the leaves under
it, so predictions are consistent by construction: a child never scores above
its parent, and the scores of a level sum to 1.

Training uses the tree (:func:`hierarchical_loss`): a video labelled at any
node (a leaf, or an inner node such as ``sports/ball`` when nobody said which
ball game) counts at every level from the root down to that node, with the loss
``-log P(node)`` of each, averaged. So a dataset may label at any depth, and
coarse labels still teach the leaves' shared features.

A taxonomy file is either

* **paths**, one per line: ``sports/ball/soccer`` (inner nodes are implied by
  the paths; a line naming an inner node is allowed and adds nothing), or
* **parent-child pairs**, one per line, ``parent,child`` (or tab-separated), or
  a JSON object ``{"child": "parent", ...}`` or a JSON list of paths.

Blank lines and lines starting with ``#`` are ignored. Names may not contain
``/`` (the path separator) and every node has one parent.

Nothing here imports torch: the labeling workers and the CLI's option checks
read taxonomies too; :func:`hierarchical_loss` imports it when called.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from falv.errors import ConfigError

__all__ = ["SEPARATOR", "Taxonomy", "read_taxonomy", "hierarchical_loss"]

SEPARATOR = "/"


def _depth(path: str) -> int:
    return path.count(SEPARATOR) + 1


def _prefixes(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``."""
    parts = path.split(SEPARATOR)
    return [SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def _check_path(path: str, where: str) -> str:
    path = path.strip()
    parts = path.split(SEPARATOR)
    if not path or any(not p.strip() or p != p.strip() for p in parts):
        raise ConfigError(f"{where}: {path!r} is not a taxonomy path (names separated by '/', none empty)")
    return path


@dataclass(frozen=True)
class Taxonomy:
    """A tree of labels, given by its leaves' paths in class order.

    ``nodes`` lists every node: the leaves first (index ``i`` < ``num_leaves`` is the
    model's class ``i``), then the inner nodes, shallowest first. Training data labelled
    at any node uses these indices (:meth:`resolve` maps a dataset's label to a node)."""

    leaves: tuple[str, ...]
    nodes: tuple[str, ...] = field(init=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        leaves = tuple(_check_path(str(p), "taxonomy") for p in self.leaves)
        if not leaves:
            raise ConfigError("a taxonomy needs at least one leaf")
        if len(set(leaves)) != len(leaves):
            raise ConfigError(f"the taxonomy repeats leaves: {sorted({p for p in leaves if leaves.count(p) > 1})[:5]}")
        inner: list[str] = []
        for leaf in leaves:
            for prefix in _prefixes(leaf)[:-1]:
                if prefix not in inner:
                    inner.append(prefix)
        clash = sorted(set(inner) & set(leaves))
        if clash:
            raise ConfigError(f"{clash[0]!r} is both a leaf and the parent of other labels; a hierarchical model's "
                              "classes are the leaves (an inner node is the union of its children)")
        inner.sort(key=_depth)  # stable: shallowest first, in order of appearance
        object.__setattr__(self, "leaves", leaves)
        object.__setattr__(self, "nodes", leaves + tuple(inner))
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.nodes)})

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> Taxonomy:
        """From node paths in any order: the leaves are the paths no other path extends."""
        paths = [_check_path(str(p), "taxonomy") for p in paths]
        unique = list(dict.fromkeys(paths))
        prefixes = {pre for p in unique for pre in _prefixes(p)[:-1]}
        return cls(tuple(p for p in unique if p not in prefixes))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Taxonomy:
        """From ``(parent, child)`` name pairs; roots are the parents nobody's children."""
        parent: dict[str, str] = {}
        order: list[str] = []
        for p, c in pairs:
            p, c = str(p).strip(), str(c).strip()
            for name in (p, c):
                if not name or SEPARATOR in name:
                    raise ConfigError(f"taxonomy: {name!r} is not a node name (names may not be empty or contain '/')")
                if name not in order:
                    order.append(name)
            if c in parent and parent[c] != p:
                raise ConfigError(f"taxonomy: {c!r} has two parents ({parent[c]!r} and {p!r})")
            if p == c:
                raise ConfigError(f"taxonomy: {c!r} is its own parent")
            parent[c] = p

        def path(name: str) -> str:
            chain = [name]
            while chain[-1] in parent:
                chain.append(parent[chain[-1]])
                if chain[-1] in chain[:-1]:
                    raise ConfigError(f"taxonomy: a cycle through {chain[-1]!r}")
            return SEPARATOR.join(reversed(chain))

        return cls.from_paths(path(n) for n in order)

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> Taxonomy:
        """The taxonomy of a hierarchical model's classes (its leaves' paths, in class order)."""
        return cls(tuple(labels))

    # -- structure -----------------------------------------------------------------------------------

    @property
    def num_leaves(self) -> int:
        return len(self.leaves)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def max_depth(self) -> int:
        return max(_depth(p) for p in self.leaves)

    def depth(self, node: str) -> int:
        return _depth(node)

    def index(self, node: str) -> int:
        return self._index[node]

    def ancestors(self, node: str) -> list[str]:
        """The node's path from the top: its ancestors and itself (``a``, ``a/b``, ``a/b/c``)."""
        return _prefixes(node)

    def resolve(self, label: str) -> str:
        """A dataset's label -> the node it names: a node's path, or a name that ends exactly one
        node's path (``soccer`` for ``sports/ball/soccer``). Unknown or ambiguous names are a
        :class:`ConfigError` that says which."""
        label = str(label).strip()
        if label in self._index:
            return label
        matches = [n for n in self.nodes if n.rsplit(SEPARATOR, 1)[-1] == label]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(f"label {label!r} names {len(matches)} nodes of the taxonomy ({', '.join(matches[:4])}); "
                              "use its full path")
        raise ConfigError(f"label {label!r} is not in the taxonomy (e.g. {', '.join(self.nodes[:4])})")

    def membership(self) -> np.ndarray:
        """(num_nodes, num_leaves) 0/1: ``M[n, k] = 1`` when leaf ``k`` lies under (or is) node ``n``;
        node scores are ``M @ leaf_scores``."""
        out = np.zeros((self.num_nodes, self.num_leaves), dtype=np.float32)
        for k, leaf in enumerate(self.leaves):
            for node in _prefixes(leaf):
                out[self._index[node], k] = 1.0
        return out

    def level_weights(self) -> np.ndarray:
        """(num_nodes, num_nodes): row ``n`` spreads 1 evenly over ``n``'s ancestors and itself, the
        levels :func:`hierarchical_loss` averages a target ``n`` over."""
        out = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        for n, node in enumerate(self.nodes):
            chain = _prefixes(node)
            for a in chain:
                out[n, self._index[a]] = 1.0 / len(chain)
        return out

    # -- views of the scores -----------------------------------------------------------------------

    def view(self, level: int | None = None, max_depth: int | None = None) -> tuple[list[str], np.ndarray]:
        """The classes at one level of the tree and the (num_leaves, classes) matrix that sums the
        leaves' scores into theirs:

        - ``level=L``: the nodes exactly ``L`` deep (a leaf shallower than ``L`` has no class there,
          so the scores of a level sum to less than 1 when the tree is uneven);
        - ``max_depth=D``: every leaf cut to its first ``D`` names (the whole tree at depth <= D;
          scores sum to 1);
        - neither: the leaves themselves (the identity)."""
        if level is not None and max_depth is not None and max_depth < level:
            raise ConfigError(f"--max-depth {max_depth} is above --level {level}: give one of them")
        for name, value in (("level", level), ("max_depth", max_depth)):
            if value is not None and not (isinstance(value, int) and 1 <= value):
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if level is not None:
            if level > self.max_depth:
                raise ConfigError(f"--level {level} is below the taxonomy's leaves (it is {self.max_depth} deep)")
            cut = {leaf: (_prefixes(leaf)[level - 1] if _depth(leaf) >= level else None) for leaf in self.leaves}
            names = [n for n in dict.fromkeys(cut.values()) if n is not None]  # in the order of their leaves
        elif max_depth is not None:
            cut = {leaf: _prefixes(leaf)[min(max_depth, _depth(leaf)) - 1] for leaf in self.leaves}
            names = list(dict.fromkeys(cut.values()))
        else:
            return list(self.leaves), np.eye(self.num_leaves, dtype=np.float32)
        column = {n: i for i, n in enumerate(names)}
        matrix = np.zeros((self.num_leaves, len(names)), dtype=np.float32)
        for k, leaf in enumerate(self.leaves):
            if cut[leaf] is not None:
                matrix[k, column[cut[leaf]]] = 1.0
        return names, matrix

    def best_path(self, leaf_scores: Sequence[float], max_depth: int | None = None) -> list[tuple[str, float]]:
        """The most likely path from the top: at each level the best child of the node chosen
        above (by its summed score), down to a leaf or ``max_depth``; ``[(node, score), ...]``
        with scores that never increase along the path."""
        scores = self.membership() @ np.asarray(leaf_scores, dtype=np.float64)
        out: list[tuple[str, float]] = []
        here = ""
        limit = max_depth or self.max_depth
        while len(out) < limit:
            children = [n for n in self.nodes
                        if (n.startswith(here + SEPARATOR) if here else True) and _depth(n) == len(out) + 1]
            if not children:
                break
            best = max(children, key=lambda n: (scores[self._index[n]], -self._index[n]))
            out.append((best, float(scores[self._index[best]])))
            here = best
        return out

    def to_text(self) -> str:
        """The leaves' paths, one per line: a taxonomy file :func:`read_taxonomy` reads back."""
        return "".join(f"{p}\n" for p in self.leaves)


def read_taxonomy(path: str | os.PathLike[str]) -> Taxonomy:
    """A taxonomy file (paths or parent-child pairs, text or JSON; see the module's docstring)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the taxonomy {file}: {exc.strerror or exc}") from None
    where = str(file)
    if file.suffix.lower() == ".json":
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(data, Mapping):
            return Taxonomy.from_pairs((str(p), str(c)) for c, p in data.items())
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            return Taxonomy.from_paths(data)
        if isinstance(data, list) and all(isinstance(x, list) and len(x) == 2 for x in data):
            return Taxonomy.from_pairs((str(p), str(c)) for p, c in data)
        raise ConfigError(f"{where}: a JSON taxonomy is a list of paths, a list of [parent, child] pairs or an "
                          "object {child: parent}")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise ConfigError(f"{where}: the taxonomy is empty")
    if any("," in line or "\t" in line for line in lines):
        pairs = []
        for number, line in enumerate(lines, 1):
            parts = [p.strip() for p in line.replace("\t", ",").split(",")]
            if len(parts) != 2:
                raise ConfigError(f"{where}: line {number} ({line!r}) is not 'parent,child'")
            pairs.append((parts[0], parts[1]))
        return Taxonomy.from_pairs(pairs)
    try:
        return Taxonomy.from_paths(lines)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def hierarchical_loss(logits: Any, targets: Any, membership: Any, level_weights: Any) -> Any:
    """The training loss of a hierarchical model: for soft ``targets`` (B, num_nodes) over the
    taxonomy's nodes, ``sum_n t_n * mean over n's levels a of -log P(a)`` with ``P(a)`` the summed
    softmax of the leaves under ``a``. ``membership`` and ``level_weights`` are
    :meth:`Taxonomy.membership` and :meth:`Taxonomy.level_weights` as tensors. Linear in the
    targets, so mixup and label smoothing mix it as they mix cross-entropy; with every target a
    leaf of a one-level tree it is cross-entropy."""
    import torch

    log_leaves = torch.log_softmax(logits.float(), dim=-1)  # (B, K)
    # log P(node) = logsumexp over the leaves under it; -inf for none (masked, never selected)
    mask = membership.to(log_leaves.device) > 0  # (N, K)
    log_nodes = torch.logsumexp(log_leaves[:, None, :].masked_fill(~mask[None], float("-inf")), dim=-1)  # (B, N)
    per_node = -(log_nodes @ level_weights.to(log_leaves.device).T)  # (B, N): the loss of each possible target
    return torch.sum(targets * per_node, dim=-1).mean()
