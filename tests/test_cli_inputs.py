"""The command line refuses bad --model / --device / --out / --resume input at once, in one line."""

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
