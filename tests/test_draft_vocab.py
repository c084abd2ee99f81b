"""DraftVocabulary: checked once, most-frequent selection, coverage, and the LM head's rows."""

import pytest
import torch

from specdec.drafts.firp.vocabulary import DraftVocabulary
from specdec.kernels import lm_head_topk


def test_most_frequent_ties_to_lower_ids_and_sorted():
    counts = torch.tensor([0, 5, 2, 5, 2, 0, 9])
    vocab = DraftVocabulary.most_frequent(counts, 4)
    assert vocab.ids.tolist() == [1, 2, 3, 6]  # 6, then 1 and 3 (5 each), then 2 before 4
    assert len(vocab) == 4
    assert vocab.coverage(torch.tensor([1, 1, 4, 6])) == 0.75


@pytest.mark.parametrize("ids,message", [
    (torch.tensor([3, 1]), "strictly ascending"),
    (torch.tensor([1, 1]), "strictly ascending"),
    (torch.tensor([0, 10]), "must lie in"),
    (torch.tensor([-1, 2]), "must lie in"),
    (torch.tensor([1, 2], dtype=torch.int32), "1-D int64"),
    (torch.tensor([], dtype=torch.int64), "non-empty"),
])
def test_rejects_bad_ids(ids, message):
    with pytest.raises(ValueError, match=message):
        DraftVocabulary(ids, 10)


def test_rows_follow_the_head_and_rank_like_the_restricted_full_head():
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(50, 8, generator=gen)
    vocab = DraftVocabulary(torch.tensor([2, 7, 11, 30, 49]), 50)
    weight, ids = vocab.rows(head)
    assert torch.equal(weight, head[ids]) and vocab.rows(head)[0] is weight  # kept while the head is unchanged
    hidden = torch.randn(3, 8, generator=gen)
    top, _, _ = lm_head_topk(hidden, weight, 2, token_ids=ids, backend="torch")
    expected = ids[(hidden @ head[ids].T).topk(2).indices]
    assert torch.equal(top, expected)
    with torch.no_grad():
        head.mul_(-1)  # an in-place change: the rows are gathered again
    assert torch.equal(vocab.rows(head)[0], head[ids])
    with pytest.raises(ValueError, match="built for 50 tokens"):
        vocab.rows(torch.zeros(40, 8))


# --- decoding with a draft vocabulary ------------------------------------------------------------

from drafting import perturbed_predictor  # noqa: E402
from near_tie import assert_greedy_equivalent  # noqa: E402
from tiny_models import ARCHS, prompt, tiny_model  # noqa: E402

import specdec  # noqa: E402
from specdec import FIRPDrafts, FuturePredictor  # noqa: E402
from specdec.drafts.base import DraftSource  # noqa: E402


def half_vocabulary(model, seed: int) -> DraftVocabulary:
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    return DraftVocabulary(torch.randperm(vocab, generator=gen)[: vocab // 2].sort().values, vocab)


@pytest.mark.parametrize("arch,tree,backend", [*((arch, tree, "auto") for arch in ARCHS for tree in ("default", "auto")),
                                               (ARCHS[0], "default", "triton")])
def test_decoding_with_a_draft_vocabulary_matches_plain_and_ranks_inside_it(monkeypatch, arch, tree, backend):
    model = tiny_model(arch, seed=3)
    ids = prompt(model, 7, seed=1)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    predictor = perturbed_predictor(model, 1, k=3, seed=2)
    predictor.draft_vocab = half_vocabulary(model, 0)
    inside = set(predictor.draft_vocab.ids.tolist())
    ranked = []
    propose = DraftSource.propose

    def recorded(self, context, cands):
        ranked.extend(token for row in cands.ranked for token in row)
        return propose(self, context, cands)

    monkeypatch.setattr(DraftSource, "propose", recorded)
    specdec.patch(model, FIRPDrafts(predictor), tree=tree, backend=backend)
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    assert ranked and set(ranked) <= inside, "a pseudo row ranked a token outside the draft vocabulary"


def test_sampling_output_does_not_depend_on_the_draft_vocabulary():
    """Draws are counter-based per position: ranking drafts over a subset changes what is
    accepted, never what is emitted."""
    model = tiny_model(ARCHS[0], seed=5)
    ids = prompt(model, 6, seed=2)
    predictor = perturbed_predictor(model, 1, k=3, seed=4)
    outputs = []
    for vocabulary in (None, half_vocabulary(model, 1)):
        predictor.draft_vocab = vocabulary
        specdec.patch(model, FIRPDrafts(predictor), tree="default")
        torch.manual_seed(11)
        outputs.append(model.generate(ids, max_new_tokens=25, do_sample=True, temperature=0.8))
    assert torch.equal(outputs[0], outputs[1])


def test_draft_vocabulary_is_saved_and_loaded(tmp_path):
    model = tiny_model(ARCHS[0])
    predictor = perturbed_predictor(model, 1, k=2)
    predictor.draft_vocab = half_vocabulary(model, 2)
    predictor.save_pretrained(tmp_path)
    loaded = FuturePredictor.from_pretrained(tmp_path)
    assert torch.equal(loaded.draft_vocab.ids, predictor.draft_vocab.ids)
    predictor.draft_vocab = None  # saving without one removes the old file
    predictor.save_pretrained(tmp_path)
    assert FuturePredictor.from_pretrained(tmp_path).draft_vocab is None
    (tmp_path / "draft_vocab.json").write_text('{"vocab_size": 10, "ids": [3, 2]}')
    with pytest.raises(ValueError, match="corrupted draft vocabulary .*strictly ascending"):
        FuturePredictor.from_pretrained(tmp_path)
    predictor.draft_vocab = DraftVocabulary(torch.tensor([1, 2]), model.config.vocab_size + 1)
    with pytest.raises(ValueError, match="draft vocabulary is of"):
        predictor.save_pretrained(tmp_path)
