"""Mask slots (SPACE) and early exit (SPEED's guess) as draft sources: exact output, forced acceptance,
combinations, the training pass, persistence and the Triton path."""

import math

import pytest
import torch

import specdec
from drafting import perturbed_exit, perturbed_mask, perturbed_predictor
from kernel_utils import DEVICE
from near_tie import assert_greedy_equivalent
from specdec import Candidates, DraftContext, EarlyExitDrafts, FIRPDrafts, ForcedDrafts, LookupDrafts, MaskDrafts
from specdec.training import train
from specdec.decode.cache import TreeKVCache
from specdec.decode.loop import ModelParts, forward_step, prefill
from specdec.decode.tree import StepLayout, TreeShape
from tiny_models import ARCHS, NUM_LAYERS, prompt, tiny_model

FAST = dict(batch_size=4, seq_len=32, positions=None, progress=False, lr=1e-2, warmup=3)


def sources(model, index: int) -> dict:
    """Every kind of source and combination, seeded by ``index``."""
    firp = FIRPDrafts(perturbed_predictor(model, index % NUM_LAYERS, k=2, seed=index))
    return {
        "mask": perturbed_mask(model, k=1 + index % 3, seed=index),
        "exit": perturbed_exit(model, layer=index % NUM_LAYERS, k=1 + index % 2, seed=index),
        "exit+firp": perturbed_exit(model, layer=(index + 1) % NUM_LAYERS, k=1, seed=index, inner=firp),
        "lookup(exit+mask)": LookupDrafts(perturbed_exit(model, layer=NUM_LAYERS - 1, k=2, seed=index, inner=perturbed_mask(model, 2, index))),
    }


TREES = ("auto", "default", "chain", "wide")


@pytest.mark.parametrize("index,arch", list(enumerate(ARCHS)))
def test_every_source_and_combination_matches_plain_greedy(index, arch):
    model = tiny_model(arch, seed=20 + index)
    prompts = [(prompt(model, length, seed), new) for seed, (length, new) in enumerate(((1, 9), (7, 30)))]
    plain = [model.generate(ids, max_new_tokens=new, do_sample=False) for ids, new in prompts]
    for turn, (name, source) in enumerate(sources(model, index).items()):
        specdec.patch(model, source, tree=TREES[(index + turn) % len(TREES)])
        for (ids, new), expected in zip(prompts, plain):
            assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=new, do_sample=False))
            assert specdec.stats(model).fallback is None, name
        specdec.unpatch(model)


FORCED = [  # (source, depth, tree, architecture): every architecture meets a source
    ("mask", 3, "chain", "llama-gqa"),
    ("mask", 2, "default", "mistral-window"),
    ("exit", 1, "chain", "qwen3-norm"),
    ("exit", 3, "default", "llama-mha"),
    ("exit+firp", 2, "default", "qwen2-bias"),
]


@pytest.mark.parametrize("name,k,tree,arch", FORCED)
def test_true_drafts_through_each_source_are_all_accepted(name, k, tree, arch):
    model = tiny_model(arch, seed=3)
    ids = prompt(model, 6, seed=4)
    expected = model.generate(ids, max_new_tokens=41, do_sample=False, eos_token_id=None)
    new = expected.shape[1] - ids.shape[1]
    inner = {
        "mask": lambda: perturbed_mask(model, k),
        "exit": lambda: perturbed_exit(model, 1, k),
        "exit+firp": lambda: perturbed_exit(model, 2, 1, inner=FIRPDrafts(perturbed_predictor(model, 1, k))),
    }[name]()
    specdec.patch(model, ForcedDrafts(inner, expected[0].tolist(), model.config.vocab_size), tree=tree)
    out = model.generate(ids, max_new_tokens=41, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert stats.steps == 1 + math.ceil((new - 1) / (k + 1))
    assert stats.tau > 0.85 * (k + 1)
    if name == "exit":
        assert max(stats.rows) == 1 + len(TreeShape.resolve(tree, k).paths), "the early exit adds no rows"


@pytest.mark.parametrize("name", ["mask", "exit", "exit+firp"])
def test_wrong_drafts_through_each_source_are_all_rejected(name):
    model = tiny_model("qwen2-bias", seed=2)
    ids = prompt(model, 6, seed=5)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    inner = sources(model, 2)[name]
    specdec.patch(model, ForcedDrafts(inner, expected[0].tolist(), model.config.vocab_size, correct=False), tree="default")
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    assert specdec.stats(model).tau == 1.0


def test_sampling_with_each_source_is_seeded_and_runs():
    """Sampling output depends only on the seed, not on the source (the counter-based draws)."""
    model = tiny_model("llama-gqa", seed=6)
    ids = prompt(model, 5, seed=2)
    outputs = []
    for source in sources(model, 1).values():
        specdec.patch(model, source)
        torch.manual_seed(11)
        outputs.append(model.generate(ids, max_new_tokens=20, do_sample=True, temperature=0.9))
        specdec.unpatch(model)
    assert all(torch.equal(out, outputs[0]) for out in outputs)


def test_early_exit_merges_rankings_by_probability_and_tags_the_source():
    model = tiny_model("llama-gqa", seed=1)
    firp = FIRPDrafts(perturbed_predictor(model, 1, k=2))
    source = EarlyExitDrafts.for_model(model, layer=2, k=1, inner=firp)
    ranked = Candidates(ranked=[[5, 6], [7, 8]], logp=[[-0.5, -2.0], [-1.0, -3.0]],
                        exit_ranked=[[6, 9]], exit_logp=[[-0.1, -4.0]])
    cands = source.propose(DraftContext([1, 2, 3]), ranked)
    assert cands.ranked == [[6, 5, 9], [7, 8]]
    assert cands.logp == [[-0.1, -0.5, -4.0], [-1.0, -3.0]]
    assert cands.kinds == [["exit", "firp", "exit"], ["firp", "firp"]]
    # Without a pseudo-row ranking (the end row carried no pseudo rows) the early exit still ranks.
    alone = source.propose(DraftContext([1]), Candidates(exit_ranked=[[4]], exit_logp=[[-0.2]]))
    assert alone.ranked == [[4]] and alone.kinds == [["exit"]]


def test_bad_combinations_and_trees_are_refused():
    model = tiny_model("llama-gqa", seed=1)
    with pytest.raises(ValueError, match="wrap lookup around early exit"):
        EarlyExitDrafts.for_model(model, inner=LookupDrafts(perturbed_predictor(model, 1, 2)))
    with pytest.raises(ValueError, match="cannot wrap another early-exit"):
        EarlyExitDrafts.for_model(model, inner=EarlyExitDrafts.for_model(model))
    with pytest.raises(ValueError, match="transfer layer"):
        EarlyExitDrafts.for_model(model, layer=NUM_LAYERS)
    with pytest.raises(TypeError):
        MaskDrafts(perturbed_predictor(model, 1, 2))
    # An early exit of depth 1 serves depth-1 static trees; deeper paths are cut to its depth.
    specdec.patch(model, EarlyExitDrafts.for_model(model, k=1), tree="default")
    assert specdec.is_patched(model)


@pytest.mark.parametrize("arch", ["mistral-window", "qwen3-norm"])
def test_mask_training_logits_equal_decoding_mask_rows(arch):
    """The packed training pass sees exactly what a decoding step's mask slots see (layer -1)."""
    model = tiny_model(arch, seed=4)
    source = perturbed_mask(model, k=3, seed=1)
    ids = prompt(model, 21, seed=8)
    n = 15
    _, hidden_t, keys, values = train.teacher_pass(model, ids, -1)
    trained = train.student_logits(model, source.module, hidden_t, keys, values, torch.tensor([n]))[0, 0]
    parts, layout = ModelParts.of(specdec.patch(model, source, backend="torch")), StepLayout.build(TreeShape(()), 3, torch.device("cpu"))
    cache = TreeKVCache(len(parts.layers), 64)
    with torch.no_grad():
        prefill(parts, cache, ids[0, :n], "torch")
        hidden, _ = forward_step(parts, source.prepared(model, "torch"), layout, cache, ids[0, n : n + 1], ids.new_empty(0), n, "torch")
    torch.testing.assert_close(trained, (hidden[1:] @ parts.lm_head.T).float(), atol=1e-4, rtol=1e-4)


def test_exit_training_logits_equal_decoding_exit_states():
    model = tiny_model("llama-gqa", seed=4)
    source = perturbed_exit(model, layer=1, k=2, seed=3)
    ids = prompt(model, 12, seed=8)
    n = 7
    _, hidden_t, keys, values = train.teacher_pass(model, ids, 1)
    trained = train.student_logits(model, source.module, hidden_t, keys, values, torch.tensor([n]))[0, 0]
    parts, layout = ModelParts.of(specdec.patch(model, source, backend="torch")), StepLayout.build(TreeShape(()), 0, torch.device("cpu"))
    cache = TreeKVCache(len(parts.layers), 64)
    with torch.no_grad():
        prefill(parts, cache, ids[0, :n], "torch")
        _, exit_hidden = forward_step(parts, source, layout, cache, ids[0, n : n + 1], ids.new_empty(0), n, "torch")
        decoded = (parts.norm(source.exit_states(exit_hidden[:1])) @ parts.lm_head.T).float()
    torch.testing.assert_close(trained, decoded, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("source,layer,k", [("mask", None, 2), ("exit", 2, 2)])
def test_training_reduces_held_out_kl_of_each_source(source, layer, k):
    model = tiny_model("llama-gqa", seed=2)
    data = torch.randint(0, model.config.vocab_size, (24, 32), generator=torch.Generator().manual_seed(0))
    weights = {name: p.clone() for name, p in model.named_parameters()}
    # Random tiny models barely depend on context: start far from the initialisation to leave something to learn.
    start = train.new_source(model, source, layer, k)
    with torch.no_grad():
        for param in start.module.parameters():
            param.add_(3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) / param.shape[-1] ** 0.5)
    before = specdec.evaluate_predictor(model, start, data[20:], seq_len=32)
    trained = specdec.train_predictor(model, data[:20], predictor=start, steps=30, **FAST)
    after = specdec.evaluate_predictor(model, trained, data[20:], seq_len=32)
    assert trained is start and type(trained) is {"mask": MaskDrafts, "exit": EarlyExitDrafts}[source]
    assert after["kl"] < 0.9 * before["kl"]
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


def test_save_load_round_trip_and_mismatch_errors(tmp_path):
    model = tiny_model("qwen3-norm", seed=3)
    mask, early = perturbed_mask(model, 3, seed=1), perturbed_exit(model, 2, 2, seed=1)
    mask.save_pretrained(tmp_path / "mask")
    early.save_pretrained(tmp_path / "exit")
    loaded_mask = MaskDrafts.from_pretrained(tmp_path / "mask")
    loaded_exit = EarlyExitDrafts.from_pretrained(tmp_path / "exit")
    assert torch.equal(loaded_mask.module.embeddings, mask.module.embeddings) and loaded_mask.k == 3
    assert torch.equal(loaded_exit.module.weight, early.module.weight) and (loaded_exit.exit_layer, loaded_exit.exit_depth) == (2, 2)
    with pytest.raises(ValueError, match="holds a 'mask' draft source.*MaskDrafts.from_pretrained"):
        EarlyExitDrafts.from_pretrained(tmp_path / "mask")
    with pytest.raises(ValueError, match="holds a 'exit' draft source"):
        specdec.FuturePredictor.from_pretrained(tmp_path / "exit")
    specdec.FuturePredictor.for_model(model, 1, 2).save_pretrained(tmp_path / "firp")
    with pytest.raises(ValueError, match="holds a 'firp' draft source"):
        MaskDrafts.from_pretrained(tmp_path / "firp")
    with pytest.raises(ValueError, match="mask-slot source does not match the model: model_type"):
        specdec.patch(tiny_model("llama-gqa"), loaded_mask)
    with pytest.raises(ValueError, match="does not match the model"):
        specdec.patch(tiny_model("llama-gqa"), loaded_exit)
    from safetensors.torch import save_file

    save_file({"embeddings": torch.zeros(2, 5)}, str(tmp_path / "mask" / "predictor.safetensors"))
    with pytest.raises(ValueError, match="embeddings is \\(2, 5\\), expected \\(3, 32\\)"):
        MaskDrafts.from_pretrained(tmp_path / "mask")


def test_cli_trains_mask_and_exit_sources(tmp_path, capsys):
    from specdec.cli import main as cli_main
    from tiny_models import SAMPLE_CODE, tiny_tokenizer

    model, tokenizer = tiny_model("llama-mha", seed=1), tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("".join(SAMPLE_CODE) * 3)
    common = ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "corpus.txt"), "--k", "2", "--steps", "2",
              "--batch-size", "2", "--seq-len", "32", "--tau-prompts", "1", "--max-new-tokens", "8", "--tree", "chain"]
    assert cli_main([*common, "--source", "mask", "--out", str(tmp_path / "mask")]) == 0
    assert cli_main([*common, "--source", "exit", "--layer", "3", "--out", str(tmp_path / "exit")]) == 0
    assert MaskDrafts.from_pretrained(tmp_path / "mask").k == 2
    assert EarlyExitDrafts.from_pretrained(tmp_path / "exit").exit_layer == 3
    assert cli_main([*common, "--source", "mask", "--layer", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "does not apply to --source mask" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mask", "exit+firp"])
def test_triton_backend_with_mask_rows_and_early_exit(name):
    model = tiny_model("llama-gqa", seed=9).to(DEVICE)
    ids = prompt(model, 9, seed=6).to(DEVICE)
    expected = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
    inner = sources(model, 1)[name]
    specdec.patch(model, ForcedDrafts(inner, expected[0].tolist(), model.config.vocab_size), tree="default", backend="triton")
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None))
    assert specdec.stats(model).tau > 2


def test_wrappers_keep_the_early_exit_running():
    """Lookup (and forced drafts) around an early exit still run and rank it."""
    model = tiny_model("llama-gqa", seed=3)
    ids = prompt(model, 6, seed=4)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None)
    wrapped = LookupDrafts(perturbed_exit(model, 1, 2))
    assert (wrapped.exit_layer, wrapped.exit_depth, wrapped.depth, wrapped.k) == (1, 2, 2, 0)
    specdec.patch(model, ForcedDrafts(wrapped, expected[0].tolist(), model.config.vocab_size), tree="chain")
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None))
    assert specdec.stats(model).tau > 0.85 * 3


def test_patching_leaves_the_callers_modules_trainable():
    """Decoding runs on frozen copies: a source can go on training after patch()."""
    model = tiny_model("llama-gqa", seed=1)
    predictor, mask, early = perturbed_predictor(model, 1, 2), perturbed_mask(model, 2), perturbed_exit(model, 2, 1)
    for source in (predictor, mask, early):
        specdec.patch(model, source)
        model.generate(prompt(model, 4, seed=1), max_new_tokens=5, do_sample=False)
        specdec.unpatch(model)
    for module in (predictor, mask.module, early.module):
        assert all(p.requires_grad for p in module.parameters())
