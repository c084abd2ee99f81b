"""oneDNN-packed linears: the op against its reference, the scope, and the step that runs on them."""

import pytest
import torch
import torch.nn.functional as F

import specdec
from drafting import perturbed_predictor
from kernel_utils import case_generator
from near_tie import assert_greedy_equivalent
from specdec import kernels
from specdec.decode.packing import TRIES, LinearChoice, PackedWeights, PlainWeights, fits_in_memory
from specdec.kernels import packed as packed_op
from tiny_models import ARCHS, prompt, tiny_model

# (dtype, atol, rtol) of the packed op against F.linear (the reduction order differs).
TOLERANCES = [(torch.float32, 1e-4, 1e-4), (torch.bfloat16, 3e-2, 3e-2)]
SHAPES = [(1, 37, 5), (3, 64, 129), (17, 576, 1), (2, 100, 1000)]  # (rows, in, out): odd sizes


def _supported(dtype) -> bool:
    return kernels.packable(torch.empty(2, 2, dtype=dtype))


pytestmark = pytest.mark.skipif(not _supported(torch.float32), reason="this torch build has no oneDNN linear")


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES)
@pytest.mark.parametrize("rows,fan_in,fan_out", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_matches_reference(request, dtype, atol, rtol, rows, fan_in, fan_out, bias):
    if not _supported(dtype):
        pytest.skip(f"oneDNN has no native {dtype} on this CPU")
    gen = case_generator(request)
    weight = torch.randn(fan_out, fan_in, generator=gen).to(dtype)
    b = torch.randn(fan_out, generator=gen).to(dtype) if bias else None
    x = torch.randn(rows, fan_in, generator=gen).to(dtype)
    packed = kernels.pack(weight)
    out = kernels.packed_linear(x, packed, b)
    assert out.shape == (rows, fan_out) and out.dtype == dtype and not out.isnan().any()
    torch.testing.assert_close(out.float(), packed_op.reference_linear(x, weight, b).float(), atol=atol * fan_in**0.5, rtol=rtol)
    batched = torch.randn(2, rows, fan_in, generator=gen).to(dtype)  # leading dimensions pass through
    expected = packed_op.reference_linear(batched, weight, b).float()
    torch.testing.assert_close(kernels.packed_linear(batched, packed, b).float(), expected, atol=atol * fan_in**0.5, rtol=rtol)


def test_pack_refuses_what_onednn_cannot_run():
    assert not kernels.packable(torch.empty(4, 4, dtype=torch.float16))
    assert not kernels.packable(torch.empty(4))
    with pytest.raises(ValueError, match="cannot pack"):
        kernels.pack(torch.empty(4, 4, dtype=torch.float16))


def test_linear_uses_a_packed_weight_only_inside_its_scope(request):
    gen = case_generator(request)
    weight, other = torch.randn(300, 40, generator=gen), torch.randn(300, 40, generator=gen)
    x = torch.randn(3, 40, generator=gen)
    bogus = kernels.pack(other)  # registered for `weight`, so using it shows where the scope applies
    assert torch.equal(packed_op.linear(x, weight), F.linear(x, weight))
    with kernels.packed_scope([(weight, bogus)]):
        assert torch.equal(packed_op.linear(x, weight), kernels.packed_linear(x, bogus))
        assert torch.equal(packed_op.linear(x, weight.clone()), F.linear(x, weight))  # same values, another tensor
        with kernels.packed_scope([(weight, kernels.pack(weight))]):
            torch.testing.assert_close(packed_op.linear(x, weight), F.linear(x, weight), atol=1e-4, rtol=1e-4)
        assert torch.equal(packed_op.linear(x, weight), kernels.packed_linear(x, bogus))  # the outer scope again
    assert torch.equal(packed_op.linear(x, weight), F.linear(x, weight))


def test_lm_head_ops_read_the_packed_head(request):
    gen = case_generator(request)
    head, other = torch.randn(211, 24, generator=gen), torch.randn(211, 24, generator=gen)
    hidden = torch.randn(5, 24, generator=gen)
    with kernels.packed_scope([(head, kernels.pack(other))]):
        ids, _ = kernels.lm_head_argmax(hidden, head, backend="torch")
        top, _, _ = kernels.lm_head_topk(hidden, head, 3, backend="torch")
    assert torch.equal(ids, F.linear(hidden, other).argmax(-1))
    assert torch.equal(top[:, 0], ids)


def _layer_output(model, x):
    return model.model.layers[0].mlp(x)


def test_active_runs_linears_packed_and_restores_them():
    model = tiny_model("llama-gqa")
    layers, head = model.model.layers, model.get_output_embeddings().weight
    packs = PackedWeights()
    assert packs.for_step(layers, head) is packs
    linears = PackedWeights.linears(layers)
    assert len(linears) == 7 * len(layers)  # q, k, v, o, gate, up, down
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = _layer_output(model, x)
        with packs.active(layers, head):
            assert all("forward" in m.__dict__ for m in linears)
            torch.testing.assert_close(_layer_output(model, x), expected, atol=1e-4, rtol=1e-4)
        assert not any("forward" in m.__dict__ for m in linears)
        assert len(packs) == len(linears) + 1
        with pytest.raises(RuntimeError, match="inside"):
            with packs.active(layers, head):
                raise RuntimeError("inside")
        assert not any("forward" in m.__dict__ for m in linears)


def test_each_shape_and_row_count_runs_the_linear_its_calls_timed_faster(request, monkeypatch):
    """On a clock where a packed linear of 1-2 rows takes 3 units and every other call 1, inputs of
    1-2 rows run as stored and the rest packed (ties go to packed), learned per weight shape; every
    output is ``F.linear``'s, while timing and after."""
    now, packed_calls = [0.0], []
    real = kernels.packed_linear

    def clock():
        now[0] += 1.0
        return now[0]

    def slow_below_three_rows(x, packed, bias=None):
        packed_calls.append(x.numel() // x.shape[-1])
        if x.numel() // x.shape[-1] <= 2:
            now[0] += 2.0
        return real(x, packed, bias)

    monkeypatch.setattr(kernels, "packed_linear", slow_below_three_rows)
    choice, g = LinearChoice(clock), case_generator(request)
    weights = [torch.randn(24, 40, generator=g), torch.randn(40, 24, generator=g)]
    packs = [kernels.pack(w) for w in weights]
    for rows in (1, 2, 3, 5, 8):
        for _ in range(2 * TRIES):
            for w, p in zip(weights, packs):
                x = torch.randn(1, rows, w.shape[1], generator=g)
                torch.testing.assert_close(choice.linear(x, w, p, None), F.linear(x, w), atol=1e-5, rtol=1e-5)
    assert choice.packed == {(tuple(w.shape), torch.float32, rows): rows >= 4 for w in weights for rows in (1, 2, 4, 8)}
    packed_calls.clear()
    for rows in (1, 2, 6):
        choice.linear(torch.randn(rows, 40, generator=g), weights[0], packs[0], None)
    assert packed_calls == [6]  # decided: no more timing, each way where it won


def test_each_step_kind_learns_its_own_rate():
    """The achieved rate prices a step's rows: one learned on the weights as stored must not price the
    packed step's (a benchmark alternating compile settings on one model made the packed planner stop
    drafting), so each step kind keeps its own drafting memory."""
    model = tiny_model("llama-gqa")
    ids = prompt(model, 7, seed=1)
    for compile in (False, "auto", False):
        specdec.patch(model, compile=compile)
        model.generate(ids, max_new_tokens=5, do_sample=False)
    memories = specdec.patching._TUNING[model].memories[specdec.patching._NoPredictor]
    assert set(memories) == {(("greedy",), "eager"), (("greedy",), "packed")}
    assert all(memory.rate_seconds > 0 for memory in memories.values())


def test_patching_again_packs_nothing_again(monkeypatch):
    """The packed copies are kept with the model: a later patch() (after unpatch() too) reuses them."""
    model = tiny_model("llama-gqa")
    ids = prompt(model, 7, seed=1)
    packed = []
    pack = kernels.pack
    monkeypatch.setattr(kernels, "pack", lambda weight: packed.append(weight) or pack(weight))
    specdec.patch(model)
    model.generate(ids, max_new_tokens=5, do_sample=False)
    first = len(packed)
    assert first > 0 and specdec.stats(model).step == "packed"
    specdec.patch(model, tree="auto")
    model.generate(ids, max_new_tokens=5, do_sample=False)
    specdec.unpatch(model)
    specdec.patch(model)
    model.generate(ids, max_new_tokens=5, do_sample=False)
    assert len(packed) == first and specdec.stats(model).step == "packed"


def test_weights_changed_in_place_are_packed_again():
    model = tiny_model("llama-gqa")
    layers, head = model.model.layers, model.get_output_embeddings().weight
    packs = PackedWeights()
    x = torch.randn(2, 64)
    with torch.no_grad():
        with packs.active(layers, head):
            _layer_output(model, x)
        layers[0].mlp.up_proj.weight.mul_(-1.5)  # an edit after a call
        expected = _layer_output(model, x)
        with packs.active(layers, head):
            torch.testing.assert_close(_layer_output(model, x), expected, atol=1e-4, rtol=1e-4)


def test_a_new_weight_in_a_freed_weights_place_gets_its_own_pack():
    """A draft head's fresh copy can take the id and memory of a freed copy (same shape, in-place
    version 0): its key then matches the freed weight's entry, which must not be used. Simulated
    here by filing the old weight's entry under the new weight's id and key."""
    packs, x = PackedWeights(), torch.randn(3, 200)
    old, new = torch.nn.Linear(200, 300), torch.nn.Linear(200, 300)
    head = torch.randn(16, 200)
    with torch.no_grad():
        with packs.active(torch.nn.ModuleList([old]), head):
            pass
        stale = packs._packs[id(old.weight)]
        packs._packs = {id(new.weight): ((new.weight.data_ptr(), *stale[0][1:]), *stale[1:])}
        expected = new(x)
        with packs.active(torch.nn.ModuleList([new]), head):
            torch.testing.assert_close(new(x), expected, atol=1e-4, rtol=1e-4)


def test_a_forward_overridden_by_someone_else_is_left_alone():
    model = tiny_model("llama-gqa")
    hooked = model.model.layers[0].mlp.down_proj
    calls = []

    def hook(x):
        calls.append(x.shape)
        return F.linear(x, hooked.weight)

    hooked.forward = hook
    packs = PackedWeights()
    with torch.no_grad(), packs.active(model.model.layers, model.get_output_embeddings().weight):
        _layer_output(model, torch.randn(2, 64))
    assert calls and hooked.forward is hook


def test_packing_is_skipped_without_memory_or_on_unpackable_weights(monkeypatch):
    model = tiny_model("llama-gqa")
    layers, head = model.model.layers, model.get_output_embeddings().weight
    assert isinstance(PackedWeights().for_step(layers, head.half()), PlainWeights)
    monkeypatch.setattr("specdec.decode.packing.available_memory", lambda: 1000)
    assert not fits_in_memory([head])
    assert isinstance(PackedWeights().for_step(layers, head), PlainWeights)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("compile", ["auto", False])
def test_patched_decoding_is_exact_on_packed_and_plain_weights(arch, compile):
    model = tiny_model(arch, seed=11)
    ids = prompt(model, 12, seed=2)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None)
    specdec.patch(model, perturbed_predictor(model, layer=1, k=2, seed=4), tree="default", compile=compile)
    out = model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    assert specdec.stats(model).step == ("packed" if compile == "auto" else "eager")
    assert not any("forward" in m.__dict__ for m in model.model.layers.modules())


@pytest.mark.parametrize("bad", ["yes", "true", 0, None, 1])
def test_compile_refuses_other_values(bad):
    model = tiny_model("llama-gqa")
    with pytest.raises(ValueError, match="compile must be 'auto', True or False"):
        specdec.patch(model, compile=bad)
    assert not specdec.is_patched(model)
