"""Predictor training: it learns, it matches decoding, it resumes, sweeps, and refuses bad input."""

import json
import logging

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec.training import train
from specdec.decode.cache import TreeKVCache
from specdec.cli import main as cli_main
from specdec.decode.loop import ModelParts, forward_step, prefill
from specdec.drafts import FIRPDrafts
from specdec.training.data import read_corpus
from specdec.decode.tree import StepLayout, TreeShape
from tiny_models import SAMPLE_CODE, prompt, tiny_model, tiny_tokenizer

FAST = dict(batch_size=4, seq_len=32, positions=None, progress=False, lr=1e-2, warmup=3)


def token_data(model, count=24, length=32, seed=0):
    return torch.randint(0, model.config.vocab_size, (count, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch,layer", [("mistral-window", 1), ("qwen3-norm", 3), ("llama-gqa", 0)])
def test_training_logits_equal_decoding_pseudo_rows(arch, layer):
    """The packed training pass sees exactly what a decoding step's pseudo rows see."""
    model = tiny_model(arch, seed=4)
    predictor = perturbed_predictor(model, layer, k=3, seed=1)
    ids = prompt(model, 21, seed=8)
    n = 15
    teacher, hidden_t, keys, values = train.teacher_pass(model, ids, layer)
    trained = train.student_logits(model, predictor, hidden_t, keys, values, torch.tensor([n]))[0, 0]

    specdec.patch(model, predictor, backend="torch")
    parts, layout = ModelParts.of(model), StepLayout.build(TreeShape(()), 3, torch.device("cpu"))
    cache = TreeKVCache(len(parts.layers), 64)
    with torch.no_grad():
        prefill(parts, cache, ids[0, :n], "torch")
        hidden, _ = forward_step(parts, FIRPDrafts(predictor).prepared(model, "torch"), layout, cache, ids[0, n : n + 1], ids.new_empty(0), n, "torch")
        decoded = (hidden[1:] @ parts.lm_head.T).float()
    torch.testing.assert_close(trained, decoded, atol=1e-4, rtol=1e-4)
    # The real row's logits are the teacher's at position n.
    torch.testing.assert_close((hidden[0] @ parts.lm_head.T).float(), teacher[0, n].float(), atol=1e-4, rtol=1e-4)


def test_training_reduces_held_out_kl_and_keeps_the_model_frozen():
    model = tiny_model("llama-gqa", seed=2)
    data = token_data(model)
    weights = {name: p.clone() for name, p in model.named_parameters()}
    # Random tiny models barely depend on context, so start far from the identity to leave something to learn.
    start = perturbed_predictor(model, 1, k=3, seed=2)
    with torch.no_grad():
        start.weight.add_(0.3 * torch.randn(start.weight.shape, generator=torch.Generator().manual_seed(0)))
    before = specdec.evaluate_predictor(model, start, data[20:], seq_len=32)
    predictor = specdec.train_predictor(model, data[:20], predictor=start, steps=40, **FAST)
    after = specdec.evaluate_predictor(model, predictor, data[20:], seq_len=32)
    assert after["kl"] < 0.7 * before["kl"]
    assert all(torch.equal(p, weights[name]) and p.requires_grad for name, p in model.named_parameters())


def test_trained_predictor_decodes_exactly(tmp_path):
    model = tiny_model("qwen2-bias", seed=3)
    predictor = specdec.train_predictor(model, token_data(model), layer=2, k=2, steps=10, **FAST)
    predictor.save_pretrained(tmp_path)
    ids = prompt(model, 9, seed=1)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    specdec.patch(model, specdec.FuturePredictor.from_pretrained(tmp_path))
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=30, do_sample=False))


def test_resume_continues_where_the_checkpoint_left_off(tmp_path, monkeypatch):
    model = tiny_model("llama-gqa", seed=5)
    data = token_data(model)
    settings = dict(layer=1, k=2, steps=8, **FAST)
    straight = specdec.train_predictor(model, data, **settings)

    real_save = train.save_checkpoint

    def save_then_crash(config, *args):
        real_save(config, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        specdec.train_predictor(model, data, checkpoint_dir=str(tmp_path), checkpoint_every=4, **settings)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = specdec.train_predictor(model, data, checkpoint_dir=str(tmp_path), checkpoint_every=4, resume=True, **settings)
    torch.testing.assert_close(resumed.weight, straight.weight)
    torch.testing.assert_close(resumed.bias, straight.bias)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    model = tiny_model("llama-gqa")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        specdec.train_predictor(model, token_data(model), layer=1, steps=2, checkpoint_dir=str(tmp_path), resume=True, **FAST)


def test_sweep_reports_every_layer_with_tau():
    model = tiny_model("llama-gqa", seed=6)
    data = token_data(model, count=16)
    config = specdec.TrainConfig(steps=3, **FAST)
    prompts = [prompt(model, 6, seed=s) for s in range(2)]
    results = specdec.sweep_layers(model, data[:12], data[12:], [0, 2, 3], k=2, config=config, prompts=prompts, max_new_tokens=12)
    assert [r.layer for r in results] == [0, 2, 3]
    assert all(len(r.top1) == 2 and 1.0 <= r.tau <= 3.0 for r in results)
    assert not specdec.is_patched(model)


def test_text_corpus_is_tokenised_and_packed():
    model, tokenizer = tiny_model("llama-mha"), tiny_tokenizer()
    packed = train.as_sequences(model, SAMPLE_CODE, tokenizer, 16)
    assert packed.dim() == 2 and packed.shape[1] == 16 and int(packed.max()) < len(tokenizer)
    assert (packed == tokenizer.eos_token_id).any()


@pytest.mark.parametrize(
    "data,kwargs,message",
    [
        ([], {}, "corpus is empty"),
        (["   ", "\n"], {}, "corpus is empty"),
        (["x = 1\n"], {}, "fewer than one sequence"),
        (SAMPLE_CODE, {"seq_len": 4096}, "max_position_embeddings"),
        (torch.zeros(0, 8, dtype=torch.long), {}, "non-empty"),
    ],
)
def test_bad_corpus_is_refused(data, kwargs, message):
    model = tiny_model("llama-mha")
    settings = {**FAST, **kwargs}
    with pytest.raises(ValueError, match=message):
        specdec.train_predictor(model, data, layer=1, tokenizer=tiny_tokenizer(), steps=1, **settings)


def test_tokenizer_of_another_model_is_refused():
    model = tiny_model("llama-gqa")  # 101 tokens; the tokenizer has 257
    with pytest.raises(ValueError, match="do not belong together"):
        specdec.train_predictor(model, SAMPLE_CODE, layer=1, tokenizer=tiny_tokenizer(), steps=1, **FAST)


def test_corpus_reader_handles_folders_and_jsonl(tmp_path):
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello\n")
    (tmp_path / "sub" / "c.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    assert read_corpus([tmp_path]) == ["print(1)\n", "hello\n", "one", "two"]
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: no string field 'text'"):
        read_corpus([tmp_path / "bad.jsonl"])
    with pytest.raises(FileNotFoundError):
        read_corpus([tmp_path / "missing"])


def test_corpus_reader_refuses_files_that_are_not_text(tmp_path):
    random_bytes = bytes(torch.randint(0, 256, (20_000,), generator=torch.Generator().manual_seed(0)).tolist())
    (tmp_path / "random.bin").write_bytes(random_bytes)
    with pytest.raises(ValueError, match=r"^corpus file .*random\.bin is not UTF-8 text \(invalid start byte at byte \d+\)"):
        read_corpus([tmp_path / "random.bin"])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "good.txt").write_text("print(1)\n")
    (tmp_path / "data" / "zeros.txt").write_bytes(b"\x00" * 1000 + b"x = 1\n")  # valid UTF-8, but binary
    with pytest.raises(ValueError, match=r"zeros\.txt is not text: 99% of its characters are control characters"):
        read_corpus([tmp_path / "data"])
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl is not UTF-8 text"):
        read_corpus([tmp_path / "latin1.jsonl"])
    text = "x = 1\f\n\x1b[31mred\x1b[0m\tcaf\u00e9 \u2014 \U0001F600\n"  # text with a few control characters is kept
    (tmp_path / "colour.txt").write_text(text, encoding="utf-8")
    assert read_corpus([tmp_path / "colour.txt"]) == [text]


@pytest.fixture
def transformers_warnings():
    """The records transformers' loggers emit during the test."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_packing_a_corpus_longer_than_the_tokenizers_maximum_does_not_warn(transformers_warnings):
    """The corpus is cut into sequences, so transformers' "longer than the maximum length" warning is wrong here."""
    model, tokenizer = tiny_model("llama-mha"), tiny_tokenizer()
    tokenizer.model_max_length = 32
    text = "".join(SAMPLE_CODE) * 3
    assert train.as_sequences(model, [text], tokenizer, 16).shape[0] > 2
    assert [r.getMessage() for r in transformers_warnings] == []
    tokenizer(text)  # a plain call still warns, so the capture would have seen it
    assert "Token indices sequence length is longer than the specified maximum" in transformers_warnings[0].getMessage()


def test_sweep_checks_every_layer_before_training_any(monkeypatch):
    model = tiny_model("llama-gqa")

    def never(*args, **kwargs):
        raise AssertionError("a layer was trained before every layer was checked")

    monkeypatch.setattr("specdec.training.sweep.train_predictor", never)
    with pytest.raises(ValueError, match=r"transfer layer must be an int in \[0, 3\] for a 4-layer model, got 9"):
        specdec.sweep_layers(model, token_data(model, count=4), token_data(model, count=2), [1, 9], k=2, config=specdec.TrainConfig(steps=1, **FAST))


def test_cli_train_sweeps_layers_and_saves_the_best(tmp_path, capsys):
    model, tokenizer = tiny_model("llama-mha", seed=1), tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("".join(SAMPLE_CODE) * 3)
    (tmp_path / "files.txt").write_text(f"{tmp_path / 'corpus.txt'}\n")  # an @file argument list
    out = tmp_path / "pred"
    argv = ["train", "--model", str(tmp_path / "model"), "--data", f"@{tmp_path / 'files.txt'}", "--layers", "0,2",
            "--k", "2", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--tau-prompts", "1",
            "--max-new-tokens", "8", "--draft-vocab", "20", "--out", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "top1@1" in printed and "best transfer layer" in printed
    report = json.loads((out / "training_report.json").read_text())
    assert report["layer"] in (0, 2) and len(report["top1"]) == 2
    assert [row["layer"] for row in report["sweep"]] == [0, 2] and all(row["tau"] >= 1 for row in report["sweep"])
    saved = specdec.FuturePredictor.from_pretrained(out)
    assert saved.k == 2 and len(saved.draft_vocab) == 20  # the 20 most frequent tokens of the corpus
    counts = torch.bincount(torch.tensor(tokenizer("".join(SAMPLE_CODE))["input_ids"]), minlength=model.config.vocab_size)
    assert counts[saved.draft_vocab.ids].sum() >= counts.sort(descending=True).values[:20].sum() * 0.8
    refused = argv[:-2] + ["--source", "mask", "--out", str(tmp_path / "mask")]
    refused.remove("--layers"), refused.remove("0,2")
    assert cli_main(refused) == 2 and "--draft-vocab ranks FIRP's pseudo rows" in capsys.readouterr().err
    missing = ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")]
    assert cli_main(missing) == 2 and "nowhere" in capsys.readouterr().err  # missing data, not the occupied --out


@pytest.mark.parametrize("source", ["firp", "mask", "exit"])
def test_eval_every_records_the_curve_for_every_source(tmp_path, source):
    """``eval_every`` appends held-out accuracy at step 0, every N steps and the end, whatever the source."""
    model = tiny_model("llama-mha", seed=2)
    data = token_data(model)
    start = train.new_source(model, source, None if source == "mask" else 1, 2)
    specdec.train_predictor(model, data[:20], predictor=start, steps=3, eval_every=2, eval_data=data[20:],
                            checkpoint_dir=str(tmp_path), **FAST)
    curve = train.read_curve(tmp_path)
    assert [entry["step"] for entry in curve] == [0, 2, 3]
    assert all(len(entry["top1"]) == 2 and entry["pseudo_rows"] == entry["step"] * 4 * (32 - 3) * 2 for entry in curve)


@pytest.mark.parametrize("bad", [dict(checkpoint_every=0), dict(eval_every=-1), dict(lr=0.0), dict(lr=float("nan")), dict(adapter_lr=-1e-3)])
def test_train_config_refuses_bad_numbers(bad):
    with pytest.raises(ValueError, match="must be"):
        specdec.TrainConfig(**bad)
