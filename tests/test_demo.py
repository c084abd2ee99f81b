"""The bundled 9M demo model loads offline and decodes exactly under the patch."""

import pytest
import torch

import specdec
from specdec.demo.run import prompt_ids


def test_demo_assets_load_and_decode_exactly():
    model, tokenizer, predictor = specdec.load_demo("stdlib-9m")
    assert model.config.model_type == "llama" and predictor.fingerprint["vocab_size"] == len(tokenizer)
    ids = tokenizer("import os\nimport sys\n\n\ndef main(argv):\n", return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=48, do_sample=False)
    specdec.patch(model, predictor)  # tree="auto": its choices depend on measured timings
    assert torch.equal(model.generate(ids, max_new_tokens=48, do_sample=False), expected)
    specdec.patch(model, specdec.FIRPDrafts(predictor), tree="default")  # FIRP alone, a fixed tree
    assert torch.equal(model.generate(ids, max_new_tokens=48, do_sample=False), expected)
    assert specdec.stats(model).tau > 1.5


def test_demo_runs_without_a_predictor(capsys):
    from specdec.demo.run import run_demo

    summary = run_demo("stdlib-9m", max_new_tokens=12, source="lookup")
    assert summary["identical"]
    assert "n-gram lookup only (no predictor)" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs,message", [(dict(source="bogus"), "source must be one of"), (dict(max_new_tokens=0), "max_new_tokens must be >= 1")])
def test_demo_refuses_bad_settings(kwargs, message):
    from specdec.demo.run import run_demo

    with pytest.raises(ValueError, match=message):
        run_demo("stdlib-9m", **kwargs)


def test_demo_draft_choice():
    with pytest.raises(ValueError, match="draft must be one of"):
        specdec.load_demo("stdlib-9m", draft="eagle")
    with pytest.raises(FileNotFoundError, match="demo 'stdlib-9m' has no 'head' draft source"):
        specdec.load_demo("stdlib-9m", draft="head")
    assert isinstance(specdec.load_demo("stdlib-9m", draft="default")[2], specdec.FuturePredictor)


def test_smollm2_ships_a_token_aware_head_that_decodes_exactly():
    model, tokenizer, head = specdec.load_demo("smollm2-135m")
    assert isinstance(head, specdec.TokenHead) and head.draft_vocab is not None
    assert isinstance(specdec.load_demo("smollm2-135m", draft="firp")[2], specdec.FuturePredictor)
    ids = prompt_ids(tokenizer, "Name three colours.", chat=True)
    expected = model.generate(ids, max_new_tokens=24, do_sample=False)
    specdec.patch(model, head)
    assert torch.equal(model.generate(ids, max_new_tokens=24, do_sample=False), expected)
    assert specdec.stats(model).tau > 1.2
