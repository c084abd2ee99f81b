"""Share of patched generate calls spent in the token-aware head's draft passes (HeadDrafts.propose) and cache updates (observe).

    python -m bench.e2e.head_share auto chat     # compile setting (auto | true), prompt class (chat | code)

Patches SmolLM2 with its head, warms up on one prompt, then times three 128-token held-out requests,
wrapping the two HeadDrafts methods with timers. One process per setting.
"""
import sys
import time

import specdec
from bench.e2e.run import class_prompts
model, tok, head = specdec.load_demo()
mode = sys.argv[1]
specdec.patch(model, head, compile=(True if mode == "true" else "auto"))
prompts = class_prompts(sys.argv[2], tok, 4, 128, "cpu")
for ids in prompts[:1]:
    model.generate(ids, max_new_tokens=16, do_sample=False)
from specdec.drafts.head.source import HeadDrafts
tot = {"propose": 0.0, "observe": 0.0}
for name in tot:
    orig = getattr(HeadDrafts, name)
    def wrap(self, *a, _orig=orig, _name=name, **k):
        t = time.perf_counter(); r = _orig(self, *a, **k); tot[_name] += time.perf_counter() - t; return r
    setattr(HeadDrafts, name, wrap)
total = 0.0; steps = 0
for ids in prompts[1:]:
    t = time.perf_counter(); model.generate(ids, max_new_tokens=128, do_sample=False); total += time.perf_counter() - t
    steps += specdec.stats(model).steps
print(f"compile={mode} {sys.argv[2]}: total {total:.2f} s over {steps} steps ({1000*total/steps:.1f} ms/step); propose {tot['propose']:.2f} s ({100*tot['propose']/total:.0f}%), observe {tot['observe']:.2f} s ({100*tot['observe']/total:.0f}%)")
