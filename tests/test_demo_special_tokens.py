"""The 9M demo's special tokens do not push common requests off the speculative path."""

import warnings

import torch

import specdec


def test_overriding_eos_without_attention_mask_stays_speculative():
    """Prompts start with BOS: were it also the pad token, ``generate`` would infer padding over it
    whenever ``eos_token_id`` differs from the pad, and specdec would fall back to plain decoding."""
    model, tokenizer, predictor = specdec.load_demo("stdlib-9m")
    ids = tokenizer("import os\nimport sys\n\n\ndef main(argv):\n", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    kwargs = dict(max_new_tokens=24, do_sample=False, eos_token_id=newline)
    expected = model.generate(ids, **kwargs)
    specdec.patch(model, predictor)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = model.generate(ids, **kwargs)
    assert specdec.stats(model).fallback is None
    assert torch.equal(out, expected)
    assert tokenizer.pad_token_id != tokenizer.bos_token_id and model.generation_config.pad_token_id != tokenizer.bos_token_id
