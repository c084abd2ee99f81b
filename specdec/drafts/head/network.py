"""The token-aware draft head: one small decoder block that reads the target model's last hidden
state *and the token that follows it* (EAGLE, arXiv 2401.15077; written from the paper).

Notation: the target model's final-normed hidden state at position ``i`` is ``f_i`` (what its LM
head reads; it predicts token ``x_{i+1}``). The head's input at position ``i`` is the pair
``(f_i, x_{i+1})``: ``fuse(cat(f_i, embed(x_{i+1})))``, then one pre-norm decoder block (causal
self-attention with rotary positions over the head's own keys and values of earlier pairs, then a
SiLU-gated MLP). Its output ``g_i`` is a guess of ``f_{i+1}``, so ``lm_head(g_i)`` ranks
``x_{i+2}``: the token *after* the one the target just produced, knowing that token. Drafting
deeper feeds ``(g_i, drafted x_{i+2})`` at position ``i + 1``, and so on.

:meth:`TokenHead.block` runs the block for training (whole sequences, a causal mask);
:meth:`TokenHead.forward` runs it for decoding (new pairs written into a cache of fixed size, a tree
mask over all its slots: the form a compiled program takes). Both are the same two halves
(:meth:`TokenHead.pairs`, :meth:`TokenHead.finish`) around one attention, so training and decoding
compute the same thing. The block is the head's own (rotary base 10000, the model's
head width of 64 dimensions where it divides); it shares only the model's input embeddings and
LM head, both frozen.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..firp.predictor import (
    CONFIG_NAME,
    VOCAB_NAME,
    check_fingerprint,
    config_dict,
    load_state,
    model_fingerprint,
    read_config,
    read_draft_vocab,
    read_int,
    save,
    write_draft_vocab,
)
from ..firp.vocabulary import DraftVocabulary

ROPE_BASE = 10000.0
HEAD_DIM = 64
EPS = 1e-6


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RMS norm of ``x [..., d]`` in fp32, scaled by ``weight [d]``, back in ``x``'s dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * weight


def rotary_angles(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """fp32 ``[2, n, head_dim // 2]``: cos and sin of the rotary angles of ``positions`` (int64 ``[n]``)."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32)[:, None] * inv[None]
    return torch.stack([angles.cos(), angles.sin()])


def rotary_table(length: int, head_dim: int, device) -> torch.Tensor:
    """fp32 ``[2, length, head_dim // 2]``: :func:`rotary_angles` of positions ``0..length-1``."""
    return rotary_angles(torch.arange(length, device=device), head_dim)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions on ``x [B, H, n, hd]``; ``cos``, ``sin``: ``[n, hd // 2]`` in ``x``'s dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class TokenHead(nn.Module):
    """The trainable draft network of :class:`~specdec.drafts.head.source.HeadDrafts`.

    Args:
        hidden_size: ``d``, the target model's hidden size.
        intermediate_size: the MLP width.
        depth: how many tokens deep a draft goes (the source's ``k``).
        fingerprint: the model config fields this head was made for.
        draft_vocab: the tokens the head ranks (a :class:`DraftVocabulary`; None: all of them).
    """

    SOURCE = "head"
    WHAT = "token-aware draft head"

    def __init__(self, hidden_size: int, intermediate_size: int, depth: int, fingerprint: dict, draft_vocab: DraftVocabulary | None = None):
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        d = hidden_size
        self.num_heads = d // HEAD_DIM if d % HEAD_DIM == 0 else 1
        self.depth, self.fingerprint, self.draft_vocab = depth, dict(fingerprint), draft_vocab
        self.fuse = nn.Linear(2 * d, d)
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.mlp_norm = nn.Parameter(torch.ones(d))
        self.gate_up = nn.Linear(d, 2 * intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, d, bias=False)
        with torch.no_grad():  # untrained, g_i = f_i + the block's (small) update: "the next state is like this one"
            self.fuse.weight.zero_()
            self.fuse.bias.zero_()
            self.fuse.weight[:, :d].copy_(torch.eye(d))

    @property
    def hidden_size(self) -> int:
        return self.attn_norm.shape[0]

    @property
    def intermediate_size(self) -> int:
        return self.down.in_features

    @classmethod
    def for_model(cls, model, depth: int = 5, draft_vocab: DraftVocabulary | None = None, intermediate_size: int | None = None) -> "TokenHead":
        """An untrained head for ``model`` (its MLP as wide as the model's unless given), in the model's dtype."""
        config = model.config
        width = intermediate_size or getattr(config, "intermediate_size", None) or 4 * config.hidden_size
        if draft_vocab is not None and draft_vocab.vocab_size != config.vocab_size:
            raise ValueError(f"the draft vocabulary is for {draft_vocab.vocab_size} tokens, the model has {config.vocab_size}")
        head = cls(config.hidden_size, width, depth, model_fingerprint(model), draft_vocab)
        weight = model.get_input_embeddings().weight
        return head.to(device=weight.device, dtype=weight.dtype)

    def block(self, features, embeds, positions, past_k, past_v, mask):
        """The head on new pairs after earlier ones (training).

        Args:
            features, embeds: ``[B, n, d]`` the pairs' states ``f`` (or guesses ``g``) and the
                embeddings of their following tokens (the head's dtype).
            positions: int64 ``[n]`` the pairs' positions.
            past_k, past_v: ``[B, H, L, hd]`` keys and values of earlier pairs (``L`` may be 0).
            mask: bool ``[n, L + n]``, True where a new pair may attend (each must see itself).

        Returns ``(g [B, n, d], k [B, H, n, hd], v [B, H, n, hd])``: the guesses and the new pairs'
        keys and values.
        """
        x, q, k, v = self.pairs(features, embeds, self.rotary(positions))
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        return self.finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)), k, v

    def forward(self, features, embeds, positions, slots, mask, keys, values):
        """The head on new pairs written into a cache of fixed size (decoding; what a compiled program runs).

        Args:
            features, embeds, positions: as for :meth:`block`, ``B = 1``.
            slots: int64 ``[n]`` where the new pairs' keys and values go in ``keys``/``values``.
            mask: bool ``[n, C]``, True where a new pair may attend (each must see its own slot).
            keys, values: ``[1, H, C, hd]`` the cache, written at ``slots``.

        Returns ``g [1, n, d]``.
        """
        x, q, k, v = self.pairs(features, embeds, rotary_angles(positions, self.hidden_size // self.num_heads))
        keys[:, :, slots] = k
        values[:, :, slots] = v
        return self.finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask))

    def pairs(self, features, embeds, angles):
        """The block up to attention: ``(x [B, n, d], q, k, v [B, H, n, hd])`` of the pairs, ``q`` and ``k``
        rotated by ``angles`` (fp32 ``[2, n, hd // 2]``, cos and sin)."""
        batch, n, d = features.shape
        x = self.fuse(torch.cat([features, embeds], dim=-1))
        q, k, v = self.qkv(rms_norm(x, self.attn_norm)).view(batch, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        cos, sin = angles.to(q.dtype).unbind(0)
        return x, rotate(q, cos, sin), rotate(k, cos, sin), v

    def finish(self, x, attended):
        """The block after attention: ``g [B, n, d]`` from ``x`` and the attention's output ``[B, H, n, hd]``."""
        batch, n, d = x.shape
        x = x + self.out(attended.transpose(1, 2).reshape(batch, n, d))
        gate, up = self.gate_up(rms_norm(x, self.mlp_norm)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def rotary(self, positions: torch.Tensor) -> torch.Tensor:
        """fp32 ``[2, n, hd // 2]`` cos and sin at ``positions [n]``, from a table kept on the module
        (grown by doubling; the same values as computed on the spot)."""
        table = self.__dict__.get("_rotary")
        need = int(positions.max()) + 1 if positions.numel() else 1
        if table is None or table.shape[1] < need or table.device != positions.device:
            length = max(need, 2 * (table.shape[1] if table is not None else 256))
            table = self.__dict__["_rotary"] = rotary_table(length, self.hidden_size // self.num_heads, positions.device)
        return table[:, positions]

    def zero_kv(self, batch: int = 1, capacity: int = 0) -> torch.Tensor:
        """``[B, H, capacity, hd]`` zeroed keys (or values) in the head's dtype and device. Zeroed, not
        empty: :meth:`forward` attends over every slot, and a masked slot's garbage (a NaN) would
        still reach the output through the attention's products."""
        weight = self.qkv.weight
        return weight.new_zeros(batch, self.num_heads, capacity, self.hidden_size // self.num_heads)

    def check_model(self, model) -> None:
        found = check_fingerprint(self.fingerprint, model, self.WHAT)
        if self.hidden_size != found["hidden_size"]:
            raise ValueError(f"the draft head is {self.hidden_size} wide but the model's hidden size is {found['hidden_size']}")
        if self.draft_vocab is not None and self.draft_vocab.vocab_size != found["vocab_size"]:
            raise ValueError(f"the draft head's vocabulary is for {self.draft_vocab.vocab_size} tokens, the model has {found['vocab_size']}")

    def save_pretrained(self, path) -> None:
        """Write the head (``predictor_config.json`` with ``"source": "head"``, ``predictor.safetensors``,
        ``draft_vocab.json`` with a draft vocabulary) into ``path``."""
        config = config_dict(self.SOURCE, self.fingerprint["num_hidden_layers"] - 1, self.depth, self.hidden_size, self.fingerprint,
                             intermediate_size=self.intermediate_size)
        save(path, config, self.state_dict())
        write_draft_vocab(Path(path) / VOCAB_NAME, self.draft_vocab, self.fingerprint)

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None) -> "TokenHead":
        """Load a head saved by :meth:`save_pretrained`; another source's folder is refused by name."""
        path = Path(path)
        config = read_config(path, cls.SOURCE)
        width = read_int(config, "intermediate_size", path / CONFIG_NAME, 1)
        head = cls(config["hidden_size"], width, config["k"], config["fingerprint"], read_draft_vocab(path / VOCAB_NAME))
        return load_state(head, path, device, dtype)
