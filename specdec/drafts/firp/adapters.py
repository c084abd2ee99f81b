"""Pseudo-row adapters: low-rank updates of the decoder's projections that only pseudo rows see.

A draft source's pseudo rows (FIRP's after the transfer layer, mask slots' from layer 0) run
through the model's own layers. Adapters (LoRA: ``W x + B A x`` with ``B`` zero-initialised) on
the attention and MLP projections of those layers let the layers work differently for drafting
without changing what real rows compute: inside :meth:`PseudoRowAdapters.applied`, a forward hook
on each adapted ``nn.Linear`` adds ``B A x`` to the output rows after the first ``num_real`` (the
pseudo rows: decoding lays real rows first, training's packed pass has only pseudo rows) and never
writes the others. A real row's projections therefore compute exactly what they compute without
adapters, and since real rows never attend to pseudo rows, so do its keys, values, hidden states
and logits: bit for bit.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Short name -> path inside a Llama-style decoder layer (llama, mistral, qwen2, qwen3).
PROJECTIONS = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}


class LowRank(nn.Module):
    """``x -> B A x`` for one projection.

    Attributes:
        down: ``A``, ``[rank, in]``, random (std ``1 / sqrt(in)``).
        up: ``B``, ``[out, rank]``, zero-initialised: a new adapter changes nothing.
    """

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, in_features) / in_features**0.5)
        self.up = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in]`` -> ``[..., out]`` in the adapter's dtype (``x`` is cast to it)."""
        return F.linear(F.linear(x.to(self.up.dtype), self.down), self.up)


class PseudoRowAdapters(nn.Module):
    """Rank-``rank`` adapters on every projection (:data:`PROJECTIONS`) of decoder layers ``layers``.

    Attributes:
        rank: the adapters' rank.
        layers: the adapted decoder layers (sorted).
        shapes: ``{projection: (in_features, out_features)}``, the same in every adapted layer.
        blocks: ``blocks[str(layer)][projection]`` is that projection's :class:`LowRank`.
    """

    def __init__(self, rank: int, layers, shapes: dict[str, tuple[int, int]]):
        super().__init__()
        if type(rank) is not int or rank < 1:
            raise ValueError(f"adapter rank must be an int >= 1, got {rank!r}")
        layers = list(layers)
        if not layers or any(type(layer) is not int for layer in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"adapter layers must be distinct ints, at least one, got {layers!r}")
        self.rank = rank
        self.layers = tuple(sorted(layers))
        self.shapes = {name: (int(i), int(o)) for name, (i, o) in shapes.items()}
        self.blocks = nn.ModuleDict(
            {str(layer): nn.ModuleDict({name: LowRank(i, o, rank) for name, (i, o) in self.shapes.items()}) for layer in self.layers}
        )

    @classmethod
    def for_model(cls, model, rank: int, first: int, layers=None) -> "PseudoRowAdapters":
        """New adapters for ``model``'s layers ``layers`` (default: every layer from ``first``, the
        first one the pseudo rows pass through), in the model's device and dtype."""
        layers = adapted_layers(layers, first, model.config.num_hidden_layers)
        adapters = cls(rank, layers, projection_shapes(model.model.layers[layers[0]]))
        param = model.get_input_embeddings().weight
        return adapters.to(device=param.device, dtype=param.dtype)

    def check_model(self, model) -> None:
        """Raise ``ValueError`` if a layer or projection shape differs from ``model``'s."""
        decoder = model.model.layers
        check_range(self.layers, 0, len(decoder))
        for layer in self.layers:
            found = projection_shapes(decoder[layer])
            for name, shape in self.shapes.items():
                if found.get(name) != shape:
                    raise ValueError(f"adapter of layer {layer} {name} maps {shape[0]} -> {shape[1]} but the model's {name} is {found.get(name)}")

    def config(self) -> dict:
        """What :meth:`from_config` rebuilds these adapters (untrained) from: a JSON-ready dict."""
        return {"rank": self.rank, "layers": list(self.layers), "shapes": {name: list(shape) for name, shape in self.shapes.items()}}

    @classmethod
    def from_config(cls, config, file) -> "PseudoRowAdapters | None":
        """Adapters of the shape ``config`` (a :meth:`config` dict, or None: no adapters) describes;
        ``ValueError`` naming ``file`` for a malformed one."""
        if config is None:
            return None
        shapes = config.get("shapes") if isinstance(config, dict) else None
        valid = isinstance(shapes, dict) and shapes and all(
            name in PROJECTIONS and isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n > 0 for n in shape)
            for name, shape in shapes.items()
        )
        if not valid or not isinstance(config.get("layers"), list):
            raise ValueError(f"corrupted predictor config {file}: 'adapters' must hold rank, layers and projection shapes, got {config!r}")
        try:
            return cls(config.get("rank"), config["layers"], shapes)
        except ValueError as err:
            raise ValueError(f"corrupted predictor config {file}: {err}") from None

    @contextlib.contextmanager
    def applied(self, decoder_layers: nn.ModuleList, num_real: int):
        """Inside: ``decoder_layers``' adapted projections add ``B A x`` to rows ``num_real..`` of their
        output (dim -2 of ``[..., S, features]``) and leave rows ``..num_real - 1`` untouched."""
        handles = []
        try:
            for layer in self.layers:
                for name, path in PROJECTIONS.items():
                    if name in self.shapes:
                        module = decoder_layers[layer].get_submodule(path)
                        handles.append(module.register_forward_hook(pseudo_row_hook(self.blocks[str(layer)][name], num_real)))
            yield
        finally:
            for handle in handles:
                handle.remove()


def pseudo_row_hook(adapter: LowRank, num_real: int):
    """Forward hook adding ``adapter`` to output rows ``num_real..`` of an ``nn.Linear``."""

    def hook(module, args, out):
        delta = adapter(args[0][..., num_real:, :]).to(out.dtype)
        if num_real == 0:
            return out + delta
        out[..., num_real:, :] += delta
        return out

    return hook


def applied(owner, decoder_layers: nn.ModuleList, num_real: int):
    """``owner.adapters.applied(...)`` for a trainable draft module with adapters, else a no-op context."""
    adapters = getattr(owner, "adapters", None)
    return contextlib.nullcontext() if adapters is None else adapters.applied(decoder_layers, num_real)


def projection_shapes(decoder_layer: nn.Module) -> dict[str, tuple[int, int]]:
    """``{projection: (in, out)}`` of a decoder layer's :data:`PROJECTIONS` (those it has as ``nn.Linear``)."""
    shapes = {}
    for name, path in PROJECTIONS.items():
        try:
            module = decoder_layer.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
    if not shapes:
        raise ValueError(f"{type(decoder_layer).__name__} has none of the projections adapters attach to ({', '.join(PROJECTIONS)})")
    return shapes


def adapted_layers(layers, first: int, num_layers: int) -> list[int]:
    """The layers adapters go on in a ``num_layers``-layer model whose pseudo rows enter at layer
    ``first``: ``layers`` (None: every one from ``first``), checked; ``ValueError`` when there are none."""
    layers = list(range(first, num_layers)) if layers is None else list(layers)
    if not layers:
        raise ValueError(f"no layers to adapt: pseudo rows entering after layer {first - 1} pass through none of the {num_layers}")
    check_range(layers, first, num_layers)
    return layers


def check_range(layers, first: int, num_layers: int) -> None:
    """Raise ``ValueError`` unless every adapted layer is one the pseudo rows pass through: ``[first, num_layers)``."""
    bad = [layer for layer in layers if type(layer) is not int or not first <= layer < num_layers]
    if bad:
        raise ValueError(
            f"adapter layers must be in [{first}, {num_layers - 1}] (the layers the pseudo rows pass through "
            f"in a {num_layers}-layer model), got {bad}"
        )


def adapters_for(model, rank: int, layers, first: int) -> PseudoRowAdapters | None:
    """Rank-``rank`` adapters for ``model`` (None for rank 0) on ``layers`` (None: all from ``first``)."""
    if rank == 0:
        if layers is not None:
            raise ValueError("adapter layers were given without an adapter rank: pass adapter_rank >= 1")
        return None
    return PseudoRowAdapters.for_model(model, rank, first, layers)
