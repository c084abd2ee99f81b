"""DraftVocabulary: checked once, most-frequent selection, coverage, and the LM head's rows."""

import pytest
import torch

from specdec.draft_vocab import DraftVocabulary
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
