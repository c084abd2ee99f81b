"""The attention function registered with transformers for patched models.

``patch()`` switches a model from its attention implementation ``X`` (``sdpa``
or ``eager``) to ``specdec_X``. Calls that carry a :class:`StepAttention` (the eager step) or a
:class:`StaticAttention` (the compiled step) in the ``specdec_step`` keyword (only
specdec's decoder passes it) run tree-masked attention; every other call is handed to ``X`` unchanged, with ``X``'s own mask
function, so the model behaves exactly as before outside speculative decoding.

Any other attention function would ignore the ``specdec_step`` keyword and attend
causally over the step's rows, so every patched ``generate`` call first checks,
with :func:`ensure_wrapped`, that each attention module still resolves to a
wrapper (a user may switch implementations after ``patch()``).
"""

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .. import kernels

STEP_KWARG = "specdec_step"
WRAPPABLE = ("sdpa", "eager")
PREFIX = "specdec_"


@dataclass(frozen=True)
class StepAttention:
    """Visibility of one batch of step rows (see :func:`specdec.kernels.tree_attention`).

    Attributes:
        prefix_len: cached positions every row sees.
        bits: int32 ``[S, W]`` packed step-block visibility, or None for causal.
        positions: int64 ``[S]`` positions of the rows (for sliding windows).
        backend: kernel backend.
    """

    prefix_len: int
    bits: torch.Tensor | None
    positions: torch.Tensor
    backend: str

    def attend(self, query, key, value, scale: float, window: int | None) -> torch.Tensor:
        """Tree-masked attention of ``query [1, H, S, D]`` over the cached ``key``/``value``
        ``[1, H_kv, prefix_len + S, D]``; returns ``[1, S, H, D]``."""
        return kernels.tree_attention(
            query, key, value, prefix_len=self.prefix_len, step_bits=self.bits, scale=scale,
            positions=self.positions, window=window, backend=self.backend,
        )


@dataclass(frozen=True)
class StaticAttention:
    """Visibility of the compiled step's rows over a cache of fixed capacity (:mod:`specdec.decode.graphs`).

    Attributes:
        mask: bool ``[1, 1, S, C]``, True where row ``i`` may attend to cache slot ``j`` (the prefix,
            and the step's own slots by the tree), ``C`` the cache's capacity.
        positions: int64 ``[S]`` positions of the rows.
        key_positions: int64 ``[C]`` position of the key in each slot (for sliding windows).
    """

    mask: torch.Tensor
    positions: torch.Tensor
    key_positions: torch.Tensor

    def attend(self, query, key, value, scale: float, window: int | None) -> torch.Tensor:
        """Masked attention of ``query [1, H, S, D]`` over all ``C`` slots of ``key``/``value``
        ``[1, H_kv, C, D]`` with ``scaled_dot_product_attention`` (what the compiler traces); returns ``[1, S, H, D]``."""
        mask = self.mask
        if window is not None:
            mask = mask & ((self.positions[:, None] - self.key_positions[None, :]) < window)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, enable_gqa=True)
        return out.transpose(1, 2).contiguous()


def _original_function(name: str, module):
    if name == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[name]


def _make_attention(original: str):
    def specdec_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        step = kwargs.pop(STEP_KWARG, None)
        if step is None:
            fn = _original_function(original, module)
            return fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        if kwargs.get("softcap") is not None:
            raise NotImplementedError("specdec tree attention does not support attention logit soft-capping")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return step.attend(query, key, value, scale, kwargs.get("sliding_window")), None

    specdec_attention.__name__ = f"specdec_attention_{original}"
    return specdec_attention


def unwrapped_name(name: str) -> str:
    """The implementation that ``name`` wraps (``name`` itself when it is not a specdec wrapper)."""
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def layer_implementations(layers) -> set[str]:
    """The attention implementations the decoder ``layers`` resolve at call time (read from each module's config)."""
    return {layer.self_attn.config._attn_implementation for layer in layers}


def ensure_wrapped(model, layers) -> str | None:
    """Make every attention module of ``layers`` run a specdec wrapper; return why that is impossible, or None.

    A model switched back to ``sdpa`` or ``eager`` after ``patch()`` (``set_attn_implementation``,
    ``config._attn_implementation = ...``) is wrapped again around the implementation it now
    uses, so the user's choice still computes every call outside speculative decoding.
    """
    found = layer_implementations(layers)
    originals = {unwrapped_name(name) for name in found}
    if len(originals) > 1:
        return f"the decoder layers use different attention implementations {sorted(found)}"
    (original,) = originals
    if original not in WRAPPABLE:
        return f"attention implementation {original!r} (specdec wraps {' and '.join(WRAPPABLE)})"
    name = wrapped_name(original)
    if found != {name}:
        model.set_attn_implementation(name)
        if layer_implementations(layers) != {name}:
            return f"attention implementation {original!r} could not be wrapped in every decoder layer"
    return None


def wrapped_name(original: str) -> str:
    """Register (once) and return the specdec implementation name that wraps ``original``."""
    if original not in WRAPPABLE:
        raise ValueError(
            f"specdec wraps the attention implementations {WRAPPABLE}; this model uses {original!r} "
            "(load it with attn_implementation='sdpa' or call model.set_attn_implementation('sdpa'))"
        )
    name = PREFIX + original
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_attention(original))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name
