"""The command line refuses bad input at once, in one line, before loading anything: --model / --device / --out /
--resume, numbers out of range, layers the model's config.json rules out, data that is not text; demo's options."""

import json
import re

import pytest
import torch
import transformers

import specdec
from specdec.cli import main as cli_main
from tiny_models import SAMPLE_CODE, tiny_model, tiny_tokenizer


@pytest.fixture
def no_loading(monkeypatch):
    """Loading any model or tokenizer fails the test: bad input must be refused before (and without the Hub)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the arguments were checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model folder with its tokenizer, and a corpus file."""
    folder = tmp_path_factory.mktemp("cli")
    tiny_model("llama-mha", seed=1).save_pretrained(folder / "model")
    tiny_tokenizer().save_pretrained(folder / "model")
    (folder / "corpus.txt").write_text("".join(SAMPLE_CODE) * 3)
    return folder


def trained(argv, capsys) -> None:
    """Run a training that must succeed, and drop what it printed (progress bars go to stderr)."""
    assert cli_main(argv) == 0
    capsys.readouterr()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("name", ["/nonexistent/model", "smollm3-360m", "HuggingFaceTB/SmolLM2-135M"])
def test_model_that_is_no_local_folder_nor_demo_is_refused(tmp_path, capsys, no_loading, name):
    argv = ["train", "--model", name, "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(argv) == 2
    err = one_error_line(capsys)
    assert f"--model {name}: no such folder" in err and "stdlib-9m" in err and "nothing is downloaded" in err


def test_distill_refuses_an_unknown_model(tmp_path, capsys, no_loading):
    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prompt": "x = "}\n')
    argv = ["distill", "--model", "nosuchmodel", "--prompts", str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "o.jsonl")]
    assert cli_main([*argv, "--device", "cpu"]) == 2
    assert "--model nosuchmodel: no such folder" in one_error_line(capsys)


def test_folder_without_config_is_refused(tmp_path, capsys, no_loading):
    argv = ["train", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(argv) == 2
    assert "has no config.json" in one_error_line(capsys)


UNUSABLE = ["cuda:99", "no-such-device"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("device", UNUSABLE)
def test_unusable_device_is_refused(tmp_path, capsys, no_loading, device):
    argv = ["train", "--model", "stdlib-9m", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--device", device]
    assert cli_main(argv) == 2
    err = one_error_line(capsys)
    assert f"--device {device} is not usable here" in err and "usable: cpu" in err


def train_argv(model_dir, out, *extra):
    return ["train", "--model", str(model_dir / "model"), "--data", str(model_dir / "corpus.txt"), "--layer", "1", "--k", "2",
            "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--tau-prompts", "0", "--device", "cpu", "--out", str(out), *extra]


def test_out_holding_a_predictor_needs_force(model_dir, tmp_path, capsys):
    out = tmp_path / "pred"
    trained(train_argv(model_dir, out), capsys)
    written = (out / "predictor.safetensors").stat().st_mtime_ns
    assert cli_main(train_argv(model_dir, out)) == 2
    assert "already holds a predictor: pass --force" in one_error_line(capsys)
    assert (out / "predictor.safetensors").stat().st_mtime_ns == written
    assert cli_main(train_argv(model_dir, out, "--force")) == 0


def test_cli_trains_a_token_aware_head(model_dir, tmp_path, capsys):
    out = tmp_path / "head"
    argv = ["train", "--model", str(model_dir / "model"), "--data", str(model_dir / "corpus.txt"), "--source", "head", "--k", "3",
            "--steps", "3", "--batch-size", "2", "--seq-len", "32", "--tau-prompts", "1", "--max-new-tokens", "8", "--draft-vocab", "40",
            "--device", "cpu", "--out", str(out)]
    assert cli_main(argv) == 0
    assert "saved the draft head" in capsys.readouterr().out
    head = specdec.TokenHead.from_pretrained(out)
    assert head.depth == 3 and len(head.draft_vocab) == 40
    report = json.loads((out / "training_report.json").read_text())
    assert report["source"] == "head" and len(report["top1"]) == 2 and report["tau"] >= 1.0
    assert len(list((out / "checkpoints" / "features").iterdir())) == 2  # training and held-out states, named by their text


def test_new_run_over_checkpoints_needs_resume_or_force(model_dir, tmp_path, capsys):
    checkpoints = tmp_path / "ckpt"
    trained(train_argv(model_dir, tmp_path / "a", "--checkpoint-dir", str(checkpoints)), capsys)
    assert cli_main(train_argv(model_dir, tmp_path / "b", "--checkpoint-dir", str(checkpoints))) == 2
    assert "already holds a checkpoint: pass --resume to continue that run, or --force" in one_error_line(capsys)


def test_cli_resume_with_another_seq_len_is_refused(model_dir, tmp_path, capsys):
    checkpoints = tmp_path / "ckpt"
    trained(train_argv(model_dir, tmp_path / "a", "--checkpoint-dir", str(checkpoints)), capsys)
    resumed = train_argv(model_dir, tmp_path / "b", "--checkpoint-dir", str(checkpoints), "--resume", "--steps", "4")
    assert cli_main([*resumed, "--seq-len", "24"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # found after loading the model (its progress bar is above)
    assert err.startswith("error: resume: ")
    assert "other settings" in err and "seq_len 32 (this run: 24)" in err and "steps 2 (this run: 4)" in err


FAST = dict(layer=1, k=2, steps=4, batch_size=4, seq_len=32, positions=None, progress=False, checkpoint_every=2)


@pytest.mark.parametrize("change,named", [(dict(seq_len=24), "seq_len 32 (this run: 24)"), (dict(batch_size=2), "batch_size 4 (this run: 2)"),
                                          (dict(lr=1e-2), "lr 0.003 (this run: 0.01)")])
def test_resume_with_other_settings_is_refused(tmp_path, change, named):
    model = tiny_model("llama-gqa", seed=5)
    data = torch.randint(0, model.config.vocab_size, (24, 32), generator=torch.Generator().manual_seed(0))
    specdec.train_predictor(model, data, checkpoint_dir=str(tmp_path), **FAST)
    with pytest.raises(ValueError, match="resume: the checkpoint in .* was written with other settings: " + re.escape(named)):
        specdec.train_predictor(model, data, checkpoint_dir=str(tmp_path), resume=True, **{**FAST, **change})


def bare_train_argv(model_dir, tmp_path, *extra):
    """``train`` on a corpus far too small for training: an argument error must show before the corpus error."""
    (tmp_path / "tiny.txt").write_text("x = 1\n")
    return ["train", "--model", str(model_dir / "model"), "--data", str(tmp_path / "tiny.txt"), "--device", "cpu",
            "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--k", "0"], "--k takes an integer >= 1, got 0"),
        (["--steps", "-5"], "--steps takes an integer >= 1, got -5"),
        (["--steps", "0"], "--steps takes an integer >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size takes an integer >= 1, got 0"),
        (["--lr", "-1"], "--lr takes a number > 0, got -1.0"),
        (["--lr", "nan"], "--lr takes a number > 0, got nan"),
        (["--adapter-rank", "2", "--adapter-lr", "0"], "--adapter-lr takes a number > 0, got 0.0"),
        (["--layer", "-1"], "--layer takes an integer >= 0, got -1"),
        (["--source", "exit", "--layer", "-2"], "--layer takes an integer >= 0, got -2"),
        (["--layers", "0,-1"], "--layers takes layers like 5-9 or 5,7,9 (each >= 0), got '0,-1'"),
        (["--layers", "1,2,1"], "--layers names layer 1 more than once"),
        (["--seq-len", "0"], "--seq-len takes an integer >= 2, got 0"),
        (["--seq-len", "4", "--k", "3"], "--seq-len 4 is too short for --k 3: sequences need at least k + 2 = 5 tokens"),
        (["--positions", "0"], "--positions takes a count >= 1 of positions sampled per sequence, or 'all'; got '0'"),
        (["--positions", "some"], "--positions takes a count >= 1 of positions sampled per sequence, or 'all'; got 'some'"),
        (["--checkpoint-every", "0"], "--checkpoint-every takes an integer >= 1, got 0"),
        (["--eval-every", "-1"], "--eval-every takes an integer >= 0 (0: no curve), got -1"),
        (["--tau-prompts", "-1"], "--tau-prompts takes an integer >= 0 (0: no tau), got -1"),
        (["--max-new-tokens", "0"], "--max-new-tokens takes an integer >= 1, got 0"),
        (["--map", "mlp", "--map-width", "0"], "--map-width takes an integer >= 1, got 0"),
        (["--map", "multi", "--earlier-layer", "-2"], "--earlier-layer takes an integer >= -1 (-1: the embeddings), got -2"),
        (["--draft-vocab", "-1"], "--draft-vocab takes an integer >= 0 (0: the whole vocabulary), got -1"),
        (["--tree", "0"], "--tree: a tree needs at least 1 node, got 0"),
        (["--tree", "bushy"], "--tree: unknown tree 'bushy'"),
        (["--k", "1", "--tree", "11"], "--tree: tree=11 asks for more nodes than exist: with k=1"),
        (["--source", "head", "--layer", "1"], "--layer does not apply to --source head"),
        (["--source", "head", "--adapter-rank", "4"], "--adapter-rank does not apply to --source head"),
        (["--source", "mask", "--draft-vocab", "10"], "--draft-vocab ranks FIRP's pseudo rows or the head's drafts: it does not apply to --source mask"),
    ],
)
def test_train_arguments_are_checked_before_anything_is_loaded(model_dir, tmp_path, capsys, no_loading, extra, message):
    assert cli_main(bare_train_argv(model_dir, tmp_path, *extra)) == 2
    assert one_error_line(capsys).startswith(f"error: {message}")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layer", "9"], "--layer: transfer layer must be an int in [0, 3] for a 4-layer model, got 9"),
        (["--layers", "1,9"], "--layers: transfer layer must be an int in [0, 3] for a 4-layer model, got 9"),
        (["--source", "exit", "--layer", "4"], "--layer: exit layer must be an int in [0, 3] for a 4-layer model, got 4"),
        (["--map", "multi", "--layer", "1", "--earlier-layer", "1"], "--earlier-layer: the earlier layer must be an int in [-1, 0] (below the transfer layer 1), got 1"),
        (["--adapter-rank", "2", "--adapter-layers", "0-2"], "--adapter-layers: adapter layers must be in [2, 3] (the layers the pseudo rows pass through in a 4-layer model), got [0, 1]"),
        (["--adapter-rank", "2", "--layer", "3"], "--adapter-rank: no layers to adapt: pseudo rows entering after layer 3 pass through none of the 4"),
        (["--source", "mask", "--adapter-rank", "2", "--adapter-layers", "3,4"], "--adapter-layers: adapter layers must be in [0, 3] (the layers the pseudo rows pass through in a 4-layer model), got [4]"),
        (["--seq-len", "1000"], "--seq-len: seq_len 1000 exceeds the model's max_position_embeddings 512"),
    ],
)
def test_layer_arguments_are_checked_against_config_json_before_loading(model_dir, tmp_path, capsys, no_loading, extra, message):
    """The tiny model has 4 layers and 512 positions: its config.json says so before any weight is read."""
    assert cli_main(bare_train_argv(model_dir, tmp_path, *extra)) == 2
    assert one_error_line(capsys) == f"error: {message}"


def test_config_json_that_is_not_json_is_refused_before_loading(tmp_path, capsys, no_loading):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{not json")
    argv = ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(argv) == 2
    assert f"--model: {tmp_path / 'model' / 'config.json'} is not a JSON model config" in one_error_line(capsys)


@pytest.mark.parametrize(
    "content,message",
    [
        (bytes(torch.randint(0, 256, (20_000,), generator=torch.Generator().manual_seed(0)).tolist()), "is not UTF-8 text"),
        (bytes(range(1, 32)) * 500, "is not text: 84% of its characters are control characters"),
    ],
)
def test_training_data_that_is_not_text_is_refused_before_loading(model_dir, tmp_path, capsys, no_loading, content, message):
    (tmp_path / "random.bin").write_bytes(content)
    argv = ["train", "--model", str(model_dir / "model"), "--data", str(tmp_path / "random.bin"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert cli_main(argv) == 2
    err = one_error_line(capsys)
    assert f"corpus file {tmp_path / 'random.bin'} {message}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--batch-size", "0"], "--batch-size takes an integer >= 1, got 0"),
        (["--samples", "0"], "--samples takes an integer >= 1, got 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens takes an integer >= 1, got 0"),
        (["--temperature", "-1"], "--temperature takes a number >= 0 (0: greedy), got -1.0"),
    ],
)
def test_distill_arguments_are_checked_before_anything_is_loaded(model_dir, tmp_path, capsys, no_loading, extra, message):
    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prefix": "x = "}\n')
    argv = ["distill", "--model", str(model_dir / "model"), "--prompts", str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "o.jsonl"),
            "--device", "cpu", *extra]
    assert cli_main(argv) == 2
    assert one_error_line(capsys) == f"error: {message}"


@pytest.fixture
def demo_calls(monkeypatch):
    """``run_demo``'s calls, recorded instead of running a demo."""
    import specdec.demo.run

    calls = []
    monkeypatch.setattr(specdec.demo.run, "run_demo", lambda name, *, max_new_tokens, source: calls.append((name, max_new_tokens, source)))
    return calls


@pytest.mark.parametrize(
    "argv,call",
    [
        (["demo"], ("smollm2-135m", None, "trained")),
        (["demo", "--model", "stdlib-9m", "--source", "lookup", "--max-new-tokens", "5"], ("stdlib-9m", 5, "lookup")),
        (["demo", "--name", "stdlib-9m"], ("stdlib-9m", None, "trained")),  # --model's old name still works
    ],
)
def test_demo_takes_model_source_and_max_new_tokens(demo_calls, argv, call):
    assert cli_main(argv) == 0
    assert demo_calls == [call]


def test_demo_help_names_model_not_its_old_name(capsys):
    with pytest.raises(SystemExit):
        cli_main(["demo", "--help"])
    shown = capsys.readouterr().out
    assert "--model {smollm2-135m,stdlib-9m}" in shown and "--source {trained,firp,lookup}" in shown and "--name" not in shown


def test_demo_refuses_zero_new_tokens(demo_calls, capsys):
    assert cli_main(["demo", "--model", "stdlib-9m", "--max-new-tokens", "0"]) == 2
    assert one_error_line(capsys) == "error: --max-new-tokens takes an integer >= 1, got 0"
    assert demo_calls == []
