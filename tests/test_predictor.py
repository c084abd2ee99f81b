"""FuturePredictor: identity init, forward, save/load round trip, and every bad file."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from specdec import FuturePredictor
from specdec.drafts.firp.predictor import CONFIG_NAME, WEIGHTS_NAME
from tiny_models import tiny_model


@pytest.fixture
def predictor():
    model = tiny_model("qwen3-norm")
    pred = FuturePredictor.for_model(model, layer=2, k=3)
    with torch.no_grad():
        pred.weight.add_(torch.randn_like(pred.weight))
        pred.bias.add_(torch.randn_like(pred.bias))
    return pred


def test_identity_initialisation():
    model = tiny_model("llama-gqa")
    pred = FuturePredictor.for_model(model, k=2)
    assert pred.layer == 1  # L // 4
    hidden = torch.randn(5, 64)
    assert torch.allclose(pred(hidden), hidden[:, None, :].expand(5, 2, 64))
    assert pred.fingerprint == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 101}


def test_save_load_round_trip(tmp_path, predictor):
    predictor.save_pretrained(tmp_path)
    loaded = FuturePredictor.from_pretrained(tmp_path)
    assert (loaded.layer, loaded.k, loaded.fingerprint) == (predictor.layer, predictor.k, predictor.fingerprint)
    assert torch.equal(loaded.weight, predictor.weight) and torch.equal(loaded.bias, predictor.bias)
    half = FuturePredictor.from_pretrained(tmp_path, dtype=torch.float16)
    assert half.weight.dtype == torch.float16


def corrupt_config(path, **changes):
    config = json.loads((path / CONFIG_NAME).read_text())
    config.update(changes)
    (path / CONFIG_NAME).write_text(json.dumps(config))


def int_weights(path):
    tensors = load_file(str(path / WEIGHTS_NAME))
    save_file({name: tensor.to(torch.int32) for name, tensor in tensors.items()}, str(path / WEIGHTS_NAME))


@pytest.mark.parametrize(
    "damage,error,message",
    [
        (lambda p: (p / CONFIG_NAME).unlink(), FileNotFoundError, "predictor_config.json is missing"),
        (lambda p: (p / WEIGHTS_NAME).unlink(), FileNotFoundError, "predictor.safetensors is missing"),
        (lambda p: (p / CONFIG_NAME).write_text("{not json"), ValueError, "corrupted predictor config"),
        (lambda p: corrupt_config(p, k="three"), ValueError, "field 'k'"),
        (lambda p: corrupt_config(p, format_version=99), ValueError, "format 99"),
        (lambda p: corrupt_config(p, k=0), ValueError, "k=0"),
        (lambda p: corrupt_config(p, layer=True), ValueError, "field 'layer' missing or not int"),
        (lambda p: corrupt_config(p, k=True), ValueError, "field 'k' missing or not int"),
        (lambda p: int_weights(p), ValueError, "corrupted predictor weights .*weight is torch.int32"),
        (lambda p: corrupt_config(p, k=2), ValueError, r"weight is \(3, 32, 32\), expected \(2, 32, 32\)"),
        (lambda p: (p / WEIGHTS_NAME).write_bytes(b"\x00garbage" * 9), ValueError, "corrupted predictor weights"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, predictor, damage, error, message):
    predictor.save_pretrained(tmp_path)
    damage(tmp_path)
    with pytest.raises(error, match=message):
        FuturePredictor.from_pretrained(tmp_path)


def test_non_finite_weights_are_refused(tmp_path, predictor):
    with torch.no_grad():
        predictor.bias[0, 0] = float("nan")
    predictor.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        FuturePredictor.from_pretrained(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no predictor"):
        FuturePredictor.from_pretrained(tmp_path / "nowhere")
