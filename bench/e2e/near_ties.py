"""Where 16-bit outputs part from plain greedy, and whether the exactness policy's near-tie rule covers it.

    python -m bench.e2e.near_ties                          # SmolLM2, bf16, 4 chat and 4 code prompts, 128 tokens
    python -m bench.e2e.near_ties --dtype float16 --prompts 8

In 16 bits a batched forward pass rounds differently from a one-row pass, so any method that
verifies several tokens at once (Hugging Face prompt lookup included) can part from plain greedy
output at a near-tie (see docs/exactness.md). For each prompt and method this prints the first
position where the output differs from plain greedy's and the plain model's top-2 logit gap there,
in units in the last place of the top logit; the policy accepts gaps up to 4 ulps (bf16) and 8 ulps
(fp16). Results: ``bench/results/near-ties-{model}-{dtype}-{device}.json``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from bench.e2e.run import class_prompts
from specdec import load_demo, patch, unpatch
from specdec.demo import DEFAULT_DEMO, DEMOS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the policy's own helpers, as bench.e2e.fuzz does
from near_tie import TIE_ULPS, top2_gap, ulp  # noqa: E402



def ulps_of_gap(model, sequence: torch.Tensor, pos: int, dtype: torch.dtype) -> float:
    """The plain model's top-2 logit gap for the token at ``pos`` of ``sequence [1, L]``, in ulps of the top logit."""
    gap, top = top2_gap(model, sequence, pos)
    return gap / ulp(top, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model, tokenizer, predictor = load_demo(args.model, dtype=dtype, draft="firp")
    methods = {
        "HF prompt lookup (10)": (lambda: unpatch(model), {"prompt_lookup_num_tokens": 10}),
        "specdec defaults": (lambda: patch(model, predictor), {}),
        "specdec defaults, compile=False": (lambda: patch(model, predictor, compile=False), {}),
    }
    rows = []
    for kind in ("chat", "code"):
        for number, ids in enumerate(class_prompts(kind, tokenizer, args.prompts, args.new_tokens, "cpu")):
            unpatch(model)
            plain = model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False)
            for name, (setup, kwargs) in methods.items():
                out = setup().generate(ids, max_new_tokens=args.new_tokens, do_sample=False, **kwargs)
                common = min(plain.shape[1], out.shape[1])
                diff = (plain[0, :common] != out[0, :common]).nonzero()
                pos = int(diff[0]) if diff.numel() else None
                unpatch(model)
                gap = ulps_of_gap(model, plain, pos, dtype) if pos is not None else None
                rows.append({"class": kind, "prompt": number, "method": name, "first_difference": pos, "gap_ulps": gap,
                             "within_policy": gap is None or gap <= TIE_ULPS[dtype]})
                where = "identical" if pos is None else f"differs at token {pos - ids.shape[1]} of the answer, top-2 gap {gap:.1f} ulps"
                print(f"{kind} {number}: {name}: {where}", flush=True)
    unpatch(model)
    device_name, device_kind = device_names(model.device)
    for name in methods:
        mine = [r for r in rows if r["method"] == name]
        print(f"{name}: {sum(r['first_difference'] is None for r in mine)} of {len(mine)} identical, "
              f"{sum(r['within_policy'] for r in mine)} within the near-tie policy ({TIE_ULPS[dtype]} ulps)")
    path = args.out / f"near-ties-{args.model}-{args.dtype}-{device_kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, **environment(), "args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
