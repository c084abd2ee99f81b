"""A patched model as an object: pickling, deep copies, and the dtype of what ``generate`` returns."""

import copy
import io
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from tiny_models import prompt, tiny_model

NEW = dict(max_new_tokens=20, do_sample=False)


@pytest.fixture
def patched():
    """A patched tiny model, a prompt and plain greedy's output for it."""
    model = tiny_model("llama-gqa", seed=1)
    ids = prompt(model, 6, seed=0)
    expected = model.generate(ids, **NEW)
    specdec.patch(model, perturbed_predictor(model, 1, k=3), tree="chain")
    return model, ids, expected


def torch_round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("round_trip", [lambda m: pickle.loads(pickle.dumps(m)), torch_round_trip, copy.deepcopy], ids=["pickle", "torch.save", "deepcopy"])
def test_copies_stay_patched_and_exact(patched, round_trip):
    model, ids, expected = patched
    loaded = round_trip(model)
    assert specdec.is_patched(loaded)
    assert torch.equal(loaded.generate(ids, **NEW), expected)
    assert specdec.stats(loaded).fallback is None and specdec.stats(loaded).steps > 0  # decoded speculatively
    assert specdec.stats(model) is None  # the original's state is not shared with the copy
    specdec.unpatch(loaded)
    assert not specdec.is_patched(loaded) and loaded.config._attn_implementation == "sdpa"
    assert torch.equal(loaded.generate(ids, **NEW), expected)


@pytest.mark.parametrize("round_trip", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy], ids=["pickle", "deepcopy"])
def test_copies_after_a_call_on_packed_weights(patched, round_trip):
    """After a call, the patch state holds oneDNN-packed copies of the weights (compile="auto" on a
    CPU), which cannot be copied: copies leave them behind and pack again."""
    model, ids, expected = patched
    specdec.patch(model, perturbed_predictor(model, 1, k=3), tree="chain")  # compile="auto"
    assert torch.equal(model.generate(ids, **NEW), expected)
    assert specdec.stats(model).step == "packed"
    loaded = round_trip(model)
    assert torch.equal(loaded.generate(ids, **NEW), expected)
    assert specdec.stats(loaded).step == "packed"


def test_fresh_process_loads_a_patched_model(patched, tmp_path):
    """A new interpreter has no specdec attention registered until the pickle brings it back."""
    model, ids, expected = patched
    torch.save({"model": model, "ids": ids, "expected": expected, "logits": model(ids).logits}, tmp_path / "saved.pt")
    script = textwrap.dedent(
        f"""
        import torch
        saved = torch.load({str(tmp_path / "saved.pt")!r}, weights_only=False)
        model, ids = saved["model"], saved["ids"]
        assert torch.equal(model(ids).logits, saved["logits"])
        assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), saved["expected"])
        import specdec
        assert specdec.stats(model).fallback is None
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
def test_int32_ids_come_back_as_plain_returns_them(patched, sample):
    model, ids, _ = patched
    kwargs = dict(max_new_tokens=12, do_sample=sample)
    torch.manual_seed(0)
    specdec.unpatch(model)
    plain = model.generate(ids.int(), **kwargs)
    specdec.patch(model, perturbed_predictor(model, 1, k=3), tree="chain")
    torch.manual_seed(0)
    out = model.generate(ids.int(), **kwargs)
    assert specdec.stats(model).fallback is None
    assert out.dtype == plain.dtype == torch.int64
    if not sample:
        assert torch.equal(out, plain)
