"""Training the token-aware draft head (:class:`~specdec.drafts.head.network.TokenHead`).

The target model is frozen, so its final-normed hidden states ``f`` of the training text are
computed once (:func:`extract_features`, into shards on disk, resumable) and the head trains on
them alone (:func:`train_head`): the model's layers never run again. Each step's loss, at every
position ``i`` of a batch of sequences (EAGLE's recipe, arXiv 2401.15077, plus a second draft
depth as HASS, arXiv 2408.15766, does):

- depth 1: the head on the pairs ``(f_i, x_{i+1})`` (causal, as in decoding) guesses ``g_i``;
  loss = ``REG_WEIGHT`` x smooth-L1(``g_i``, ``f_{i+1}``) + KL(teacher || head), both
  distributions the LM head's over the draft vocabulary, the teacher's from ``f_{i+1}``;
- depth 2: the pairs ``(g_i, x_{i+2})`` at positions ``i + 1``, each attending to the depth-1
  keys of positions ``<= i`` and itself (what the second draft token of a decoding step sees),
  against ``f_{i+2}`` with the same loss.

The reported accuracy is what acceptance needs: the head's top-1 over its vocabulary against the
target's argmax over the whole vocabulary (:func:`evaluate_head`).
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..drafts.head.network import TokenHead

REG_WEIGHT = 1.0
NOISE = 0.1  # EAGLE's uniform noise on the input states during training (robustness to its own guesses)
SHARD = "features-{:05d}.pt"


@torch.no_grad()
def extract_features(model, sequences: torch.Tensor, folder, batch_size: int = 8, progress: bool = True) -> list[Path]:
    """Write the model's final-normed hidden states of ``sequences [N, T]`` into ``folder``.

    Shard ``j`` holds sequences ``j * batch_size ...``: ``{"tokens": int64 [B, T], "features":
    fp16 [B, T, d]}``. Shards already written are kept, so an interrupted run continues. Returns
    the shard paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, start = [], time.perf_counter()
    count = math.ceil(sequences.shape[0] / batch_size)
    for j in range(count):
        path = folder / SHARD.format(j)
        paths.append(path)
        if path.exists():
            continue
        tokens = sequences[j * batch_size : (j + 1) * batch_size]
        hidden = model.model(input_ids=tokens.to(model.device)).last_hidden_state
        torch.save({"tokens": tokens.clone(), "features": hidden.to(torch.float16).cpu()}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        if progress:
            done = (j + 1) * tokens.shape[1] * batch_size
            print(f"\rfeatures: shard {j + 1}/{count}, {done / (time.perf_counter() - start):.0f} tokens/s", end="", flush=True)
    if progress:
        print()
    return paths


@dataclass
class HeadBatch:
    """What a loss needs of one batch: ``tokens`` int64 ``[B, T]``, ``features`` ``[B, T, d]`` (head dtype)."""

    tokens: torch.Tensor
    features: torch.Tensor


def causal_mask(n: int, device) -> torch.Tensor:
    """Bool ``[n, n]``, True on and below the diagonal."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def depth_two_mask(n: int, device) -> torch.Tensor:
    """Bool ``[n, 2n]``: row ``j`` (the depth-2 pair at position ``j + 1``) sees depth-1 keys ``<= j`` and itself."""
    return torch.cat([causal_mask(n, device), torch.eye(n, dtype=torch.bool, device=device)], dim=1)


def head_outputs(head: TokenHead, embed, batch: HeadBatch, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g1 [B, T-1, d], g2 [B, T-2, d])``: the head's guesses of ``f_{i+1}`` (depth 1) and ``f_{i+2}`` (depth 2)."""
    tokens, feats = batch.tokens, batch.features
    n = tokens.shape[1] - 1
    device = feats.device
    inputs = feats[:, :n]
    if noise:
        inputs = inputs + (torch.rand_like(inputs) * 2 - 1) * noise
    positions = torch.arange(n, device=device)
    empty = head.zero_kv(tokens.shape[0])
    g1, k1, v1 = head.block(inputs, embed(tokens[:, 1:]), positions, empty, empty, causal_mask(n, device))
    m = n - 1
    g2, _, _ = head.block(g1[:, :m], embed(tokens[:, 2:]), positions[:m] + 1, k1[:, :, :m], v1[:, :, :m], depth_two_mask(m, device))
    return g1, g2


def head_losses(head: TokenHead, embed, rows: torch.Tensor, batch: HeadBatch, noise: float = 0.0) -> dict:
    """Per-depth losses (see the module docstring) and their sum ``"loss"``; ``rows [N, d]``: the LM head's draft-vocabulary rows."""
    g1, g2 = head_outputs(head, embed, batch, noise)
    losses = {}
    for depth, guess in ((1, g1), (2, g2)):
        target = batch.features[:, depth:].float()
        teacher = F.log_softmax(target @ rows.float().T, dim=-1)
        student = F.log_softmax(guess.float() @ rows.float().T, dim=-1)
        kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1).mean()
        losses[f"kl{depth}"] = kl
        losses[f"reg{depth}"] = F.smooth_l1_loss(guess.float(), target)
    losses["loss"] = sum(losses[f"kl{d}"] + REG_WEIGHT * losses[f"reg{d}"] for d in (1, 2))
    return losses


def draft_rows(head: TokenHead, lm_head: torch.Tensor) -> torch.Tensor:
    """``[N, d]``: the LM head's rows the head ranks (its draft vocabulary, or all)."""
    return lm_head if head.draft_vocab is None else lm_head.index_select(0, head.draft_vocab.ids.to(lm_head.device))


@torch.no_grad()
def evaluate_head(model, head: TokenHead, batches: list[HeadBatch]) -> dict:
    """Top-1 agreement of the head's depth-1 and depth-2 guesses (ranked over its vocabulary) with the
    target's argmax over the whole vocabulary, on ``batches`` of held-out text."""
    lm_head = model.get_output_embeddings().weight
    rows = draft_rows(head, lm_head)
    ids = None if head.draft_vocab is None else head.draft_vocab.ids.to(lm_head.device)
    hits, total = [0, 0], [0, 0]
    for batch in batches:
        g1, g2 = head_outputs(head, model.get_input_embeddings(), batch)
        for depth, guess in ((1, g1), (2, g2)):
            teacher = (batch.features[:, depth:].to(lm_head.dtype) @ lm_head.T).argmax(-1)
            top = (guess.to(lm_head.dtype) @ rows.T).argmax(-1)
            picked = top if ids is None else ids[top]
            hits[depth - 1] += int((picked == teacher).sum())
            total[depth - 1] += teacher.numel()
    return {"top1_depth1": hits[0] / total[0], "top1_depth2": hits[1] / total[1], "positions": total[0]}


def load_shards(paths, dtype=torch.float16) -> list[HeadBatch]:
    """The shards at ``paths`` as :class:`HeadBatch` es with features in ``dtype`` (stored: fp16)."""
    shards = []
    for path in paths:
        saved = torch.load(path)
        shards.append(HeadBatch(saved["tokens"], saved["features"].to(dtype)))
    return shards


def train_head(model, head: TokenHead, shards: list[HeadBatch], steps: int, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
               eval_batches: list[HeadBatch] | None = None, eval_every: int = 0, log=print) -> list[dict]:
    """Train ``head`` (in place, fp32) for ``steps`` AdamW steps on random sequences of ``shards``
    (linear warm-up over 5% of the steps, cosine decay); returns the log (loss, and the held-out
    accuracy every ``eval_every`` steps and at the end)."""
    tokens = torch.cat([s.tokens for s in shards])
    feats = torch.cat([s.features for s in shards])
    embed = model.get_input_embeddings()
    rows = draft_rows(head, model.get_output_embeddings().weight).detach()
    head.train()
    optim = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    history, start = [], time.perf_counter()
    for step in range(steps):
        pick = torch.randint(tokens.shape[0], (batch_size,), generator=gen)
        losses = head_losses(head, embed, rows, HeadBatch(tokens[pick], feats[pick].to(rows.dtype)), NOISE)
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        optim.step()
        sched.step()
        record = {"step": step + 1, "seconds": round(time.perf_counter() - start, 1), **{k: round(float(v.detach()), 4) for k, v in losses.items()}}
        last = step + 1 == steps
        if eval_batches and (last or (eval_every and (step + 1) % eval_every == 0)):
            head.eval()
            record.update(evaluate_head(model, head, eval_batches))
            head.train()
        if log is not None and (len(record) > 9 or (step + 1) % 50 == 0):
            log(record)
        history.append(record)
    head.eval()
    return history
