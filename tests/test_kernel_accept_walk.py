"""The Triton accept walk against the PyTorch reference and a plain Python walk."""

import random

import pytest
import torch
from kernel_utils import DEVICE, hopper_ptx, poisoned

from specdec.kernels import reference
from specdec.kernels.accept import accept_walk
from specdec.decode.tree import StepLayout, TreeShape

# The path's padding is -1, the value poisoned() gives integers, so the path is poisoned with this instead.
PATH_POISON = -99


def python_walk(ids: list[int], tokens: list[int], parents: list[int], max_depth: int) -> tuple[list[int], int]:
    """The accept walk as plain Python: the lowest-numbered matching child, at most ``max_depth`` times."""
    path, cur = [0], 0
    while len(path) <= max_depth:
        children = [m + 1 for m in range(len(tokens)) if parents[m] == cur and tokens[m] == ids[cur]]
        if not children:
            break
        cur = min(children)
        path.append(cur)
    return path + [-1] * (max_depth + 1 - len(path)), len(path) - 1


def tree_depth(parents: list[int]) -> int:
    depths = [0]
    for parent in parents:
        depths.append(depths[parent] + 1)
    return max(depths)


def check(ids: list[int], tokens: list[int], parents: list[int], max_depth: int) -> int:
    """Run the kernel into poisoned outputs, compare with both references; return the count."""
    ids_t, tokens_t, parents_t = (torch.tensor(x, dtype=torch.int64, device=DEVICE) for x in (ids, tokens, parents))
    path_out = torch.full((max_depth + 1,), PATH_POISON, dtype=torch.int64, device=DEVICE)
    count_out = poisoned((), torch.int64)
    path, count = accept_walk(ids_t, tokens_t, parents_t, max_depth, out=(path_out, count_out))
    assert path is path_out and count is count_out
    assert path.dtype == torch.int64 and path.shape == (max_depth + 1,)
    assert count.dtype == torch.int64 and count.shape == ()

    ref_path, ref_count = reference.accept_walk(ids_t, tokens_t, parents_t, max_depth)
    assert path.tolist() == ref_path.tolist()
    assert count.item() == ref_count.item()
    expected_path, expected_count = python_walk(ids, tokens, parents, max_depth)
    assert path.tolist() == expected_path
    assert count.item() == expected_count
    return expected_count


def rigged_ids(tokens: list[int], parents: list[int], target: int, vocab: int) -> list[int]:
    """Greedy ids under which the walk ends exactly at row ``target`` (node tokens must be distinct)."""
    rng = random.Random(target)
    ids = [rng.randrange(vocab) for _ in range(len(tokens) + 1)]
    row = target
    while row != 0:
        ids[parents[row - 1]] = tokens[row - 1]
        row = parents[row - 1]
    ids[target] = -5  # no draft token is negative: the walk stops here
    return ids


@pytest.mark.parametrize("seed", range(24))
def test_random_trees_with_duplicate_tokens(seed):
    rng = random.Random(seed)
    nodes = rng.randint(1, 70)
    vocab = rng.choice([1, 2, 3])  # few tokens: several children match and the lowest must win
    parents = [rng.randrange(row) for row in range(1, nodes + 1)]  # parent row < child row
    tokens = [rng.randrange(vocab) for _ in range(nodes)]
    ids = [rng.randrange(vocab) for _ in range(nodes + 1)]
    depth = tree_depth(parents)
    check(ids, tokens, parents, depth)
    check(ids, tokens, parents, max(0, depth - 1))  # a shorter max_depth truncates the walk


@pytest.mark.parametrize("nodes", [1, 2, 5, 17])
def test_chains_accept_every_length(nodes):
    parents = list(range(nodes))
    tokens = [10 + m for m in range(nodes)]
    for accepted in range(nodes + 1):
        ids = [10 + r if r < accepted else 99 for r in range(nodes + 1)]
        assert check(ids, tokens, parents, nodes) == accepted


@pytest.mark.parametrize("width", [3, 64, 100])
def test_wide_trees_pick_the_lowest_matching_child(width):
    # Root with `width` children; every child has one child; tokens repeat every 3 siblings.
    parents = [0] * width + list(range(1, width + 1))
    tokens = [m % 3 for m in range(width)] + [7] * width
    for root_id in range(3):
        for second in (7, 8):
            ids = [root_id] + [second] * width + [0] * width
            count = check(ids, tokens, parents, 2)
            assert count == (2 if second == 7 else 1)


@pytest.mark.parametrize("name", ["chain", "default", "wide"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_named_shapes_walk_every_length(name, k):
    shape = TreeShape.resolve(name, k)
    layout = StepLayout.build(shape, k, DEVICE)
    parents = list(layout.parents)
    nodes = shape.num_nodes
    tokens = [100 + 3 * m for m in range(nodes)]  # distinct, so the rigged walk is the only one
    depths = [len(layout.ancestors(row)) - 1 for row in range(nodes + 1)]
    for length in range(shape.depth + 1):
        target = max(row for row in range(nodes + 1) if depths[row] == length)  # lower siblings exist
        ids = rigged_ids(tokens, parents, target, vocab=100 + 3 * nodes)
        assert check(ids, tokens, parents, shape.depth) == length
    # All tokens equal: every step has several matching children and takes the lowest.
    assert check([5] * (nodes + 1), [5] * nodes, parents, shape.depth) == shape.depth


def test_empty_tree():
    assert check([4], [], [], 0) == 0
    # A max_depth beyond the tree is padded (the reference cannot reduce over zero nodes here).
    empty = torch.empty(0, dtype=torch.int64, device=DEVICE)
    path, count = accept_walk(torch.tensor([4], device=DEVICE), empty, empty, 2)
    assert (path.tolist(), count.item()) == python_walk([4], [], [], 2) == ([0, -1, -1], 0)
    assert count.shape == ()


def test_rejects_bad_inputs():
    ids = torch.zeros(4, dtype=torch.int64, device=DEVICE)
    nodes = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match="ids must be"):
        accept_walk(ids.int(), nodes, nodes, 1)
    with pytest.raises(ValueError, match="ids must be"):
        accept_walk(ids[:0], nodes[:0], nodes[:0], 0)
    with pytest.raises(ValueError, match="tokens has 2 entries, expected 3"):
        accept_walk(ids, nodes[:2], nodes, 1)
    with pytest.raises(ValueError, match="parents must be a 1-D int64"):
        accept_walk(ids, nodes, nodes.view(3, 1), 1)
    with pytest.raises(ValueError, match="max_depth"):
        accept_walk(ids, nodes, nodes, -1)
    with pytest.raises(ValueError, match="max_depth"):
        accept_walk(ids, nodes, nodes, True)
    with pytest.raises(ValueError, match="out path"):
        accept_walk(ids, nodes, nodes, 2, out=(poisoned((2,), torch.int64), poisoned((), torch.int64)))
    with pytest.raises(ValueError, match="out count"):
        accept_walk(ids, nodes, nodes, 1, out=(poisoned((2,), torch.int64), poisoned((1,), torch.int64)))


def test_compiles_for_hopper():
    kernel = ("specdec.kernels.accept", "_accept_walk_kernel", "i64")
    ptx = hopper_ptx({
        "general": (*kernel, {"BLOCK": 64, "PATH_BLOCK": 4}, {}),
        # Triton specialises int arguments equal to 1 into constants.
        "ones": (*kernel, {"num_nodes": 1, "max_depth": 1, "BLOCK": 16, "PATH_BLOCK": 2}, {}),
    })
    assert all(ptx.values())
