"""The token-aware draft head (:class:`TokenHead`, :class:`HeadDrafts`): training pass = decoding
pass, exact output on every architecture (greedy, static and auto trees, with and without packed
weights), persistence and refusals, and training that learns."""

import copy
import math

import pytest
import torch

import specdec
from drafting import perturbed_head
from near_tie import assert_greedy_equivalent
from specdec import DraftContext, DraftVocabulary, FuturePredictor, HeadDrafts, LookupDrafts, TokenHead
from specdec.patching import STATE_ATTR
from specdec.training.head import HeadBatch, evaluate_head, extract_features, head_outputs, load_shards, train_head
from tiny_models import ARCHS, prompt, tiny_model


def states_of(model, ids: torch.Tensor) -> torch.Tensor:
    """``[1, T, d]`` the model's final-normed hidden states of ``ids [1, T]``."""
    with torch.no_grad():
        return model.model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("arch,vocab", [("llama-gqa", None), ("qwen3-norm", 40)])
def test_training_pass_is_the_decoding_pass(arch, vocab):
    """Depth 1: the decoding cache of committed pairs, fed in uneven chunks, gives the training pass's
    guesses; depth 2: the tree a decoding step drafts below a depth-1 token ranks exactly what the
    training pass's depth-2 guess ranks for that token."""
    model = tiny_model(arch, seed=3)
    draft_vocab = None if vocab is None else DraftVocabulary(torch.randperm(model.config.vocab_size)[:vocab].sort().values, model.config.vocab_size)
    head = perturbed_head(model, depth=3, seed=4, vocab=draft_vocab)
    source = HeadDrafts(head, width=3, beam=2, min_path_prob=0.0).prepared(model, "torch")
    ids = prompt(model, 11, seed=5)
    feats = states_of(model, ids)
    context = DraftContext(ids[0].tolist())
    with torch.no_grad():
        for start, stop in ((0, 4), (4, 5), (5, 9)):
            source.observe(context, feats[0, start:stop], ids[0, start + 1 : stop + 1].tolist())
        g1, _ = head_outputs(head, model.get_input_embeddings(), HeadBatch(ids, feats))
    state = context.scratch[source]
    torch.testing.assert_close(state.last[0], g1[0, 8], atol=1e-5, rtol=1e-5)
    cands = source.propose(context, specdec.Candidates())
    top = cands.tree[0][1]  # the best depth-1 token after position 9's pair: make it the text's next token
    ids2 = torch.cat([ids[:, :10], torch.tensor([[top]])], dim=1)
    with torch.no_grad():
        _, g2 = head_outputs(head, model.get_input_embeddings(), HeadBatch(ids2, states_of(model, ids2)))
    rows = model.lm_head.weight if draft_vocab is None else model.lm_head.weight[draft_vocab.ids]
    logp = torch.log_softmax(g2[0, 8] @ rows.T, dim=-1)
    expected = logp.topk(3)
    expected_ids = expected.indices if draft_vocab is None else draft_vocab.ids[expected.indices]
    children = [(token, lp) for parent, token, lp, _ in cands.tree if parent == 0]
    assert [t for t, _ in children] == expected_ids.tolist()
    torch.testing.assert_close(torch.tensor([lp for _, lp in children]), expected.values, atol=1e-4, rtol=1e-4)
    assert {kind for *_, kind in cands.tree} == {"head"} and len(cands.ranked) == 3


def test_the_heads_cache_holds_no_garbage(monkeypatch):
    """The head attends over every slot of its cache, masked ones included (a zero weight times a NaN
    is a NaN): every buffer it attends over starts zeroed, whatever uninitialised memory holds
    (poisoned here with NaN)."""
    def poisoned(*args, **kwargs):
        return torch.full_like(*args, float("nan"), **kwargs)

    monkeypatch.setattr(torch, "empty_like", poisoned)
    model = tiny_model("llama-gqa", seed=3)
    source = HeadDrafts(perturbed_head(model, depth=3, seed=4), min_path_prob=0.0).prepared(model, "torch")
    ids = prompt(model, 9, seed=2)
    context = DraftContext(ids[0].tolist())
    with torch.no_grad():
        source.observe(context, states_of(model, ids)[0, :8], ids[0, 1:9].tolist())
    cands = source.propose(context, specdec.Candidates())
    assert torch.isfinite(context.scratch[source].last).all()
    assert len(cands.tree) > 3 and all(math.isfinite(lp) for _, _, lp, _ in cands.tree)


TREES = ("auto", "default", "chain", "wide", "auto")


@pytest.mark.parametrize("index,arch", list(enumerate(ARCHS)))
def test_head_drafts_match_plain_greedy(index, arch):
    model = tiny_model(arch, seed=30 + index)
    prompts = [(prompt(model, length, seed), new) for seed, (length, new) in enumerate(((1, 12), (9, 40)))]
    plain = [model.generate(ids, max_new_tokens=new, do_sample=False) for ids, new in prompts]
    head = perturbed_head(model, depth=2 + index % 3, seed=index)
    for compile in ("auto", False):
        for predictor in (head, HeadDrafts(head, width=2 + index, beam=1 + index % 3)):
            specdec.patch(model, predictor, tree=TREES[index], compile=compile)
            for (ids, new), expected in zip(prompts, plain):
                assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=new, do_sample=False))
                stats = specdec.stats(model)
                assert stats.fallback is None and stats.k == head.depth
            specdec.unpatch(model)


def test_a_head_learns_its_model():
    """Trained on the model's own greedy text, the head's held-out depth-1 top-1 rises well above the
    untrained head's, and the patched model accepts more drafts than with the untrained one."""
    model = tiny_model("llama-gqa", seed=7)
    with torch.no_grad():
        text = torch.cat([model.generate(prompt(model, 4, seed), max_new_tokens=60, min_new_tokens=60, do_sample=False) for seed in range(40)])
    train_ids, eval_ids = text[:32], text[32:]
    batches = lambda ids: [HeadBatch(ids, states_of(model, ids))]  # noqa: E731
    head = TokenHead.for_model(model, depth=3)
    before = evaluate_head(model, head, batches(eval_ids))
    train_head(model, head, batches(train_ids), steps=150, batch_size=8, lr=3e-3, log=None)
    after = evaluate_head(model, head, batches(eval_ids))
    assert after["top1_depth1"] > before["top1_depth1"] + 0.08, (before, after)  # 0.40 -> 0.53 when written
    assert after["top1_depth2"] > before["top1_depth2"] + 0.15, (before, after)  # 0.24 -> 0.50
    taus = []
    for trained in (TokenHead.for_model(model, depth=3), head):
        specdec.patch(model, HeadDrafts(trained), tree="chain")
        model.generate(eval_ids[:1, :5], max_new_tokens=50, do_sample=False)
        taus.append(specdec.stats(model).tau)
        specdec.unpatch(model)
    assert taus[1] > taus[0] + 0.3, taus


def test_features_are_written_once_and_resumed(tmp_path):
    model = tiny_model("qwen2-bias", seed=1)
    seqs = torch.randint(0, model.config.vocab_size, (5, 12))
    paths = extract_features(model, seqs, tmp_path, batch_size=2, progress=False)
    assert len(paths) == 3
    first = paths[0].stat().st_mtime_ns
    assert extract_features(model, seqs, tmp_path, batch_size=2, progress=False) == paths and paths[0].stat().st_mtime_ns == first
    shards = load_shards(paths, torch.float32)
    torch.testing.assert_close(torch.cat([s.tokens for s in shards]), seqs)
    torch.testing.assert_close(shards[2].features, states_of(model, seqs[4:]).half().float())


def test_save_load_and_refusals(tmp_path):
    model = tiny_model("llama-mha", seed=2)
    vocab = DraftVocabulary(torch.arange(0, model.config.vocab_size, 3), model.config.vocab_size)
    head = perturbed_head(model, depth=4, seed=9, vocab=vocab)
    head.save_pretrained(tmp_path / "head")
    loaded = HeadDrafts.from_pretrained(tmp_path / "head").module
    assert loaded.depth == 4 and torch.equal(loaded.draft_vocab.ids, vocab.ids)
    for name, tensor in head.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    with pytest.raises(ValueError, match="'head' draft source.*HeadDrafts.from_pretrained"):
        FuturePredictor.from_pretrained(tmp_path / "head")
    FuturePredictor.for_model(model, layer=1, k=2).save_pretrained(tmp_path / "firp")
    with pytest.raises(ValueError, match="'firp' draft source"):
        TokenHead.from_pretrained(tmp_path / "firp")
    other = tiny_model("llama-gqa", seed=2)
    with pytest.raises(ValueError, match="token-aware draft head"):
        specdec.patch(other, loaded)
    assert not specdec.is_patched(other)
    with pytest.raises(ValueError, match="width must be an int >= 1"):
        HeadDrafts(head, width=0)
    with pytest.raises(TypeError, match="needs a TokenHead"):
        HeadDrafts(FuturePredictor.for_model(model, layer=1, k=2))
    bad = copy.deepcopy(loaded)
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        TokenHead(bad.hidden_size, bad.intermediate_size, 0, bad.fingerprint)


def test_patch_merges_a_bare_head_with_lookup():
    model = tiny_model("mistral-window", seed=4)
    ids = prompt(model, 6, 1)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    specdec.patch(model, perturbed_head(model, depth=3))
    source = getattr(model, STATE_ATTR).source
    assert isinstance(source, LookupDrafts) and isinstance(source.inner, HeadDrafts) and source.depth == 3
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=30, do_sample=False))
    specdec.unpatch(model)


@pytest.mark.parametrize("compile", ["auto", False])
def test_the_heads_linears_run_packed_inside_a_call_only(compile, monkeypatch):
    model = tiny_model("llama-gqa", seed=6)
    seen = []
    propose = HeadDrafts.propose

    def spying(self, context, ranked):
        seen.append("forward" in self.module.qkv.__dict__)  # the instance-level packed forward
        return propose(self, context, ranked)

    monkeypatch.setattr(HeadDrafts, "propose", spying)
    source = HeadDrafts(perturbed_head(model, depth=2))
    specdec.patch(model, source, tree="chain", compile=compile)
    model.generate(prompt(model, 5, 0), max_new_tokens=6, do_sample=False)
    prepared = getattr(model, STATE_ATTR).prepared
    assert seen and all(seen) == (compile == "auto") and "forward" not in prepared.module.qkv.__dict__
    specdec.unpatch(model)
