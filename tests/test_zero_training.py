"""``specdec.patch(model)`` without a predictor: n-gram lookup drafts alone, no training, exact."""

import pytest
import torch

import specdec
from near_tie import assert_greedy_equivalent
from simulated_device import pin_cost
from specdec.drafts import Candidates, DraftContext
from tiny_models import ARCHS, prompt, tiny_model


def flat(rows: int) -> float:
    """A device where rows are nearly free (a GPU-like step): lookup chains are worth verifying."""
    return 0.01 * (1 + 0.01 * rows)


@pytest.mark.parametrize("arch", ARCHS)
def test_lookup_alone_decodes_exactly_with_no_pseudo_rows(arch, monkeypatch):
    model = tiny_model(arch, seed=3)
    ids = prompt(model, 10, seed=5)
    ids = torch.cat([ids, ids, ids[:, :3]], dim=1)  # repeated text: the lookup finds chains
    expected = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
    pin_cost(model, monkeypatch, flat)
    assert specdec.patch(model) is model
    out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    run = specdec.stats(model)
    assert run.fallback is None and run.k == 0
    assert all(rows == nodes + 1 for rows, nodes in zip(run.rows, run.nodes))  # root and drafts, nothing else
    assert sum(run.nodes) > 0 and run.tau > 1.2  # chains were drafted and accepted


def test_lookup_alone_needs_the_auto_tree():
    model = tiny_model("llama-gqa")
    for tree in ("chain", "default", 5):
        with pytest.raises(ValueError, match="use tree='auto'"):
            specdec.patch(model, tree=tree)
    assert not specdec.is_patched(model)


def test_lookup_without_inner_proposes_only_a_chain():
    source = specdec.LookupDrafts(max_ngram=2, chain_depth=3)
    assert (source.k, source.layer, source.depth, source.chain_depth) == (0, None, 0, 3)
    cands = source.propose(DraftContext([4, 5, 6, 7, 4, 5]), Candidates())
    assert cands.ranked == [] and cands.chain == [6, 7, 4] and cands.chain_ngram == 2
