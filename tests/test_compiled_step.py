"""``compile=True``: the step as one compiled program over a static cache (:mod:`specdec.decode.graphs`).

These tests compile: on a CPU each tiny model's program is exported and built by AOTInductor into
packages (one per core, up to 4, each by a process of its own; ~20-25 s on 2 cores), kept in the
test session's cache folder (``conftest.py``); a model whose packages exist loads them instead. The
tests share models (``SHARED_SEED``) so that the file builds 7 steps, not 10 (the five
architectures, a second llama-gqa and an edited one), one more in three parts for FIRP's pseudo
rows, 2 of the draft head's pass (~10 s each), and one build that fails at once.
"""

import copy
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import specdec
from drafting import perturbed_head, perturbed_predictor
from near_tie import assert_greedy_equivalent
from simulated_device import pin_cost
from specdec.decode.cache import TreeKVCache
from specdec.decode.graphs import HeadProgram, StaticKVCache, layer_ranges, padded_rows
from specdec.decode import packages as packages_module
from specdec.decode.packages import cache_dir, package_key
from specdec.drafts.base import frozen_copy
from tiny_models import ARCHS, prompt, tiny_model

pytestmark = pytest.mark.xdist_group("compiled")  # one worker runs the file: its tests share the packages they build
SHARED_SEED = 3  # every test's model: the same weights, hence the same package, across tests


def flat(rows: int) -> float:
    """A device where rows are nearly free: lookup chains are worth verifying."""
    return 0.01 * (1 + 0.01 * rows)


def repeated(model, seed: int) -> torch.Tensor:
    """A prompt whose text repeats, so n-gram lookup finds chains to draft."""
    ids = prompt(model, 10, seed=seed)
    return torch.cat([ids, ids, ids[:, :3]], dim=1)


def greedy(model, ids, new: int) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None)


def packages() -> int:
    """Compiled programs built so far (this test session's package folder; a step split into parts
    is one program of several files ``KEY-IofN.pt2``)."""
    return len({path.stem.split("-")[0] for path in (cache_dir() / "steps").glob("*.pt2")})


def own_group(arch: str):
    """``arch``'s test with the tests that share its package (the file's group for llama-gqa, whose
    package most tests share): xdist may run each group on another worker."""
    return arch if arch == "llama-gqa" else pytest.param(arch, marks=pytest.mark.xdist_group(f"compiled-{arch}"))


@pytest.mark.parametrize("arch", [own_group(arch) for arch in ARCHS])
def test_compiled_step_decodes_exactly(arch, monkeypatch, capfd):
    model = tiny_model(arch, seed=SHARED_SEED)
    requests = [(repeated(model, 5), 40), (prompt(model, 1, 7), 12), (prompt(model, 30, 8), 60)]
    expected = [greedy(model, ids, new) for ids, new in requests]
    pin_cost(model, monkeypatch, flat)
    specdec.patch(model, compile=True)
    drafted = 0
    for (ids, new), plain in zip(requests, expected):
        assert_greedy_equivalent(model, plain, greedy(model, ids, new))
        run = specdec.stats(model)
        assert run.fallback is None and run.step == "compiled"
        drafted += sum(run.nodes)
    assert drafted > 0  # trees of several rows ran through the program, not only single rows
    err = capfd.readouterr().err
    assert len(re.findall(r"specdec: (built|loaded) the step in", err)) == 1  # the progress line (built, or loaded if another test built it), once


def test_no_recompilation_over_300_steps_of_mixed_trees_and_a_growing_prefix(monkeypatch, capfd):
    model = tiny_model("llama-gqa", seed=SHARED_SEED)
    head = perturbed_head(model, depth=3, seed=2)
    ids = repeated(model, 9)
    plain = greedy(model, ids, 150)
    specdec.patch(model, head, compile=True)
    seconds = specdec.warmup(model, rows=(1, 3, 8))  # a server's start: compiles the step and the head's pass, times the step
    assert set(seconds) == {1, 3, 8} and all(s > 0 for s in seconds.values())
    assert (model.device, model.dtype, "greedy", "compiled") in specdec.patching._TUNING[model].costs  # the planner's curve
    pin_cost(model, monkeypatch, flat)  # then a device where rows are nearly free, for long trees
    err = capfd.readouterr().err
    assert "specdec: compiling the draft head's pass" in err and len(re.findall(r"specdec: (built|loaded) (the step|the draft head's pass) in", err)) == 2  # the step built here or loaded
    before, steps, rows = packages(), 0, set()
    for predictor, tree in [(None, "auto"), (head, "auto"), (specdec.HeadDrafts(head), 5), (specdec.HeadDrafts(head), "default"),
                            (specdec.HeadDrafts(head), "chain"), (head, "auto")]:
        specdec.patch(model, predictor, tree=tree, compile=True)
        assert_greedy_equivalent(model, plain, greedy(model, ids, 150))  # the prefix grows to 183 positions
        run = specdec.stats(model)
        steps += run.steps
        rows |= set(run.rows)
    assert steps >= 300 and len(rows) >= 5  # many steps, trees of many sizes
    assert packages() == before and "specdec:" not in capfd.readouterr().err  # nothing compiled, nothing loaded again

    # Calls in two threads at once: one decodes on the kept cache, the other on a cache of its own.
    requests = [repeated(model, seed) for seed in (31, 32, 33, 34)]
    specdec.unpatch(model)
    plain = [greedy(model, ids, 40) for ids in requests]
    specdec.patch(model, compile=True)
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda ids: greedy(model, ids, 40), requests))
    for expected, out in zip(plain, outputs):
        assert_greedy_equivalent(model, expected, out)
    assert packages() == before and "specdec:" not in capfd.readouterr().err


@pytest.mark.xdist_group("compiled-qwen3-norm")
def test_sampling_with_the_compiled_step_is_seeded_like_the_eager_step():
    """Sampling draws from the same counter-based stream whatever the step: with a fixed seed the
    compiled step's output is the eager step's (the distribution tests cover the eager step)."""
    model = tiny_model("qwen3-norm", seed=SHARED_SEED)
    ids = repeated(model, 2)
    outputs = {}
    for compile in (False, True):
        specdec.patch(model, compile=compile)
        torch.manual_seed(7)
        outputs[compile] = model.generate(ids, max_new_tokens=40, do_sample=True, temperature=0.8, eos_token_id=None)
        assert specdec.stats(model).fallback is None
    assert torch.equal(outputs[False], outputs[True])


def test_each_model_and_each_change_of_weights_gets_its_own_program(capfd):
    first, second = tiny_model("llama-gqa", seed=SHARED_SEED), tiny_model("llama-gqa", seed=22)
    ids = repeated(first, 4)
    plain = {id(m): greedy(m, ids, 30) for m in (first, second)}
    for model in (first, second, first):
        specdec.patch(model, compile=True)
        assert torch.equal(greedy(model, ids, 30), plain[id(model)])
    before = packages()
    with torch.no_grad():
        first.model.layers[1].mlp.down_proj.weight.mul_(-1.5)  # in place, while patched
    specdec.unpatch(first)
    changed = greedy(first, ids, 30)
    assert not torch.equal(changed, plain[id(first)])
    specdec.patch(first, compile=True)
    assert_greedy_equivalent(first, changed, greedy(first, ids, 30))  # not the graph frozen with the old weights
    assert packages() == before + 1 and "specdec: compiling the step" in capfd.readouterr().err  # with its progress line
    copied = copy.deepcopy(first)  # a copy decodes with a program of its own: the same weights, so the package is loaded
    assert_greedy_equivalent(copied, changed, greedy(copied, ids, 30))
    assert packages() == before + 1 and "specdec: loading the compiled step" in capfd.readouterr().err


def test_layer_ranges_end_at_the_stops_and_share_the_build_processes(monkeypatch):
    """One range per build process (``$SPECDEC_BUILD_PARTS``, else the usable cores, at most 4),
    sizes within one of each other, and a range ending at each stop (a FIRP source's), the extra
    ranges going to the widest segments. (The pseudo-row test below builds and runs three parts.)"""
    assert layer_ranges(30, 2) == [range(0, 15), range(15, 30)]
    assert layer_ranges(30, 3) == [range(0, 10), range(10, 20), range(20, 30)]
    assert layer_ranges(30, 2, (16,)) == [range(0, 16), range(16, 30)]
    assert layer_ranges(30, 4, (16,)) == [range(0, 8), range(8, 16), range(16, 23), range(23, 30)]
    assert layer_ranges(4, 2, (1, 3)) == [range(0, 1), range(1, 3), range(3, 4)]
    assert layer_ranges(4, 1, (1, 3)) == [range(0, 1), range(1, 3), range(3, 4)]
    assert layer_ranges(3, 8) == [range(0, 1), range(1, 2), range(2, 3)]
    monkeypatch.setenv("SPECDEC_BUILD_PARTS", "3")
    assert packages_module.build_parts(30) == 3 and packages_module.build_parts(2) == 2
    monkeypatch.delenv("SPECDEC_BUILD_PARTS")
    monkeypatch.setattr(packages_module, "usable_cores", lambda: 16)
    assert packages_module.build_parts(30) == packages_module.MAX_PARTS


def test_a_failed_build_says_why_at_every_call(monkeypatch):
    """A build process that fails (here: a setting inductor does not know) raises with its log at the
    package's first call and at every later one; nothing is left in the package folder."""
    monkeypatch.setattr(packages_module, "INDUCTOR_CONFIGS", {**packages_module.INDUCTOR_CONFIGS, "no_such_setting": 1})
    model = tiny_model("llama-gqa", seed=SHARED_SEED)
    folder = cache_dir() / "steps"
    before = sorted(folder.iterdir()) if folder.is_dir() else []
    specdec.patch(model, compile=True)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="(?s)building a compiled package failed.*no_such_setting"):
            greedy(model, repeated(model, 3), 5)
    assert sorted(folder.iterdir()) == before


@pytest.mark.parametrize("rows,capacity", [(1, 300), (2, 259), (5, 700)])
def test_the_heads_compiled_pass_is_its_eager_pass(rows, capacity):
    """The draft head's package computes what ``TokenHead.forward`` computes (a single row padded
    with a second one), and writes the same keys and values at the same slots."""
    model = tiny_model("qwen3-norm", seed=SHARED_SEED)
    head = frozen_copy(perturbed_head(model, depth=3, seed=1), model)
    program = HeadProgram(head, package_key(head, HeadProgram.TRACED_FILES))
    gen = torch.Generator().manual_seed(rows)
    d, heads = head.hidden_size, head.num_heads
    features, embeds = torch.randn(1, rows, d, generator=gen), torch.randn(1, rows, d, generator=gen)
    start = capacity - rows - 7
    positions, slots = torch.arange(start, start + rows), torch.arange(start, start + rows)
    mask = torch.rand(rows, capacity, generator=gen) < 0.5
    mask[:, start:] = False
    mask[:, start : start + rows] = torch.ones(rows, rows, dtype=torch.bool).tril()
    caches = [torch.randn(1, heads, capacity, d // heads, generator=gen) for _ in range(2)]
    eager_kv, compiled_kv = [c.clone() for c in caches], [c.clone() for c in caches]
    with torch.no_grad():
        expected = head(features, embeds, positions, slots, mask, *eager_kv)
        got = program(features, embeds, positions, slots, mask, *compiled_kv)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    for eager, compiled in zip(eager_kv, compiled_kv):
        torch.testing.assert_close(compiled[:, :, : start + rows], eager[:, :, : start + rows], atol=1e-5, rtol=1e-5)


def test_pseudo_rows_run_through_the_compiled_step(monkeypatch, capfd):
    """FIRP maps reading two layers (states captured after layer 0, pseudo rows entering after layer
    2): the program leaves off after both, in three parts, and the source writes the pseudo rows
    between them. Decoding is exact under auto and static trees, with pseudo rows in the steps, and
    FIRP alone drafts about as well as on the eager step (wrong pseudo rows would draft nothing)."""
    model = tiny_model("llama-gqa", seed=SHARED_SEED)
    predictor = perturbed_predictor(model, layer=2, k=2, map="multi", earlier_layer=0)
    requests = [(repeated(model, 11), 40), (prompt(model, 20, 12), 30)]
    expected = [greedy(model, ids, new) for ids, new in requests]
    pin_cost(model, monkeypatch, flat)
    accepted = {}
    for source, tree, compile in [(predictor, "auto", True), (specdec.FIRPDrafts(predictor), "default", True), (specdec.FIRPDrafts(predictor), "default", False)]:
        specdec.patch(model, source, tree=tree, compile=compile)
        for (ids, new), plain in zip(requests, expected):
            assert_greedy_equivalent(model, plain, greedy(model, ids, new))
            run = specdec.stats(model)
            assert run.fallback is None and run.step == ("compiled" if compile else "eager")
            assert sum(rows - nodes - 1 for rows, nodes in zip(run.rows, run.nodes)) > 0  # pseudo rows ran
            accepted[tree, compile] = accepted.get((tree, compile), 0) + sum(run.accepted)
    assert accepted["auto", True] > 0 and accepted["default", True] >= 0.8 * accepted["default", False] > 0
    names = sorted(path.name.split("-")[1] for path in (cache_dir() / "steps").glob("*of3.pt2"))
    assert names == ["1of3.pt2", "2of3.pt2", "3of3.pt2"]  # layers 0 | 1-2 | 3: the core count's parts cut by the stops, a middle part taking hidden states
    err = capfd.readouterr().err
    assert "into 3 packages in 3 processes" in err and len(re.findall(r"specdec: (built|loaded) the step in", err)) == 1
    specdec.patch(model, compile=True)  # lookup alone: the program without stops, beside the first
    greedy(model, requests[1][0], 5)
    capfd.readouterr()
    specdec.patch(model, predictor, compile=True)
    greedy(model, requests[1][0], 5)
    assert "specdec:" not in capfd.readouterr().err  # FIRP's program was kept: nothing loaded again


def test_compile_true_refuses_what_its_step_cannot_run():
    """Early exits, pseudo-row adapters, and pseudo rows entering before layer 0 (mask slots) or read
    from the embeddings change the layers or leave off where the program does not."""
    model = tiny_model("llama-gqa")
    refused = {
        "pseudo-row adapters": specdec.FuturePredictor.for_model(model, layer=1, k=2, adapter_rank=2),
        "entering after layer -1": specdec.MaskDrafts.for_model(model, k=2),
        "read from the embeddings": specdec.MultiLayerPredictor.for_model(model, layer=1, k=2, earlier_layer=-1),
        "an early exit": specdec.EarlyExitDrafts.for_model(model, layer=1),
    }
    for reason, source in refused.items():
        with pytest.raises(ValueError, match=f"compile=True does not cover draft sources with .*{reason}"):
            specdec.patch(model, source, compile=True)
    assert not specdec.is_patched(model)


def test_static_cache_compacts_like_the_eager_cache():
    gen = torch.Generator().manual_seed(0)
    eager, static = TreeKVCache(2, 64), StaticKVCache.allocate(2, 3, 5, 64, torch.float32, torch.device("cpu"))
    keys, values = torch.randn(2, 1, 3, 13, 5, generator=gen), torch.randn(2, 1, 3, 13, 5, generator=gen)
    static.slots = torch.arange(13)
    for layer in range(2):
        eager.update(keys[layer], values[layer], layer)
        static.update(keys[layer], values[layer], layer)
    keep = torch.tensor([0, 2, 3, 6])  # of the 7 step rows after a prefix of 6
    eager.compact(6, keep)
    static.compact(6, keep)
    for layer in range(2):
        assert torch.equal(static.keys[layer][:, :, :10], eager.keys[layer][:, :, :10])
        assert torch.equal(static.values[layer][:, :, :10], eager.values[layer][:, :, :10])


def test_rows_are_padded_to_few_sizes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [padded_rows(r, cpu) for r in (1, 2, 3, 17)] == [2, 2, 3, 17]  # one dynamic graph on a CPU
    assert [padded_rows(r, cuda) for r in (1, 2, 3, 5, 17, 64)] == [2, 2, 4, 8, 32, 64]  # a CUDA graph per size
