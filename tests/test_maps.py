"""Richer FIRP maps (residual MLP, two input layers), alone and with adapters: they start as the linear
map, the training pass equals the decoding pass, training lowers held-out KL, decoding is exact on
every architecture, persistence and the CLI."""

import json
import re

import pytest
import torch

import specdec
from drafting import one_step, perturbed_exit, perturbed_mask, perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec import FIRPDrafts, LookupDrafts, MLPPredictor, MultiLayerPredictor
from specdec.training import train
from specdec.cli import main as cli_main
from specdec.patching import STATE_ATTR
from specdec.drafts.firp.predictor import CONFIG_NAME
from specdec.decode.tree import TreeShape
from tiny_models import ARCHS, SAMPLE_CODE, prompt, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only costs on a busy machine
FAST = dict(batch_size=4, seq_len=32, positions=None, progress=False, lr=1e-2, warmup=3)


def test_untrained_maps_are_the_linear_map():
    model = tiny_model("llama-gqa")
    hidden, earlier = torch.randn(5, 64), torch.randn(5, 64)
    linear = specdec.FuturePredictor.for_model(model, 2, k=3)
    mlp = MLPPredictor.for_model(model, 2, k=3, width=24)
    multi = MultiLayerPredictor.for_model(model, 2, k=3)
    assert mlp.width == 24 and multi.earlier_layer == 1 and multi.input_layers == (2, 1)
    assert MultiLayerPredictor.for_model(model, 0).earlier_layer == -1  # layer 0: the embeddings
    assert torch.equal(mlp(hidden), linear(hidden))
    assert torch.equal(multi(torch.cat([hidden, earlier], -1)), linear(hidden))
    assert MLPPredictor.for_model(model, 2).width == 64  # default: the hidden size


# (map, options, transfer layer, architecture): the training pass against a decoding step.
TRAINING_CASES = [
    ("mlp", {}, 1, "llama-gqa"),
    ("mlp", {"adapter_rank": 2}, 2, "qwen3-norm"),
    ("multi", {"earlier_layer": -1}, 1, "mistral-window"),
    ("multi", {"earlier_layer": 0, "adapter_rank": 3, "adapter_layers": [3]}, 2, "qwen2-bias"),
]


@pytest.mark.parametrize("kind,options,layer,arch", TRAINING_CASES)
def test_training_logits_equal_decoding_pseudo_rows(kind, options, layer, arch):
    model = tiny_model(arch, seed=4)
    predictor = perturbed_predictor(model, layer, k=3, seed=1, map=kind, **options)
    ids = prompt(model, 21, seed=8)
    n = 15
    teacher, hidden_t, keys, values = train.teacher_pass(model, ids, predictor.input_layers)
    trained = train.student_logits(model, predictor, hidden_t, keys, values, torch.tensor([n]))[0, 0]
    hidden, _, real, head = one_step(model, FIRPDrafts(predictor), ids, n, TreeShape(()))
    torch.testing.assert_close(trained, (hidden[real:] @ head.T).float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close((hidden[0] @ head.T).float(), teacher[0, n].float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind,new", [("mlp", "down"), ("multi", "earlier_weight")])
def test_training_lowers_held_out_kl_and_keeps_the_model(kind, new):
    model = tiny_model("llama-gqa", seed=2)
    data = torch.randint(0, model.config.vocab_size, (24, 32), generator=torch.Generator().manual_seed(0))
    weights = {name: p.clone() for name, p in model.named_parameters()}
    start = train.new_source(model, "firp", 2, 2, map=kind)
    with torch.no_grad():  # start far from a good map, as the other training tests do
        start.weight.add_(0.3 * torch.randn(start.weight.shape, generator=torch.Generator().manual_seed(0)))
    before = specdec.evaluate_predictor(model, start, data[20:], seq_len=32)
    trained = specdec.train_predictor(model, data[:20], predictor=start, steps=20, **FAST)
    after = specdec.evaluate_predictor(model, trained, data[20:], seq_len=32)
    assert trained is start and after["kl"] < 0.7 * before["kl"]
    assert float(getattr(trained, new).detach().abs().max()) > 0, f"{new} did not train"
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


def test_bf16_autocast_trains_maps_and_adapters():
    model = tiny_model("llama-gqa", seed=2)
    data = torch.randint(0, model.config.vocab_size, (8, 32), generator=torch.Generator().manual_seed(0))
    for start in (train.new_source(model, "firp", 1, 2, map="mlp", adapter_rank=2), train.new_source(model, "mask", None, 2, adapter_rank=2)):
        trained = train.trainable(specdec.train_predictor(model, data, predictor=start, steps=2, bf16=True, **FAST))
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trained.parameters())


def new_sources(model, index: int) -> dict:
    """The new sources, alone and combined, seeded by ``index``."""
    multi = perturbed_predictor(model, 2, k=2, seed=index, map="multi", adapter_rank=2)
    return {
        "mlp+adapters": FIRPDrafts(perturbed_predictor(model, index % 3, k=1 + index % 3, seed=index, map="mlp", width=16, adapter_rank=3)),
        "multi+adapters (+lookup)": multi,  # patch() merges lookup, as for the linear map
        "mask+adapters": perturbed_mask(model, k=2, seed=index, adapter_rank=2, adapter_layers=[1, 2]),
        "exit+multi": perturbed_exit(model, layer=1, k=1, seed=index, inner=FIRPDrafts(multi)),
    }


TREES = ("auto", "default", "chain", "wide")


@pytest.mark.parametrize("index,arch", list(enumerate(ARCHS)))
def test_new_sources_match_plain_greedy(index, arch):
    model = tiny_model(arch, seed=40 + index)
    prompts = [(prompt(model, length, seed), new) for seed, (length, new) in enumerate(((1, 9), (7, 30)))]
    plain = [model.generate(ids, max_new_tokens=new, do_sample=False) for ids, new in prompts]
    for turn, (name, source) in enumerate(new_sources(model, index).items()):
        specdec.patch(model, source, tree=TREES[(index + turn) % len(TREES)])  # each source meets every tree, auto included
        for (ids, new), expected in zip(prompts, plain):
            assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=new, do_sample=False))
            assert specdec.stats(model).fallback is None, name
        specdec.unpatch(model)


def test_patch_merges_lookup_for_every_map_with_adapters():
    model = tiny_model("llama-gqa")
    for predictor in (specdec.FuturePredictor.for_model(model, 1, adapter_rank=2), MLPPredictor.for_model(model, 1), MultiLayerPredictor.for_model(model, 2, adapter_rank=2)):
        source = getattr(specdec.patch(model, predictor), STATE_ATTR).source
        assert isinstance(source, LookupDrafts) and isinstance(source.inner, FIRPDrafts) and source.inner.predictor is predictor
        assert source.capture_layer == predictor.earlier_layer
    specdec.unpatch(model)


def test_save_load_dispatches_on_the_map_and_refuses_other_kinds(tmp_path):
    model = tiny_model("qwen2-bias", seed=3)
    mlp = perturbed_predictor(model, 1, 2, seed=1, map="mlp", width=8, adapter_rank=2)
    multi = perturbed_predictor(model, 2, 2, seed=2, map="multi", earlier_layer=0)
    mlp.save_pretrained(tmp_path / "mlp")
    multi.save_pretrained(tmp_path / "multi")
    specdec.FuturePredictor.for_model(model, 1, 2).save_pretrained(tmp_path / "linear")
    for saved, folder in ((mlp, "mlp"), (multi, "multi")):
        for loader in (specdec.FuturePredictor, type(saved)):
            loaded = loader.from_pretrained(tmp_path / folder)
            assert type(loaded) is type(saved) and loaded.config_dict() == saved.config_dict()
            assert all(torch.equal(loaded.state_dict()[name], t) for name, t in saved.state_dict().items())
    config = json.loads((tmp_path / "mlp" / CONFIG_NAME).read_text())
    assert (config["map"], config["width"], config["adapters"]["rank"], config["adapters"]["layers"]) == ("mlp", 8, 2, [2, 3])
    with pytest.raises(ValueError, match="holds a 'multi' map, not a 'mlp' one"):
        MLPPredictor.from_pretrained(tmp_path / "multi")
    with pytest.raises(ValueError, match="holds a 'linear' map, not a 'multi' one"):
        MultiLayerPredictor.from_pretrained(tmp_path / "linear")
    with pytest.raises(ValueError, match="holds a 'firp' draft source"):
        specdec.EarlyExitDrafts.from_pretrained(tmp_path / "mlp")
    with pytest.raises(ValueError, match="predictor does not match the model: model_type"):
        specdec.patch(tiny_model("llama-gqa"), specdec.FuturePredictor.from_pretrained(tmp_path / "mlp"))
    for change, message in ((dict(width=0), "field 'width'"), (dict(map="deep"), "holds a 'deep' map"), (dict(earlier_layer=5), "earlier layer must be")):
        folder = tmp_path / ("multi" if "earlier_layer" in change else "mlp")
        original = (folder / CONFIG_NAME).read_text()
        (folder / CONFIG_NAME).write_text(json.dumps({**json.loads(original), **change}))
        with pytest.raises(ValueError, match=message):
            specdec.FuturePredictor.from_pretrained(folder)
        (folder / CONFIG_NAME).write_text(original)


def test_resume_continues_exactly_and_refuses_another_source(tmp_path, monkeypatch):
    model = tiny_model("llama-gqa", seed=5)
    data = torch.randint(0, model.config.vocab_size, (16, 32), generator=torch.Generator().manual_seed(0))
    settings = dict(steps=4, adapter_lr=2e-2, **FAST)

    def start(**options):
        torch.manual_seed(0)  # the MLP's and the adapters' random initial A, V
        return train.new_source(model, "firp", 1, 2, map="mlp", width=8, **options)

    straight = specdec.train_predictor(model, data, predictor=start(adapter_rank=2), **settings)
    real_save = train.save_checkpoint

    def save_then_crash(config, *args):
        real_save(config, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        specdec.train_predictor(model, data, predictor=start(adapter_rank=2), checkpoint_dir=str(tmp_path), checkpoint_every=2, **settings)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    resumed = specdec.train_predictor(model, data, predictor=start(adapter_rank=2), checkpoint_dir=str(tmp_path), checkpoint_every=2, resume=True, **settings)
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor)
    with pytest.raises(ValueError, match=r"another source: adapters \{'rank': 2.*\(this run: None\)"):
        specdec.train_predictor(model, data, predictor=start(), checkpoint_dir=str(tmp_path), resume=True, **settings)
    with pytest.raises(ValueError, match=r"another source: map 'mlp' \(this run: 'linear'\)"):
        specdec.train_predictor(model, data, layer=1, k=2, checkpoint_dir=str(tmp_path), resume=True, **settings)


@pytest.fixture
def cli_files(tmp_path):
    model, tokenizer = tiny_model("llama-mha", seed=1), tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("".join(SAMPLE_CODE) * 3)
    return ["train", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "corpus.txt"), "--k", "2", "--steps", "2",
            "--batch-size", "2", "--seq-len", "32", "--max-new-tokens", "8", "--tree", "chain"]


def test_cli_trains_richer_maps_and_adapters(tmp_path, cli_files):
    out = tmp_path / "mlp"
    argv = [*cli_files, "--layer", "1", "--map", "mlp", "--map-width", "8", "--adapter-rank", "2", "--adapter-layers", "2-3",
            "--adapter-lr", "0.02", "--tau-prompts", "1", "--out", str(out)]
    assert cli_main(argv) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["map"] == "mlp" and report["adapters"]["layers"] == [2, 3] and report["tau"] >= 1
    loaded = specdec.FuturePredictor.from_pretrained(out)
    assert isinstance(loaded, MLPPredictor) and loaded.width == 8 and loaded.adapters.layers == (2, 3)
    assert cli_main([*cli_files, "--layer", "2", "--map", "multi", "--earlier-layer", "0", "--tau-prompts", "0", "--out", str(tmp_path / "multi")]) == 0
    assert specdec.FuturePredictor.from_pretrained(tmp_path / "multi").earlier_layer == 0
    assert cli_main([*cli_files, "--source", "mask", "--adapter-rank", "2", "--adapter-layers", "0,3", "--tau-prompts", "0", "--out", str(tmp_path / "mask")]) == 0
    assert specdec.MaskDrafts.from_pretrained(tmp_path / "mask").module.adapters.layers == (0, 3)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--source", "mask", "--map", "mlp"], "--map is FIRP's"),
        (["--map", "mlp", "--earlier-layer", "0"], "--earlier-layer is an option of --map multi"),
        (["--map-width", "8"], "--map-width is an option of --map mlp"),
        (["--adapter-layers", "2"], "--adapter-layers needs --adapter-rank"),
        (["--adapter-rank", "2", "--adapter-layers", "2-x"], "--adapter-layers takes layers like"),
        (["--adapter-rank", "2", "--source", "exit"], "adapters do not apply to --source exit"),
        (["--layers", "0,1", "--map", "mlp"], "--layers sweeps linear maps"),
        (["--layer", "1", "--adapter-rank", "2", "--adapter-layers", "1-2"], r"adapter layers must be in \[2, 3\]"),
    ],
)
def test_cli_refuses_bad_map_and_adapter_options(tmp_path, cli_files, capsys, extra, message):
    assert cli_main([*cli_files, *extra, "--tau-prompts", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
