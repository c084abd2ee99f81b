"""Static draft-tree shapes and the per-step row layout built from them.

A shape is a list of paths in the Medusa style: ``[a, b, c]`` is the node reached
by taking the rank-``a`` candidate at depth 1, then rank ``b`` at depth 2, then
rank ``c`` at depth 3. Rows of a step are numbered: 0 the root, ``1..M`` the draft
nodes (in the shape's canonical order: by depth, then lexicographically), then,
when the draft source injects pseudo rows, ``k`` of them per real row
(row ``R + r * k + i - 1`` is ``P[r, i]`` for ``i = 1..k``, ``R = M + 1``).
"""

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from ..kernels import num_words

# Prior probability that the rank-r candidate is the accepted one; only its
# ordering and decay shape the named trees (each factor < 1 keeps them prefix-closed).
RANK_PRIOR = (0.60, 0.14, 0.07, 0.045, 0.03, 0.022, 0.017, 0.013, 0.010, 0.008)
NAMED_TREE_NODES = {"default": 16, "wide": 60}
TREE_NAMES = ("chain", *NAMED_TREE_NODES)


def parse_tree_arg(text: str) -> "str | int":
    """A command-line tree: a node count when ``text`` is all digits, else a name."""
    return int(text) if text.isdigit() else text


def best_paths(num_nodes: int, k: int, prior: Sequence[float] = RANK_PRIOR) -> list[tuple[int, ...]]:
    """The ``num_nodes`` paths of depth <= k with the highest product of rank priors."""
    heap = [(-prior[r], (r,)) for r in range(len(prior))]
    heapq.heapify(heap)
    chosen = []
    while heap and len(chosen) < num_nodes:
        neg_score, path = heapq.heappop(heap)
        chosen.append(path)
        if len(path) < k:
            for r in range(len(prior)):
                heapq.heappush(heap, (neg_score * prior[r], path + (r,)))
    return chosen


@dataclass(frozen=True)
class TreeShape:
    """A validated, canonically ordered set of draft paths (see the module docstring)."""

    paths: tuple[tuple[int, ...], ...]

    @classmethod
    def resolve(cls, spec: "str | int | Sequence[Sequence[int]] | TreeShape", k: int) -> "TreeShape":
        """Build a shape from a name (``"chain"``, ``"default"``, ``"wide"``), a node count or a list of paths.

        Named shapes and node counts (the ``N`` most likely paths) adapt to ``k``;
        explicit paths are validated against it. Raises ``ValueError`` on an
        unknown name, a count below 1 or malformed paths.
        """
        if isinstance(spec, TreeShape):
            spec = spec.paths
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec < 1:
                raise ValueError(f"a tree needs at least 1 node, got {spec}")
            most = sum(len(RANK_PRIOR) ** depth for depth in range(1, k + 1))
            if spec > most:
                raise ValueError(
                    f"tree={spec} asks for more nodes than exist: with k={k} and {len(RANK_PRIOR)} candidate "
                    f"ranks per depth a tree has at most {most} nodes (pass a list of paths for other ranks)"
                )
            return cls._most_likely(spec, k)
        if isinstance(spec, str):
            if spec == "chain":
                return cls(tuple((0,) * depth for depth in range(1, k + 1)))
            if spec not in NAMED_TREE_NODES:
                raise ValueError(f"unknown tree {spec!r}; named trees are {TREE_NAMES}, or pass a list of paths")
            return cls._most_likely(NAMED_TREE_NODES[spec], k)  # fewer nodes when k is too small for them all
        return cls(_validate_paths(spec, k))

    @classmethod
    def _most_likely(cls, num_nodes: int, k: int) -> "TreeShape":
        return cls(tuple(sorted(best_paths(num_nodes, k), key=lambda p: (len(p), p))))

    @property
    def num_nodes(self) -> int:
        return len(self.paths)

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths), default=0)

    @property
    def num_candidates(self) -> int:
        """Candidates needed per depth: the largest rank used, plus one."""
        return max((p[-1] for p in self.paths), default=0) + 1

    @cached_property
    def parents(self) -> tuple[int, ...]:
        """Parent row of every node (0 = root)."""
        row = {path: i + 1 for i, path in enumerate(self.paths)}
        return tuple(row.get(path[:-1], 0) for path in self.paths)

    def ancestors(self, row: int) -> list[int]:
        """Rows on the path from the root to ``row``, both included, root first."""
        return ancestors(self.parents, row)


def ancestors(parents: Sequence[int], row: int) -> list[int]:
    """Rows from the root to ``row`` (both included, root first) of a tree whose node ``r`` (row
    ``r``, from 1) has parent row ``parents[r - 1]``."""
    chain = [row]
    while row != 0:
        row = parents[row - 1]
        chain.append(row)
    return chain[::-1]


def _validate_paths(spec, k: int) -> tuple[tuple[int, ...], ...]:
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) == 0:
        raise ValueError(f"tree must be a name in {TREE_NAMES}, a node count or a non-empty list of paths, got {spec!r}")
    paths = []
    for raw in spec:
        if (
            isinstance(raw, (str, bytes))
            or not isinstance(raw, Sequence)
            or not raw
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in raw)
        ):
            raise ValueError(f"tree path {raw!r} must be a non-empty list of non-negative ints")
        path = tuple(raw)
        if len(path) > k:
            raise ValueError(f"tree path {list(path)} has depth {len(path)} > k={k}")
        paths.append(path)
    seen = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"tree path {list(path)} appears twice")
        seen.add(path)
    for path in paths:
        if len(path) > 1 and path[:-1] not in seen:
            raise ValueError(f"tree path {list(path)} has a gap: its parent {list(path[:-1])} is not in the tree")
    return tuple(sorted(paths, key=lambda p: (len(p), p)))


@dataclass(frozen=True)
class StepLayout:
    """One step's rows as device tensors for the kernels, built once per tree structure.

    Rows: 0 the root, ``1..M`` the draft nodes (each after its parent), then ``k`` pseudo rows for
    each real row in ``owners``, in that order: pseudo row ``P[owners[b], i]`` (``i = 1..k``) is row
    ``R + b * k + i - 1`` (``R = M + 1``).

    Attributes:
        parents: host, parent row of every node (0 = the root).
        owners: host, the real rows that carry pseudo rows, in block order.
        pseudo_per_row: ``k``, pseudo rows per owner (0 when the source injects none).
        depth: host, the tree's depth (longest root-to-node path).
        node_parents: int64 ``[M]`` ``parents`` on the device.
        offsets: int64 ``[S]`` position of every row relative to the root.
        real_bits: int32 ``[R, W]`` visibility among real rows (layers up to the transfer layer).
        full_bits: int32 ``[S, W']`` visibility among all rows (later layers).
        owner_rows: int64 ``[B]`` ``owners`` on the device, or None when every real row is one, in order.
        pseudo_slot: int64 ``[R]`` block of each real row's pseudo rows, -1 for none.
    """

    parents: tuple[int, ...]
    owners: tuple[int, ...]
    pseudo_per_row: int
    depth: int
    node_parents: torch.Tensor
    offsets: torch.Tensor
    real_bits: torch.Tensor
    full_bits: torch.Tensor
    owner_rows: torch.Tensor | None
    pseudo_slot: torch.Tensor

    @property
    def num_real(self) -> int:
        return len(self.parents) + 1

    @property
    def num_pseudo(self) -> int:
        return len(self.owners) * self.pseudo_per_row

    @property
    def num_rows(self) -> int:
        return self.num_real + self.num_pseudo

    def ancestors(self, row: int) -> list[int]:
        """Real rows on the path from the root to ``row``, both included, root first."""
        return ancestors(self.parents, row)

    @classmethod
    def build(cls, shape: TreeShape, pseudo_per_row: int, device: torch.device) -> "StepLayout":
        """The layout of a static ``shape`` with ``pseudo_per_row`` pseudo rows on every real row."""
        owners = tuple(range(shape.num_nodes + 1)) if pseudo_per_row else ()
        return cls.of(shape.parents, owners, pseudo_per_row, device)

    @classmethod
    def of(cls, parents: Sequence[int], owners: Sequence[int], pseudo_per_row: int, device: torch.device) -> "StepLayout":
        """The layout of a tree given by ``parents`` (each < its own row) with pseudo rows on ``owners``."""
        parents, owners, k = tuple(parents), tuple(owners), pseudo_per_row if owners else 0
        real = len(parents) + 1
        seen = [1]  # bit r of seen[row]: row sees real row r
        depths = [0]
        for row, parent in enumerate(parents, start=1):
            if not 0 <= parent < row:
                raise ValueError(f"node row {row} has parent {parent}: parents must come before their children")
            seen.append(seen[parent] | (1 << row))
            depths.append(depths[parent] + 1)
        full, offsets = list(seen), list(depths)
        slot = [-1] * real
        for block, owner in enumerate(owners):
            slot[owner] = block
            base = real + block * k
            for i in range(k):
                full.append(seen[owner] | (((2 << i) - 1) << base))  # the owner's line, P[owner, 1..i+1]
                offsets.append(depths[owner] + i + 1)

        def tensor(values):
            return torch.tensor(values, dtype=torch.int64, device=device)

        every_row = owners == tuple(range(real))
        return cls(
            parents=parents,
            owners=owners,
            pseudo_per_row=k,
            depth=max(depths),
            node_parents=tensor(parents),
            offsets=tensor(offsets),
            real_bits=_packed(seen, real, device),
            full_bits=_packed(full, len(full), device),
            owner_rows=None if every_row else tensor(owners),
            pseudo_slot=tensor(slot),
        )


def _packed(masks: list[int], columns: int, device: torch.device) -> torch.Tensor:
    """Rows given as Python int bitmasks -> int32 words ``[len(masks), num_words(columns)]`` (see ``pack_bits``)."""
    words = num_words(columns)
    values = []
    for mask in masks:
        for w in range(words):
            word = (mask >> (32 * w)) & 0xFFFFFFFF
            values.append(word - (1 << 32) if word >= 1 << 31 else word)
    return torch.tensor(values, dtype=torch.int32, device=device).view(len(masks), words)
