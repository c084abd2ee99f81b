"""Probe (not shipped): SmolLM2's step as one torch.compile'd static graph, against the same step eager.

    python -m bench.ops.compile_probe FREEZE BUCKETS DYNAMIC     # e.g. 1 1,8,16 0

A static cache of fixed addresses written with index_copy_ at tensor slots, the tree mask built in
the graph from a tensor prefix length, fullgraph=True through the HF decoder layers and the LM head's
top-8. Prints the compile time per row bucket and the median step (eager and compiled, 7 rounds).
"""
import time, sys, torch, torch.nn.functional as F
from specdec.demo import load_demo
from specdec.decode.loop import ModelParts
torch.set_num_threads(2)
FREEZE = int(sys.argv[1]) if len(sys.argv) > 1 else 1
BUCKETS = [int(b) for b in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 8, 16]
import torch._inductor.config as ic
ic.freezing = bool(FREEZE)
model, tok, pred = load_demo(draft="firp")
model.set_attn_implementation("sdpa")
parts = ModelParts.of(model)
L = len(parts.layers); cfg = model.config
H, D = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
CAP = 512

class Cache:
    def __init__(self):
        self.k = [torch.zeros(1, H, CAP, D) for _ in range(L)]
        self.v = [torch.zeros(1, H, CAP, D) for _ in range(L)]
        self.slots = None
    def update(self, ks, vs, i, *a, **kw):
        self.k[i].index_copy_(2, self.slots, ks)
        self.v[i].index_copy_(2, self.slots, vs)
        return self.k[i], self.v[i]
    def get_seq_length(self, i=0): return 0

from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
def attn(module, q, k, v, mask, scaling=None, dropout=0.0, **kw):
    m = kw.pop("specdec_mask")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None
AttentionInterface.register("proto", attn)
AttentionMaskInterface.register("proto", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
model.set_attn_implementation("proto")
cache = Cache()
W = parts.lm_head

def step(tokens, positions, prefix_len, vis):
    S = tokens.shape[0]
    cache.slots = prefix_len + torch.arange(S)
    rel = torch.arange(CAP) - prefix_len
    inside = (rel >= 0) & (rel < S)
    mask = (rel < 0)[None, :] | (inside[None, :] & vis.gather(1, rel.clamp(0, S - 1)[None, :].expand(S, CAP)))
    hidden = parts.embed(tokens)[None]
    rot = parts.rotary(hidden, positions[None])
    for layer in parts.layers:
        hidden = layer(hidden, attention_mask=None, position_ids=positions[None], position_embeddings=rot,
                       use_cache=True, **{parts.cache_kwarg: cache, "specdec_mask": mask[None, None]})
    h = parts.norm(hidden[0])
    logits = F.linear(h, W)
    top = logits.topk(8, dim=-1)
    return top.indices, top.values, h

def run(fn, S, prefix=200):
    tokens = torch.randint(0, 49152, (S,))
    pos = prefix + torch.arange(S)
    vis = torch.tril(torch.ones(S, S, dtype=torch.bool))
    return fn(tokens, pos, torch.tensor(prefix), vis)

cstep = torch.compile(step, fullgraph=True, dynamic=bool(int(sys.argv[3])) if len(sys.argv) > 3 else False)
with torch.no_grad():
    for S in BUCKETS:
        t0 = time.perf_counter(); run(cstep, S); print(f"compile S={S}: {time.perf_counter()-t0:.1f}s", flush=True)
    res = {}
    for rep in range(7):
        for S in BUCKETS:
            for name, fn in (("eager", step), ("compiled", cstep)):
                t0 = time.perf_counter(); run(fn, S); res.setdefault((name, S), []).append(time.perf_counter() - t0)
    import statistics
    for S in BUCKETS:
        print(S, {n: round(1000 * statistics.median(res[(n, S)]), 1) for n in ("eager", "compiled")})
    # exactness vs eager
    a = run(step, 8); b = run(cstep, 8)
