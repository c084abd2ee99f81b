"""PyTorch references of the ops; the Triton host functions take the same arguments.

These are also the ``backend="torch"`` implementations used on CPU, so they are
written to be reasonably fast, not only obviously right: the LM-head ops compute logits with
:func:`specdec.kernels.packed.linear` (a oneDNN-packed head inside a ``packed_scope``).
"""

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .bits import unpack_bits
from .packed import linear


def project_future(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Pseudo hidden states for the next ``k`` positions of every real row.

    Args:
        hidden: ``[R, d]`` hidden states of the real rows after the transfer layer.
        weight: ``[k, d, d]`` maps, ``weight[i]`` laid out like ``nn.Linear.weight`` (out x in).
        bias: ``[k, d]`` or None.
        out: optional ``[R * k, d]`` destination (for example rows of a larger buffer).

    Returns:
        ``[R * k, d]`` in ``hidden.dtype``; row ``r * k + i`` is ``weight[i] @ hidden[r] + bias[i]``.
    """
    rows, d = hidden.shape
    k = weight.shape[0]
    result = torch.matmul(hidden.unsqueeze(0), weight.transpose(1, 2))  # [k, R, d]
    if bias is not None:
        result = result + bias.unsqueeze(1)
    result = result.transpose(0, 1).reshape(rows * k, d)
    if out is None:
        return result
    out.copy_(result)
    return out


_MASK_CACHE_SIZE = 4
_mask_cache: list[tuple[tuple, torch.Tensor, torch.Tensor | None]] = []  # (key, bits kept alive, mask)


def step_visibility(
    rows: int,
    prefix_len: int,
    step_bits: torch.Tensor | None,
    positions: torch.Tensor | None,
    window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Dense boolean mask ``[rows, prefix_len + rows]`` (True = attend) of :func:`tree_attention`.

    None when every row sees every key (one row, no window). A decoding step calls this once per
    layer with the same arguments, so the last few masks are kept (keyed by the identity of
    ``step_bits``, which layouts never modify, and ``positions``).
    """
    if rows == 1 and window is None:
        return None
    key = (rows, prefix_len, id(step_bits), id(positions), window, device)
    for cached_key, _, mask in _mask_cache:
        if cached_key == key:
            return mask
    if step_bits is None:
        step = torch.ones(rows, rows, dtype=torch.bool, device=device).tril()
    else:
        step = unpack_bits(step_bits, rows)
    mask = torch.cat([torch.ones(rows, prefix_len, dtype=torch.bool, device=device), step], dim=1)
    if window is not None:
        key_pos = torch.cat([torch.arange(prefix_len, device=device), positions.to(device)])
        mask &= (positions.to(device)[:, None] - key_pos[None, :]) < window
    _mask_cache.insert(0, (key, (step_bits, positions), mask))
    del _mask_cache[_MASK_CACHE_SIZE:]
    return mask


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    prefix_len: int,
    step_bits: torch.Tensor | None,
    scale: float,
    positions: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Attention of a step's rows over the cached prefix and the step's own rows.

    Args:
        q: ``[B, Hq, S, D]`` queries of the step's ``S`` rows (any strides).
        k, v: ``[B, Hkv, prefix_len + S, D]``; keys ``[0, prefix_len)`` are the cached
            prefix at positions ``0..prefix_len-1``, the last ``S`` are the step's rows in
            the order of ``q``. ``Hq`` must be a multiple of ``Hkv`` (GQA, not expanded).
        prefix_len: number of cached keys; every row sees all of them.
        step_bits: int32 ``[S, ceil(S / 32)]`` packed visibility of the step block
            (see :mod:`specdec.kernels.bits`), or None for causal (row i sees step rows <= i).
        scale: softmax scale (the attention module's ``scaling``).
        positions: int64 ``[S]`` positions of the step's rows; needed with ``window``.
        window: sliding window (a row at position p sees keys at positions > p - window), or None.

    Returns:
        ``[B, S, Hq, D]`` contiguous, in ``q.dtype`` (transformers' attention output layout).
    """
    batch, q_heads, rows, _ = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    if kv_len != prefix_len + rows:
        raise ValueError(f"tree_attention: {kv_len} keys but prefix_len={prefix_len} + {rows} step rows")
    # Plain causal attention over the step's own rows (a prefill) takes SDPA's causal path, as the
    # unpatched model does, never a dense mask (the math kernel would hold [Hq, S, S] scores).
    causal = step_bits is None and prefix_len == 0 and (window is None or window >= rows)
    mask = None if causal else step_visibility(rows, prefix_len, step_bits, positions, window, q.device)
    # With a mask, CUDA's memory-efficient SDPA kernel refuses some shapes ("cutlassF: no kernel
    # found to launch", seen on an H100 for fp32 with 1-100 keys): use the math kernel there.
    with sdpa_kernel(SDPBackend.MATH) if q.is_cuda and mask is not None else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and rows > 1, scale=scale, enable_gqa=q_heads != kv_heads)
    return out.transpose(1, 2).contiguous()


def lm_head_argmax(hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy token of each row without keeping the logits.

    Logits are rounded to ``hidden.dtype`` before the comparison, as a plain
    ``lm_head`` followed by ``argmax`` does; ties go to the lowest index.

    Args:
        hidden: ``[N, d]`` final-normed hidden states.
        weight: ``[V, d]`` LM head.

    Returns:
        ``(ids, max_logit)``: int64 ``[N]`` and float32 ``[N]``.
    """
    logits = linear(hidden, weight).float()
    ids = logits.argmax(dim=-1)
    return ids, logits.gather(1, ids[:, None]).squeeze(1)


def check_token_ids(token_ids, weight: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``token_ids`` is None or int64 ``[weight rows]`` on ``weight``'s device.

    Ascending order (which the tie rule needs) is the caller's to keep: checking it here would cost a
    device sync per call (:class:`specdec.drafts.firp.vocabulary.DraftVocabulary` checks it once)."""
    if token_ids is None:
        return
    if not isinstance(token_ids, torch.Tensor) or token_ids.dtype != torch.int64 or token_ids.shape != weight.shape[:1]:
        got = f"{tuple(token_ids.shape)} {token_ids.dtype}" if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
        raise ValueError(f"lm_head_topk: token_ids must be int64 [{weight.shape[0]}] (one id per weight row), got {got}")
    if token_ids.device != weight.device:
        raise ValueError(f"lm_head_topk: token_ids is on {token_ids.device} but the weight is on {weight.device}")


def lm_head_topk(hidden: torch.Tensor, weight: torch.Tensor, k: int, *, token_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits of each row and the row's log-sum-exp.

    Logits are rounded to ``hidden.dtype`` (as a plain ``lm_head``), ranked in descending order
    with ties to the lowest index, so column 0 is ``torch.argmax`` of the logits.

    Args:
        hidden: ``[N, d]`` final-normed hidden states.
        weight: ``[V, d]`` LM head, or ``[V', d]`` rows ``token_ids`` of it (a draft vocabulary).
        k: candidates per row, ``1 <= k <= V``.
        token_ids: None, or int64 ``[V']`` ascending vocabulary ids of ``weight``'s rows: the ids
            returned are ``token_ids[row]`` (ties still go to the lowest id) and ``lse`` is the
            log-sum-exp over the subset.

    Returns:
        ``(ids, logits, lse)``: int64 ``[N, k]``, float32 ``[N, k]`` and float32 ``[N]``.
    """
    check_token_ids(token_ids, weight)
    logits = linear(hidden, weight).float()
    values, ids = logits.topk(k, dim=-1)
    # topk orders equal values arbitrarily: re-rank by (value desc, index asc).
    ids, order = ids.sort(dim=-1)
    values = values.gather(1, order)
    order = values.argsort(dim=-1, descending=True, stable=True)
    ids, values = ids.gather(1, order), values.gather(1, order)
    # Where the k-th value ties with values outside the top k, the lowest indices must win.
    ties = (logits >= values[:, -1:]).sum(dim=1) > k
    for row in ties.nonzero().view(-1).tolist():
        chosen = (logits[row] >= values[row, -1]).nonzero().view(-1)  # ascending indices
        ranked = chosen[logits[row, chosen].argsort(descending=True, stable=True)][:k]
        ids[row], values[row] = ranked, logits[row, ranked]
    if token_ids is not None:
        ids = token_ids[ids]
    return ids, values, torch.logsumexp(logits, dim=-1)


_GOLDEN = 0x9E3779B97F4A7C15 - 2**64  # splitmix64's constants as signed int64 (arithmetic wraps)
_MIX_1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX_2 = 0x94D049BB133111EB - 2**64


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``x`` (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def stream_keys(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """int64 ``[N]``: splitmix64 of ``seed + offsets`` (wrapping), the key of each row's random stream."""
    x = offsets.to(torch.int64) + (seed % 2**63) + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX_1
    x = (x ^ _shift_right(x, 27)) * _MIX_2
    return x ^ _shift_right(x, 31)


def stream_uniforms(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """One uniform float64 in (0, 1) per element of int64 ``offsets``, from :func:`stream_keys`.

    A counter-based generator: the number drawn for an offset depends on nothing else, so a row's
    draw does not depend on which other rows a step verifies.
    """
    return (_shift_right(stream_keys(seed, offsets), 11).to(torch.float64) + 0.5) * 2.0**-53


def sample_scores(scores: torch.Tensor, seed: int, offsets: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: per row ``r`` of ``scores [N, V]`` (``-inf`` = excluded), the token whose
    interval of ``softmax(scores[r])`` contains the uniform of ``seed + offsets[r]``
    (:func:`stream_uniforms`); int64 ``[N]``."""
    cdf = scores.double().softmax(dim=-1).cumsum(dim=-1)
    target = (stream_uniforms(seed, offsets.to(scores.device)) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).view(-1).clamp(max=scores.shape[-1] - 1)


def warp(scores: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """Sampling's warpers as transformers applies them, in its order: temperature (divide), top-k
    (keep scores ``>=`` the k-th largest; 0 = off), top-p (keep the smallest set of top tokens whose
    probability reaches ``top_p``; 1 = off), min-p (keep probabilities ``>= min_p`` times the
    largest; 0 = off). Excluded tokens get ``-inf``; the most likely token is always kept."""
    scores = scores / temperature
    if top_k:
        kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = scores.sort(dim=-1)
        remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        remove[:, -1] = False
        scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    if min_p > 0.0:
        probs = scores.softmax(dim=-1)
        scores = scores.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
    return scores


def lm_head_sample(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    seed: int,
    offsets: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
) -> torch.Tensor:
    """One token per row drawn from the softmax of the warped logits (see :func:`warp`).

    Args:
        hidden: ``[N, d]`` final-normed hidden states.
        weight: ``[V, d]`` LM head.
        seed, offsets: int64 ``[N]``: row ``r``'s draw is a function of ``seed + offsets[r]`` alone
            (:func:`stream_uniforms`); the decoder passes each row's position, so a position's draw
            is the same whatever tree the step verifies.

    Returns:
        int64 ``[N]``.
    """
    return sample_scores(warp(linear(hidden, weight).float(), temperature, top_k, top_p, min_p), seed, offsets)


def accept_walk(
    ids: torch.Tensor, tokens: torch.Tensor, parents: torch.Tensor, max_depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification of a draft tree.

    Rows are numbered 0 (the root) and ``1..M`` (draft node ``m`` is row ``m + 1``).
    Starting at the root, move to the lowest-numbered child whose token equals the
    current row's greedy token, while one exists.

    Args:
        ids: int64 ``[M + 1]`` greedy token of every row.
        tokens: int64 ``[M]`` draft token of every node.
        parents: int64 ``[M]`` parent row of every node (0 = root).
        max_depth: depth of the tree (the longest possible walk).

    Returns:
        ``(path, count)``: int64 ``[max_depth + 1]`` rows walked, root first, padded
        with -1; and the int64 scalar number of accepted nodes. The step emits
        ``ids[path[:count + 1]]``: the accepted tokens followed by the bonus token.
    """
    # The walk is sequential and tiny: on the host it costs a few microseconds per depth, where
    # tensor ops cost tens (the Triton kernel keeps it on the GPU).
    greedy, drafts, parent_of = ids.tolist(), tokens.tolist(), parents.tolist()
    walk, cur = [0], 0
    for _ in range(max_depth):
        cur = next((m + 1 for m, (p, t) in enumerate(zip(parent_of, drafts)) if p == cur and t == greedy[cur]), None)
        if cur is None:
            break
        walk.append(cur)
    path = torch.tensor(walk + [-1] * (max_depth + 1 - len(walk)), dtype=torch.int64, device=ids.device)
    count = torch.tensor(len(walk) - 1, dtype=torch.int64, device=ids.device)
    return path, count
