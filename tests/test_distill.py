"""Self-distillation on a tiny random model: chat template, batching, sampling, resume, bad input, and training on its JSONL."""

import json

import pytest
import torch

import specdec
from specdec.cli import main as cli_main
from specdec.training.distill import distill, read_prompts, render
from tiny_models import tiny_model, tiny_tokenizer

TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}<eos>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
PROMPTS = [
    {"id": "a", "prompt": "add two numbers"},
    {"id": "b", "prompt": "print a point"},
    {"id": "c", "prefix": "def add(a, b):\n"},
]


def chat_pair():
    model, tokenizer = tiny_model("llama-mha", seed=2), tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def write_prompts(path, records=PROMPTS):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def records_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_distillation_is_the_models_own_batch_1_greedy_answer(tmp_path):
    model, tokenizer = chat_pair()
    out = tmp_path / "data.jsonl"
    assert distill(model, tokenizer, PROMPTS, out, temperature=0, max_new_tokens=12, batch_size=2, progress=False) == 3
    by_id = {r["id"]: r for r in records_of(out)}
    assert set(by_id) == {"a", "b", "c"} and all(r["sample"] == 0 and r["temperature"] == 0 for r in by_id.values())
    for record in PROMPTS:
        text = render(record, tokenizer)
        assert text.startswith("<user>") == ("prompt" in record)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        expected = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
        got = by_id[record["id"]]
        assert got["text"] == text + tokenizer.decode(expected[: got["new_tokens"]], skip_special_tokens=False)
        assert got["new_tokens"] == 12 or got["text"].endswith("<eos>")


def test_sampled_distillation_resumes_without_repeating(tmp_path):
    model, tokenizer = chat_pair()
    out = tmp_path / "data.jsonl"
    distill(model, tokenizer, PROMPTS[:2], out, temperature=1.0, max_new_tokens=6, samples=2, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        distill(model, tokenizer, PROMPTS, out, max_new_tokens=6, progress=False)
    assert distill(model, tokenizer, PROMPTS, out, temperature=1.0, max_new_tokens=6, samples=2, resume=True, progress=False) == 2
    keys = [(r["id"], r["sample"]) for r in records_of(out)]
    assert sorted(keys) == [(i, s) for i in "abc" for s in (0, 1)]


@pytest.mark.parametrize(
    "lines,message",
    [
        (["not json"], "not JSON"),
        ([{"id": "a", "prompt": "x", "prefix": "y"}], "exactly one"),
        ([{"prompt": "x"}], "string 'id'"),
        ([{"id": "a", "prompt": "  "}], "non-empty"),
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "duplicate id 'a'"),
        ([], "no records"),
    ],
)
def test_bad_prompt_files_are_refused(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    with pytest.raises(ValueError, match=message):
        read_prompts(path)


def test_chat_prompts_need_a_chat_template():
    with pytest.raises(ValueError, match="no chat template"):
        render(PROMPTS[0], tiny_tokenizer())


def test_cli_distills_and_trains_on_the_jsonl(tmp_path, capsys):
    model, tokenizer = chat_pair()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    prompts = write_prompts(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"say {i} " * 3} for i in range(6)])
    data = tmp_path / "data.jsonl"
    common = ["--model", str(tmp_path / "model"), "--prompts", str(prompts), "--out", str(data), "--max-new-tokens", "24"]
    assert cli_main(["distill", *common, "--batch-size", "4"]) == 0
    assert cli_main(["distill", *common]) == 2 and "--resume" in capsys.readouterr().err
    assert len(records_of(data)) == 6
    out = tmp_path / "pred"
    argv = ["train", "--model", str(tmp_path / "model"), "--data", str(data), "--layer", "1", "--k", "2", "--steps", "3",
            "--batch-size", "2", "--seq-len", "24", "--tau-prompts", "1", "--max-new-tokens", "6", "--out", str(out),
            "--bf16", "--eval-every", "2"]
    assert cli_main(argv) == 0
    predictor = specdec.FuturePredictor.from_pretrained(out)
    assert (predictor.layer, predictor.k) == (1, 2)
    curve = [json.loads(line) for line in (out / "checkpoints" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 3] and all(len(c["top1"]) == 2 for c in curve)
    assert curve[-1]["tokens"] == 3 * 2 * 24
