"""N-gram lookup merged into FIRP's candidates: the guess, the merge, exactness and that it is accepted."""

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec.training.corpus import read_texts, stdlib_files
from specdec.drafts import Candidates, DraftContext, FIRPDrafts, NgramIndex
from specdec.decode.planner import merged_ranking
from specdec.drafts.firp.predictor import FuturePredictor
from tiny_models import prompt, tiny_model


def lookup(tokens, max_ngram, length, min_ngram=1):
    return NgramIndex(max_ngram, min_ngram).lookup(tokens, length)


def test_lookup_takes_the_latest_match_of_the_longest_suffix():
    #         0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 1, 6, 7, 9, 4, 6, 7]
    assert lookup(tokens, 3, 3) == ([9, 4, 6], 2)  # "6 7" last seen at 5-6
    assert lookup(tokens + [9], 3, 2) == ([4, 6], 3)  # "6 7 9" beats the shorter "7 9"
    assert lookup([1, 2, 3, 4], 3, 3) == ([], 0)
    assert lookup([3], 3, 3) == ([], 0)
    assert lookup([2, 2], 1, 4) == ([2], 1)  # the continuation stops at the end of the text
    assert lookup([1, 2, 9, 5, 2], 3, 2, min_ngram=2) == ([], 0)  # only a 1-gram matches


def test_index_grows_with_the_text():
    """Incremental updates give what a fresh index of the whole text gives, at every length."""
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(0, 6, (300,), generator=gen).tolist()
    index = NgramIndex(3)
    for end in range(1, len(text) + 1):
        assert index.lookup(text[:end], 5) == lookup(text[:end], 3, 5)


def test_propose_adds_the_chain_to_the_inner_ranking():
    inner = FIRPDrafts(FuturePredictor(8, 2, 0, {}))
    source = specdec.LookupDrafts(inner, max_ngram=2, chain_depth=4)
    context = DraftContext([21, 40, 7, 11, 21, 40])  # "21 40" followed by 7 11 21 40
    ranked = Candidates([[1, 2], [3, 4]], [[-0.1, -2.0], [-0.5, -1.0]])
    cands = source.propose(context, ranked)
    assert cands.ranked == [[1, 2], [3, 4]] and cands.chain == [7, 11, 21, 40] and cands.chain_ngram == 2
    context.tokens += [7]  # the index follows the growing text
    assert source.propose(context, Candidates()).chain == [11, 21, 40, 7]
    assert source.propose(DraftContext([1, 2, 3]), Candidates()).chain == []  # a new call: a new index


def test_static_trees_merge_the_chain_as_rank_zero():
    cands = Candidates([[10, 11, 12], [20, 21, 22], [30, 31, 32]], [[0.0] * 3] * 3, chain=[7, 21])
    assert merged_ranking(cands, 3) == [[7, 10, 11], [21, 20, 22], [30, 31, 32]]
    short = Candidates([[10, 11]], [[0.0] * 2])  # fewer tokens and depths than the tree: the last ones repeated
    assert merged_ranking(short, 3, depth=3) == [[10, 11, 11]] * 3


def test_lookup_rejects_bad_settings():
    for bad in (dict(max_ngram=0), dict(min_ngram=0), dict(min_ngram=3, max_ngram=2)):
        with pytest.raises(ValueError, match="min_ngram"):
            specdec.LookupDrafts(FIRPDrafts(FuturePredictor(8, 2, 0, {})), **bad)
    with pytest.raises(ValueError, match="chain_depth"):
        specdec.LookupDrafts(FIRPDrafts(FuturePredictor(8, 2, 0, {})), chain_depth=0)


@pytest.mark.parametrize("arch,layer,k,tree", [("llama-gqa", 1, 3, "default"), ("qwen3-norm", 0, 2, "chain"), ("mistral-window", 2, 4, 5)])
def test_merged_source_decodes_exactly(arch, layer, k, tree):
    model = tiny_model(arch, seed=7)
    ids = prompt(model, 9, seed=8)
    ids = torch.cat([ids, ids, ids[:, :4]], dim=1)  # repeated text, so lookups find matches
    expected = model.generate(ids, max_new_tokens=37, do_sample=False)
    specdec.patch(model, specdec.LookupDrafts(perturbed_predictor(model, layer, k)), tree=tree)
    out = model.generate(ids, max_new_tokens=37, do_sample=False)
    assert_greedy_equivalent(model, expected, out)


def test_lookup_raises_tau_of_the_demo_model_on_held_out_code():
    model, tokenizer, predictor = specdec.load_demo("stdlib-9m")
    texts = read_texts(stdlib_files("heldout")[:3])
    prompts = [tokenizer(text, return_tensors="pt").input_ids[:, :160] for text in texts]
    expected = [model.generate(ids, max_new_tokens=64, do_sample=False) for ids in prompts]
    tau = {}
    for name, source in (("firp", FIRPDrafts(predictor)), ("merged", specdec.LookupDrafts(predictor))):
        specdec.patch(model, source, tree=5)
        steps = 0
        for ids, plain in zip(prompts, expected):
            assert torch.equal(model.generate(ids, max_new_tokens=64, do_sample=False), plain)
            steps += specdec.stats(model).steps
        tau[name] = sum(e.shape[1] - p.shape[1] for e, p in zip(expected, prompts)) / steps
    assert tau["merged"] > tau["firp"] + 0.3
