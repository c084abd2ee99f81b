"""GGUF -> safetensors conversion (a tiny GGUF written here, never the 98 MB SmolLM2 file) and the demo cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec import demo
from specdec.demo.convert import convert_gguf, plain_copy
from tiny_gguf import write_tiny_gguf
from tiny_models import tiny_model


@pytest.fixture
def gguf_file(tmp_path):
    pytest.importorskip("gguf", reason="writing and reading GGUF files needs the gguf package")
    model = tiny_model("llama-gqa", seed=3)
    return model, write_tiny_gguf(model, tmp_path / "tiny.gguf")


def test_converted_gguf_saves_loads_and_computes_the_same_logits(gguf_file, tmp_path):
    model, path = gguf_file
    out = convert_gguf(path, tmp_path / "converted")
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert getattr(loaded.config, "quantization_config", None) is None and loaded.dtype == torch.float32
    ids = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(out).eos_token == "</s>"
    with pytest.raises(FileExistsError):
        convert_gguf(path, out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "other")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-written folder left


def test_plain_copy_drops_the_quantization_config_and_keeps_tied_weights(tmp_path):
    model = tiny_model("llama-mha")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    copy = plain_copy(model)
    assert getattr(copy.config, "quantization_config", None) is None
    assert copy.lm_head.weight.data_ptr() == copy.model.embed_tokens.weight.data_ptr()
    copy.save_pretrained(tmp_path)
    ids = torch.arange(9)[None]
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, model(ids).logits)


def test_demo_converts_once_into_the_cache_folder(gguf_file, tmp_path, monkeypatch, capsys):
    _, path = gguf_file
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "smollm2_gguf", lambda: path)
    folder = demo.smollm2_dir()
    assert folder.parent == tmp_path / "cache" and (folder / "model.safetensors").is_file()
    assert "first use" in capsys.readouterr().err
    assert demo.smollm2_dir() == folder and "first use" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown demo"):
        demo.load_demo("gpt-5")
