"""Pseudo-row adapters: real rows bit-identical with adapters on and off, the training pass equals
the decoding pass, training moves them, persistence, the Triton path and bad input."""

import pytest
import torch

import specdec
from drafting import ScrambledDrafts, one_step, perturbed_mask, perturbed_predictor, without_adapters
from kernel_utils import DEVICE
from near_tie import assert_greedy_equivalent
from specdec import FIRPDrafts, ForcedDrafts, MaskDrafts, PseudoRowAdapters
from specdec.training import train
from specdec.decode.tree import TreeShape
from tiny_models import ARCHS, NUM_LAYERS, prompt, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only costs on a busy machine
FAST = dict(batch_size=4, seq_len=32, positions=None, progress=False, lr=1e-2, warmup=3)
MAPS = ("linear", "mlp", "multi")


def adapted_sources(model, index: int) -> dict:
    """A FIRP source (map kind by ``index``, adapters on a subset of its later layers) and mask slots
    with adapters on every layer, all adapters random."""
    layer = index % 2
    predictor = perturbed_predictor(model, layer, k=2, seed=index, map=MAPS[index % 3], adapter_rank=3, adapter_layers=[layer + 1, 3])
    return {"firp": FIRPDrafts(predictor), "mask": perturbed_mask(model, k=2, seed=index, adapter_rank=2)}


@pytest.mark.parametrize("index,arch", list(enumerate(ARCHS)))
def test_real_rows_are_bit_identical_with_adapters_on_and_off(index, arch):
    model = tiny_model(arch, seed=30 + index)
    ids = prompt(model, 12, seed=index)
    shape = TreeShape.resolve("default", 2)
    for name, source in adapted_sources(model, index).items():
        adapted, adapted_cache, real, head = one_step(model, source, ids, 9, shape)
        plain, plain_cache, _, _ = one_step(model, without_adapters(source), ids, 9, shape)
        assert torch.equal(adapted[:real], plain[:real]), name
        assert torch.equal(adapted[:real] @ head.T, plain[:real] @ head.T), name
        for layer in range(NUM_LAYERS):  # the real rows' keys and values, every layer
            valid = 9 + real
            assert torch.equal(adapted_cache.keys[layer][:, :, :valid], plain_cache.keys[layer][:, :, :valid])
            assert torch.equal(adapted_cache.values[layer][:, :, :valid], plain_cache.values[layer][:, :, :valid])
        assert not torch.allclose(adapted[real:], plain[real:], atol=1e-3), f"{name}: the adapters changed no pseudo row"
    # The hooks are gone after the step: the model computes as before.
    layer = model.model.layers[NUM_LAYERS - 1]
    assert not any(module._forward_hooks for module in layer.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_output_is_bit_identical_with_adapters_on_and_off(arch):
    """The same trees (scrambled true drafts, static shape) with adapted and unadapted pseudo rows:
    every step's real rows compute the same values, so the outputs are the same tensor."""
    model = tiny_model(arch, seed=7)
    ids = prompt(model, 5, seed=3)
    expected = model.generate(ids, max_new_tokens=24, do_sample=False)
    outputs = []
    for source in (adapted_sources(model, 1)["firp"], adapted_sources(model, 2)["mask"]):
        for variant in (source, without_adapters(source)):
            specdec.patch(model, ScrambledDrafts(variant, expected[0].tolist(), model.config.vocab_size, seed=5), tree="default")
            outputs.append(model.generate(ids, max_new_tokens=24, do_sample=False))
            specdec.unpatch(model)
        assert torch.equal(outputs[-2], outputs[-1])
        assert_greedy_equivalent(model, expected, outputs[-1])


@pytest.mark.parametrize("name,arch", [("firp", "qwen2-bias"), ("mask", "mistral-window")])
def test_training_logits_equal_decoding_adapted_pseudo_rows(name, arch):
    """The packed training pass (every row a pseudo row) computes what a decoding step computes for
    adapted pseudo rows (real rows first)."""
    model = tiny_model(arch, seed=4)
    source = adapted_sources(model, 2)[name]
    module = source.predictor if name == "firp" else source.module
    ids = prompt(model, 21, seed=8)
    n = 15
    _, hidden_t, keys, values = train.teacher_pass(model, ids, module.input_layers)
    trained = train.student_logits(model, module, hidden_t, keys, values, torch.tensor([n]))[0, 0]
    hidden, _, real, head = one_step(model, source, ids, n, TreeShape(()))
    torch.testing.assert_close(trained, (hidden[real:] @ head.T).float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("source", ["firp", "mask"])
def test_training_moves_the_adapters_lowers_held_out_kl_and_keeps_the_model(source):
    model = tiny_model("llama-gqa", seed=2)
    data = torch.randint(0, model.config.vocab_size, (24, 32), generator=torch.Generator().manual_seed(0))
    weights = {name: p.clone() for name, p in model.named_parameters()}
    start = train.new_source(model, source, 1 if source == "firp" else None, 2, adapter_rank=4)
    module = train.trainable(start)
    with torch.no_grad():  # start far from a good map, as the other training tests do
        for name in module.BASE_PARAMETERS:
            param = getattr(module, name)
            param.add_(3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) / param.shape[-1] ** 0.5)
    before = specdec.evaluate_predictor(model, start, data[20:], seq_len=32)
    trained = specdec.train_predictor(model, data[:20], predictor=start, steps=20, adapter_lr=3e-2, **FAST)
    after = specdec.evaluate_predictor(model, trained, data[20:], seq_len=32)
    assert after["kl"] < 0.9 * before["kl"]
    assert all(float(block.up.detach().abs().max()) > 0 for layer in module.adapters.blocks.values() for block in layer.values())
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


def test_adapter_learning_rate_is_its_own():
    model = tiny_model("llama-gqa")
    module = specdec.FuturePredictor.for_model(model, 1, 2, adapter_rank=2)
    groups = train.parameter_groups(module, specdec.TrainConfig(lr=1e-3, adapter_lr=5e-2))
    assert [g["lr"] for g in groups] == [1e-3, 5e-2]
    assert [len(g["params"]) for g in groups] == [2, 2 * 7 * 2]  # weight, bias; A and B of 7 projections in layers 2, 3


def test_save_load_round_trip_and_refusals(tmp_path):
    model = tiny_model("qwen3-norm", seed=3)
    firp = perturbed_predictor(model, 1, 2, seed=1, adapter_rank=3, adapter_layers=[3])
    mask = perturbed_mask(model, 2, seed=1, adapter_rank=2, adapter_layers=[0, 2])
    firp.save_pretrained(tmp_path / "firp")
    mask.save_pretrained(tmp_path / "mask")
    loaded, loaded_mask = specdec.FuturePredictor.from_pretrained(tmp_path / "firp"), MaskDrafts.from_pretrained(tmp_path / "mask")
    for saved, back in ((firp, loaded), (mask.module, loaded_mask.module)):
        assert back.config_dict() == saved.config_dict()
        assert all(torch.equal(back.state_dict()[name], tensor) for name, tensor in saved.state_dict().items())
    assert loaded.config_dict()["adapters"]["layers"] == [3] and loaded.config_dict()["adapters"]["rank"] == 3
    with pytest.raises(ValueError, match="holds a 'mask' draft source"):
        specdec.FuturePredictor.from_pretrained(tmp_path / "mask")
    other = tiny_model("qwen3-norm", intermediate_size=40)  # same fingerprint, other MLP width
    with pytest.raises(ValueError, match="adapter of layer 3 gate_proj maps 32 -> 70 but the model's gate_proj is \\(32, 40\\)"):
        specdec.patch(other, loaded)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda m: specdec.FuturePredictor.for_model(m, 1, 2, adapter_rank=2, adapter_layers=[1]), r"adapter layers must be in \[2, 3\]"),
        (lambda m: specdec.FuturePredictor.for_model(m, 1, 2, adapter_rank=2, adapter_layers=[4]), r"adapter layers must be in \[2, 3\].*got \[4\]"),
        (lambda m: specdec.FuturePredictor.for_model(m, 3, 2, adapter_rank=2), "pass through none"),
        (lambda m: specdec.FuturePredictor.for_model(m, 1, 2, adapter_layers=[2]), "without an adapter rank"),
        (lambda m: specdec.FuturePredictor.for_model(m, 1, 2, adapter_rank=-1), "rank must be an int >= 1"),
        (lambda m: specdec.FuturePredictor.for_model(m, 1, 2, adapter_rank=2, adapter_layers=[2, 2]), "distinct"),
        (lambda m: MaskDrafts.for_model(m, 2, adapter_rank=2, adapter_layers=[-1]), r"adapter layers must be in \[0, 3\]"),
        (lambda m: train.new_source(m, "exit", 1, 1, adapter_rank=2), "adapters do not apply"),
    ],
)
def test_bad_adapter_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make(tiny_model("llama-gqa"))


def test_corrupted_adapter_config_is_refused(tmp_path):
    import json

    from specdec.drafts.firp.predictor import CONFIG_NAME

    model = tiny_model("llama-gqa")
    specdec.FuturePredictor.for_model(model, 1, 2, adapter_rank=2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    config["adapters"]["layers"] = [0, 1]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="corrupted predictor config .*adapters must be on layers after the transfer layer 1"):
        specdec.FuturePredictor.from_pretrained(tmp_path)
    config["adapters"] = {"rank": 2, "layers": [2], "shapes": {"qkv": [1, 2]}}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="corrupted predictor config .*'adapters' must hold"):
        specdec.FuturePredictor.from_pretrained(tmp_path)


def test_triton_backend_with_adapted_pseudo_rows():
    model = tiny_model("llama-gqa", seed=9).to(DEVICE)
    ids = prompt(model, 9, seed=6).to(DEVICE)
    expected = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
    inner = adapted_sources(model, 1)["firp"]  # an MLP map with adapters
    specdec.patch(model, ForcedDrafts(inner, expected[0].tolist(), model.config.vocab_size), tree="default", backend="triton")
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None))
    assert specdec.stats(model).tau > 2


def test_adapters_are_a_module_of_their_own():
    model = tiny_model("llama-mha")
    adapters = PseudoRowAdapters.for_model(model, 2, first=1)
    assert adapters.layers == (1, 2, 3) and set(adapters.shapes) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(float(block.up.detach().abs().max()) == 0 for layer in adapters.blocks.values() for block in layer.values())
