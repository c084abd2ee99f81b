"""N-gram lookup merged into FIRP's candidates: the guess, the merge, exactness and that it is accepted."""

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec.demo_corpus import read_texts, stdlib_files
from specdec.drafts import DraftContext, DraftSource, lookup_continuation
from tiny_models import prompt, tiny_model


def test_lookup_takes_the_latest_match_of_the_longest_suffix():
    #         0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 1, 6, 7, 9, 4, 6, 7]
    assert lookup_continuation(tokens, 3, 3) == [9, 4, 6]  # "6 7" last seen at 5-6
    assert lookup_continuation(tokens + [9], 3, 2) == [4, 6]  # "6 7 9" beats the shorter "7 9"
    assert lookup_continuation([1, 2, 3, 4], 3, 3) == []
    assert lookup_continuation([3], 3, 3) == []
    assert lookup_continuation([2, 2], 1, 4) == [2]  # the continuation stops at the end of the text


class FixedCandidates(DraftSource):
    """Returns the same candidates every step (k rows of K)."""

    def __init__(self, cands):
        self.cands, self.k = cands, cands.shape[0]

    def candidates(self, context):
        return self.cands


def test_merge_puts_the_guess_first_and_shifts_the_rest_without_repeats():
    inner = FixedCandidates(torch.tensor([[10, 11, 12], [20, 21, 22], [30, 31, 32]]))
    source = specdec.LookupDrafts(inner, max_ngram=2)
    context = DraftContext([21, 40, 7, 11, 21, 40], None, torch.empty(0), 3)  # "21 40" followed by 7 11 21
    assert source.candidates(context).tolist() == [[7, 10, 11], [11, 20, 21], [21, 30, 31]]
    present = DraftContext([4, 12, 21, 30, 4], None, torch.empty(0), 3)  # guess 12 21 30: already candidates
    assert source.candidates(present).tolist() == [[12, 10, 11], [21, 20, 22], [30, 31, 32]]
    short = DraftContext([9, 31, 9], None, torch.empty(0), 3)  # guess 31 9 reaches two depths only
    assert source.candidates(short).tolist() == [[31, 10, 11], [9, 20, 21], [30, 31, 32]]
    no_match = DraftContext([1, 2, 3], None, torch.empty(0), 3)
    assert torch.equal(source.candidates(no_match), inner.cands)
    assert lookup_continuation([1, 2, 9, 5, 2], 3, 2, min_ngram=2) == []  # only a 1-gram matches
    for bad in (dict(max_ngram=0), dict(min_ngram=0), dict(min_ngram=3, max_ngram=2)):
        with pytest.raises(ValueError, match="min_ngram"):
            specdec.LookupDrafts(inner, **bad)


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
    for name, source in (("firp", predictor), ("merged", specdec.LookupDrafts(predictor))):
        specdec.patch(model, source, tree=5)
        steps = 0
        for ids, plain in zip(prompts, expected):
            assert torch.equal(model.generate(ids, max_new_tokens=64, do_sample=False), plain)
            steps += specdec.stats(model).steps
        tau[name] = sum(e.shape[1] - p.shape[1] for e, p in zip(expected, prompts)) / steps
    assert tau["merged"] > tau["firp"] + 0.3
