"""Richer FIRP maps than the paper's linear ``p_i(h) = W_i h + b_i``, each starting as that map.

- :class:`MLPPredictor`: a residual MLP per offset, ``p_i(h) = W_i h + b_i + U_i silu(V_i n(h) + c_i)``.
- :class:`MultiLayerPredictor`: the transfer layer's output fused with an earlier layer's,
  ``p_i(h_t, h_e) = W_i h_t + G_i h_e + b_i``.

Both are :class:`~specdec.drafts.firp.predictor.FuturePredictor` s: they train, save and load, take adapters,
and decode through :class:`~specdec.drafts.FIRPDrafts` (``specdec.patch(model, map)`` merges
n-gram lookup as for the linear map). Their new parameters are zero-initialised where they feed
the output, so an untrained map is the linear map it extends.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .predictor import FuturePredictor, apply_maps, default_layer, is_int, read_int

NORM_EPS = 1e-6


class MLPPredictor(FuturePredictor):
    """The linear map plus a residual MLP per offset: ``p_i(h) = W_i h + b_i + U_i silu(V_i n(h) + c_i)``.

    ``n(h) = h / rms(h)`` (no weights) keeps the MLP's input at unit scale whatever the size of the
    model's hidden states; ``c_i`` is offset ``i``'s embedding in the hidden layer.

    Attributes:
        up: ``V``, ``[k, width, d]``, random (std ``1 / sqrt(d)``).
        up_bias: ``c``, ``[k, width]``, zeros.
        down: ``U``, ``[k, d, width]``, zeros: an untrained MLP adds nothing.
    """

    MAP = "mlp"

    def __init__(self, hidden_size: int, k: int, layer: int, fingerprint: dict, width: int, adapters=None):
        super().__init__(hidden_size, k, layer, fingerprint, adapters)
        if not is_int(width) or width < 1:
            raise ValueError(f"MLP width must be an int >= 1, got {width!r}")
        self.up = nn.Parameter(torch.randn(k, width, hidden_size) / hidden_size**0.5)
        self.up_bias = nn.Parameter(torch.zeros(k, width))
        self.down = nn.Parameter(torch.zeros(k, hidden_size, width))

    @property
    def width(self) -> int:
        return self.up.shape[1]

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 3, *, width: int | None = None, adapter_rank: int = 0, adapter_layers=None) -> "MLPPredictor":
        """An untrained MLP map (it starts as the identity map) of hidden ``width`` (default: the model's hidden size)."""
        width = model.config.hidden_size if width is None else width
        return super().for_model(model, layer, k, adapter_rank=adapter_rank, adapter_layers=adapter_layers, width=width)

    def residual(self, hidden: torch.Tensor) -> torch.Tensor:
        """The MLP's term: ``[..., d]`` -> ``[..., k, d]`` (the norm in float32, the rest in ``hidden``'s dtype)."""
        wide = hidden.float()
        normed = (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + NORM_EPS)).to(hidden.dtype)
        inner = F.silu(torch.einsum("...e,kme->...km", normed, self.up) + self.up_bias)
        return torch.einsum("...km,kdm->...kd", inner, self.down)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden) + self.residual(hidden)

    def project(self, hidden: torch.Tensor, out: torch.Tensor, backend: str) -> None:
        super().project(hidden, out, backend)
        out.unflatten(0, (-1, self.k)).add_(self.residual(hidden))

    def map_options(self) -> dict:
        return {"width": self.width}

    @classmethod
    def read_map_options(cls, config: dict, file: Path) -> dict:
        return {"width": read_int(config, "width", file, 1)}


class MultiLayerPredictor(FuturePredictor):
    """The linear map of the transfer layer's output plus one of an earlier layer's output (the same
    real row's): ``p_i(h_t, h_e) = W_i h_t + G_i h_e + b_i``, a linear map of the concatenation
    ``[h_t; h_e]`` whose ``G`` starts at zero. ``b_i`` is offset ``i``'s embedding (every offset has
    its own map, so an embedding added before the maps would duplicate it).

    Its input is ``[..., 2d]``: ``h_t`` then ``h_e`` (``input_layers`` is ``(layer, earlier_layer)``);
    in decoding, :class:`~specdec.drafts.FIRPDrafts` captures ``h_e`` after ``earlier_layer``.

    Attributes:
        earlier_weight: ``G``, ``[k, d, d]``, zeros.
        earlier_layer: the earlier layer (``-1``: the token embeddings), below ``layer``.
    """

    MAP = "multi"
    earlier_layer: int

    def __init__(self, hidden_size: int, k: int, layer: int, fingerprint: dict, earlier_layer: int, adapters=None):
        super().__init__(hidden_size, k, layer, fingerprint, adapters)
        check_earlier_layer(earlier_layer, layer)
        self.earlier_layer = earlier_layer
        self.earlier_weight = nn.Parameter(torch.zeros(k, hidden_size, hidden_size))

    @property
    def input_layers(self) -> tuple[int, ...]:
        return (self.layer, self.earlier_layer)

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 3, *, earlier_layer: int | None = None, adapter_rank: int = 0, adapter_layers=None) -> "MultiLayerPredictor":
        """An untrained two-layer map (it starts as the identity map of ``layer``'s output); the earlier
        layer defaults to half-way to ``layer`` (the embeddings for ``layer`` 0)."""
        if earlier_layer is None:
            earlier_layer = default_earlier_layer(default_layer(model.config.num_hidden_layers) if layer is None else layer)
        return super().for_model(model, layer, k, adapter_rank=adapter_rank, adapter_layers=adapter_layers, earlier_layer=earlier_layer)

    def split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., 2d]`` -> (``h_t``, ``h_e``), each ``[..., d]``."""
        if hidden.shape[-1] != 2 * self.hidden_size:
            raise ValueError(f"a two-layer map reads [..., {2 * self.hidden_size}] (two layers' states), got {tuple(hidden.shape)}")
        return hidden[..., : self.hidden_size], hidden[..., self.hidden_size :]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., 2d]`` -> ``[..., k, d]``."""
        latest, earlier = self.split(hidden)
        return super().forward(latest) + apply_maps(earlier, self.earlier_weight)

    def project(self, hidden: torch.Tensor, out: torch.Tensor, backend: str) -> None:
        latest, earlier = self.split(hidden)
        super().project(latest, out, backend)
        out.unflatten(0, (-1, self.k)).add_(apply_maps(earlier, self.earlier_weight))

    def map_options(self) -> dict:
        return {"earlier_layer": self.earlier_layer}

    @classmethod
    def read_map_options(cls, config: dict, file: Path) -> dict:
        return {"earlier_layer": read_int(config, "earlier_layer", file, -1)}


def default_earlier_layer(layer: int) -> int:
    """:class:`MultiLayerPredictor`'s default earlier layer for transfer layer ``layer``: half-way to it
    (the embeddings, -1, for layer 0)."""
    return layer // 2 if layer > 0 else -1


def check_earlier_layer(earlier_layer: int, layer: int) -> None:
    """Raise ``ValueError`` unless ``earlier_layer`` is below the transfer layer ``layer`` (-1: the embeddings)."""
    if not is_int(earlier_layer) or not -1 <= earlier_layer < layer:
        raise ValueError(f"the earlier layer must be an int in [-1, {layer - 1}] (below the transfer layer {layer}), got {earlier_layer!r}")

