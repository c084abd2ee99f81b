"""On a GPU: patched greedy output equals plain greedy with the Triton kernels, in fp32, fp16 and bf16.

Skipped without CUDA (the CPU suite covers the same decoding with interpreted kernels in fp32).
"""

import pytest
import torch

import specdec
from drafting import ScrambledDrafts, perturbed_head, perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec import FIRPDrafts
from tiny_models import ARCHS, prompt, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ARCHS)
def test_triton_kernels_on_cuda_match_plain_greedy(arch, dtype):
    model = tiny_model(arch, seed=3, dtype=dtype).cuda()
    ids = prompt(model, 12, seed=5).cuda()
    expected = model.generate(ids, max_new_tokens=40, do_sample=False)
    predictor = perturbed_predictor(model, 1, k=3)
    source = ScrambledDrafts(FIRPDrafts(predictor), expected[0].tolist(), model.config.vocab_size)
    specdec.patch(model, source, tree="wide")  # backend "auto": Triton on CUDA
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=40, do_sample=False))
    assert specdec.stats(model).fallback is None


def test_device_moves_after_patch_are_followed():
    model = tiny_model("llama-gqa", seed=4)
    ids = prompt(model, 9, seed=2)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    specdec.patch(model, perturbed_predictor(model, 1, k=3))
    model.cuda()
    assert_greedy_equivalent(model, expected.cuda(), model.generate(ids.cuda(), max_new_tokens=30, do_sample=False))
    assert specdec.stats(model).fallback is None
    model.cpu()
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=30, do_sample=False))
    assert specdec.stats(model).fallback is None


@pytest.mark.parametrize("arch,dtype", [("llama-gqa", torch.float32), ("qwen2-bias", torch.bfloat16)])
def test_compiled_step_as_cuda_graphs_matches_plain_greedy(arch, dtype):
    """compile=True on CUDA: the static step runs as CUDA graphs (one per padded row count), exact,
    with n-gram lookup chains (tree="auto") and the token-aware head's static trees."""
    model = tiny_model(arch, seed=6, dtype=dtype).cuda()
    ids = prompt(model, 10, seed=4).cuda()
    ids = torch.cat([ids, ids, ids[:, :3]], dim=1)
    expected = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
    head = perturbed_head(model, depth=3)
    for predictor, tree in ((None, "auto"), (specdec.HeadDrafts(head), "default"), (head, "auto")):
        specdec.patch(model, predictor, tree=tree, compile=True)
        out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
        assert_greedy_equivalent(model, expected, out)
        run = specdec.stats(model)
        assert run.fallback is None and run.step == "compiled"
