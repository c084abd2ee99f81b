"""Tree shapes, their row layout, visibility bitmasks and position offsets."""

import pytest
import torch

from specdec.kernels import pack_bits, unpack_bits
from specdec.drafts import Candidates
from specdec.decode.planner import StaticPlanner
from specdec.decode.tree import StepLayout, TreeShape, best_paths, parse_tree_arg


def test_named_shapes_have_their_sizes_and_adapt_to_k():
    assert TreeShape.resolve("chain", 3).paths == ((0,), (0, 0), (0, 0, 0))
    # With k = 1 a tree has at most one node per candidate rank (10).
    assert TreeShape.resolve("default", 1).num_nodes == TreeShape.resolve("wide", 1).num_nodes == 10
    for k in (2, 3, 4, 5):
        default, wide = TreeShape.resolve("default", k), TreeShape.resolve("wide", k)
        assert default.num_nodes == 16 and wide.num_nodes == 60
        assert default.depth <= k and wide.depth <= k
    assert TreeShape.resolve("default", 3).depth == 3 and TreeShape.resolve("wide", 4).depth == 4


def test_node_counts_give_the_most_likely_paths():
    assert TreeShape.resolve(16, 3) == TreeShape.resolve("default", 3)
    assert TreeShape.resolve(5, 3).num_nodes == 5 and TreeShape.resolve(1, 4).paths == ((0,),)
    assert parse_tree_arg("5") == 5 and parse_tree_arg("chain") == "chain"
    for bad in (0, -3):
        with pytest.raises(ValueError, match="at least 1 node"):
            TreeShape.resolve(bad, 3)


def test_best_paths_are_prefix_closed_and_ranked():
    paths = best_paths(60, 4)
    assert len(set(paths)) == 60
    assert all(p[:-1] in paths for p in paths if len(p) > 1)
    assert paths[0] == (0,) and paths[1] == (0, 0)


def test_custom_paths_are_ordered_by_depth_then_rank():
    shape = TreeShape.resolve([[1, 0], [0], [1], [0, 2], [0, 0]], 2)
    assert shape.paths == ((0,), (1,), (0, 0), (0, 2), (1, 0))
    assert shape.parents == (0, 0, 1, 1, 2)
    assert shape.num_candidates == 3
    assert shape.ancestors(5) == [0, 2, 5]
    assert shape.ancestors(0) == [0]


def test_layout_of_a_small_tree_by_hand():
    # rows: 0 root, 1 [0], 2 [1], 3 [0,0]; k = 2 pseudo rows per real row.
    shape = TreeShape.resolve([[0], [1], [0, 0]], 2)
    layout = StepLayout.build(shape, 2, torch.device("cpu"))
    assert layout.num_real == 4 and layout.num_rows == 12
    assert layout.parents == (0, 0, 1)
    assert [len(layout.ancestors(row)) - 1 for row in (1, 2, 3)] == [1, 1, 2] and layout.depth == 2
    # Real rows 0..3 at depths 0,1,1,2; pseudo P[r,i] at depth(r)+i, rows 4 + 2r + (i-1).
    assert layout.offsets.tolist() == [0, 1, 1, 2, 1, 2, 2, 3, 2, 3, 3, 4]
    real = unpack_bits(layout.real_bits, 4).int().tolist()
    assert real == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    full = unpack_bits(layout.full_bits, 12)
    assert torch.equal(full[:4, :4], unpack_bits(layout.real_bits, 4))
    assert not full[:4, 4:].any(), "real rows never see pseudo rows"
    # P[3, 2] (row 4 + 2*3 + 1 = 11) sees row 3's ancestors and itself, and P[3, 1] (row 10).
    assert full[11].nonzero().view(-1).tolist() == [0, 1, 3, 10, 11]
    assert full[4].nonzero().view(-1).tolist() == [0, 4]


def test_static_plan_takes_node_tokens_by_depth_and_rank():
    shape = TreeShape.resolve([[0], [1], [0, 0], [0, 1]], 2)
    planner = StaticPlanner(shape, 2, torch.device("cpu"))
    plan = planner.plan(Candidates([[10, 11], [20, 21]], [[0.0, 0.0]] * 2))
    assert plan.tokens == [10, 11, 20, 21] and plan.nodes.tolist() == [10, 11, 20, 21]
    assert planner.plan(Candidates()).tokens == []  # no ranking yet: the root alone


def test_partial_pseudo_rows_layout():
    """Pseudo rows on rows 0 and 2 only: rows, positions and visibility follow the owners."""
    layout = StepLayout.of([0, 1, 0], [0, 2], 2, torch.device("cpu"))  # root - 1 - 2, root - 3
    assert layout.num_real == 4 and layout.num_rows == 8 and layout.depth == 2
    assert layout.offsets.tolist() == [0, 1, 2, 1, 1, 2, 3, 4]
    assert layout.pseudo_slot.tolist() == [0, -1, 1, -1] and layout.owner_rows.tolist() == [0, 2]
    full = unpack_bits(layout.full_bits, 8)
    assert full[6].nonzero().view(-1).tolist() == [0, 1, 2, 6]  # P[2, 1]: row 2's line and itself
    assert full[7].nonzero().view(-1).tolist() == [0, 1, 2, 6, 7]
    assert unpack_bits(layout.real_bits, 4)[3].nonzero().view(-1).tolist() == [0, 3]
    with pytest.raises(ValueError, match="parents must come before"):
        StepLayout.of([0, 2], [], 0, torch.device("cpu"))


def test_empty_tree_layout_is_root_and_pseudo_rows():
    layout = StepLayout.build(TreeShape(()), 3, torch.device("cpu"))
    assert layout.num_real == 1 and layout.num_rows == 4
    assert layout.offsets.tolist() == [0, 1, 2, 3]
    assert unpack_bits(layout.full_bits, 4).int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


@pytest.mark.parametrize("columns", [1, 5, 31, 32, 33, 64, 65, 250])
def test_pack_unpack_round_trip(columns):
    mask = torch.rand(7, columns, generator=torch.Generator().manual_seed(columns)) < 0.5
    mask[:, -1] = True
    bits = pack_bits(mask)
    assert bits.dtype == torch.int32 and bits.shape == (7, -(-columns // 32))
    assert torch.equal(unpack_bits(bits, columns), mask)


def test_bit_31_is_the_sign_bit():
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[0, 31] = True
    assert pack_bits(mask).item() == -(2**31)
