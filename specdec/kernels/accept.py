"""Greedy verification of a draft tree (the accept walk) in one Triton program.

Rows of a step are numbered 0 (the root) and ``1..M`` (draft node ``m`` is row
``m + 1``). Starting at the root, the walk moves to the lowest-numbered child
whose draft token equals the current row's greedy token, while one exists; see
:func:`specdec.kernels.reference.accept_walk`.

The kernel keeps the whole tree in registers: one program loads the ``M``
tokens, parents and greedy ids as vectors of ``BLOCK >= M`` lanes, then loops
over the depth. Each step is a masked minimum over the lanes (the matching child
with the lowest row) and a masked sum that fetches that child's greedy id, so the
loop makes no dependent memory loads. The path is built in registers and stored
once, already padded with -1, so the caller reads only the count on the host.
Once a step finds no match the state stops changing, so later steps find none
either and the walk needs no separate "stopped" flag.
"""

import torch
import triton
import triton.language as tl

from .launch import check_runnable


@triton.jit
def _accept_walk_kernel(
    ids_ptr,
    tokens_ptr,
    parents_ptr,
    path_ptr,
    count_ptr,
    num_nodes,
    max_depth,
    BLOCK: tl.constexpr,
    PATH_BLOCK: tl.constexpr,
):
    """Walk the tree of ``num_nodes`` nodes; write ``path[max_depth + 1]`` and the scalar ``count``.

    ``ids_ptr``: int64 ``[num_nodes + 1]``; ``tokens_ptr``, ``parents_ptr``: int64 ``[num_nodes]``;
    ``path_ptr``: int64 ``[max_depth + 1]``; ``count_ptr``: int64 scalar. ``BLOCK >= num_nodes``
    and ``PATH_BLOCK >= max_depth + 1`` are powers of two.
    """
    lane = tl.arange(0, BLOCK)
    in_tree = lane < num_nodes
    rows = lane.to(tl.int64) + 1
    tokens = tl.load(tokens_ptr + lane, mask=in_tree, other=0)
    parents = tl.load(parents_ptr + lane, mask=in_tree, other=-1)
    node_ids = tl.load(ids_ptr + 1 + lane, mask=in_tree, other=0)

    slot = tl.arange(0, PATH_BLOCK)
    path = tl.where(slot == 0, 0, -1).to(tl.int64)
    cur = tl.zeros((), dtype=tl.int64)  # the root
    want = tl.load(ids_ptr)  # greedy id of the current row
    count = tl.zeros((), dtype=tl.int64)
    for depth in range(1, max_depth + 1):
        match = in_tree & (parents == cur) & (tokens == want)
        child = tl.min(tl.where(match, rows, BLOCK + 1), axis=0)  # BLOCK + 1: no matching child
        found = child <= BLOCK
        path = tl.where(slot == depth, tl.where(found, child, -1), path)
        count += found.to(tl.int64)
        want = tl.where(found, tl.sum(tl.where(rows == child, node_ids, 0), axis=0), want)
        cur = tl.where(found, child, cur)
    tl.store(path_ptr + slot, path, mask=slot <= max_depth)
    tl.store(count_ptr, count)


def _check_vector(name: str, tensor: torch.Tensor, length: int, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.dtype != torch.int64:
        described = f"{tuple(tensor.shape)} {tensor.dtype}" if isinstance(tensor, torch.Tensor) else type(tensor)
        raise ValueError(f"accept_walk: {name} must be a 1-D int64 tensor, got {described}")
    if tensor.shape[0] != length:
        raise ValueError(f"accept_walk: {name} has {tensor.shape[0]} entries, expected {length}")
    if tensor.device != device:
        raise ValueError(f"accept_walk: {name} is on {tensor.device} but ids is on {device}")


def accept_walk(
    ids: torch.Tensor,
    tokens: torch.Tensor,
    parents: torch.Tensor,
    max_depth: int,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification of a draft tree on the device, in one kernel launch.

    Same arguments and results as :func:`specdec.kernels.reference.accept_walk`.
    Values are not checked (that would need a host round trip): parents must name
    earlier rows (``0 <= parents[m] <= m``), as :class:`specdec.decode.tree.StepLayout` builds them.

    Args:
        ids: int64 ``[M + 1]`` greedy token of every row (row 0 is the root).
        tokens: int64 ``[M]`` draft token of every node (node ``m`` is row ``m + 1``).
        parents: int64 ``[M]`` parent row of every node (0 = root).
        max_depth: depth of the tree, the longest possible walk (an int >= 0).
        out: optional ``(path, count)`` destinations: contiguous int64 ``[max_depth + 1]``
            and an int64 0-dim tensor on the same device; they are returned.

    Returns:
        ``(path, count)``: int64 ``[max_depth + 1]`` rows walked, root first, padded
        with -1; and the int64 0-dim number of accepted nodes.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.int64 or ids.shape[0] < 1:
        described = f"{tuple(ids.shape)} {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids)
        raise ValueError(f"accept_walk: ids must be a non-empty 1-D int64 tensor, got {described}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"accept_walk: max_depth must be an int >= 0, got {max_depth!r}")
    device = ids.device
    num_nodes = ids.shape[0] - 1
    _check_vector("tokens", tokens, num_nodes, device)
    _check_vector("parents", parents, num_nodes, device)
    check_runnable("accept_walk", ids, tokens, parents)
    if out is None:
        path = torch.empty(max_depth + 1, dtype=torch.int64, device=device)
        count = torch.empty((), dtype=torch.int64, device=device)
    else:
        path, count = out
        if path.shape != (max_depth + 1,) or path.dtype != torch.int64 or not path.is_contiguous():
            raise ValueError(f"accept_walk: out path must be contiguous int64 [{max_depth + 1}]")
        if count.shape != () or count.dtype != torch.int64:
            raise ValueError("accept_walk: out count must be an int64 0-dim tensor")
        if path.device != device or count.device != device:
            raise ValueError(f"accept_walk: out tensors must be on {device}")
    if num_nodes == 0:  # no tree: nothing to walk, no launch
        path.fill_(-1)
        path[0] = 0
        count.zero_()
        return path, count
    block = max(16, triton.next_power_of_2(num_nodes))
    _accept_walk_kernel[(1,)](
        ids.contiguous(),
        tokens.contiguous(),
        parents.contiguous(),
        path,
        count,
        num_nodes,
        max_depth,
        BLOCK=block,
        PATH_BLOCK=triton.next_power_of_2(max_depth + 1),
        num_warps=min(8, max(1, block // 256)),
    )
    return path, count
