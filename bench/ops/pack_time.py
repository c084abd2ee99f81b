"""Seconds to pack SmolLM2's step weights from scratch (a fresh PackedWeights entering active(): what a patch() paid at its first call, and, before packs were kept with the model, at every re-patch).

    python -m bench.ops.pack_time
"""
import time

from specdec import load_demo
from specdec.decode.loop import ModelParts, EagerStep
from specdec.decode.packing import PackedWeights
from specdec.drafts import DraftSource
model, _, _ = load_demo(draft="firp")
parts = ModelParts.of(model)
for i in range(3):
    p = PackedWeights()
    t = time.perf_counter()
    with p.active(EagerStep.networks(parts, DraftSource()), parts.lm_head):
        pass
    print(f"fresh PackedWeights, entering active: {time.perf_counter() - t:.3f} s")
