"""SPACE-style mask slots on a frozen model: ``k`` learned embeddings enter as pseudo rows before layer 0.

SPACE (arXiv 2402.11809) appends ``k`` ``[MASK]`` tokens after each token and fine-tunes the whole
model so that their outputs predict the next ``k`` tokens. We keep the model frozen (its output must
stay its own), so only the slots' input embeddings train. A slot after real row ``r`` has FIRP's
pseudo-row position and visibility (the cache, ``r``'s ancestors, ``r`` and ``r``'s earlier slots);
it differs from FIRP's pseudo row only in where it enters: before layer 0, as a learned vector,
instead of after a transfer layer as a map of ``r``'s hidden state.
"""

from pathlib import Path

import torch
from torch import nn

from .firp.adapters import PseudoRowAdapters, adapters_for, applied
from .firp.predictor import CONFIG_NAME, check_fingerprint, config_dict, is_int, load_state, model_fingerprint, read_config, save
from .base import DraftSource, frozen_copy


class MaskSlots(nn.Module):
    """``k`` learned input embeddings, one per future offset (the trainable part of :class:`MaskDrafts`).

    Follows :class:`~specdec.drafts.firp.predictor.FuturePredictor`'s training protocol with ``layer = -1``:
    the states enter before layer 0 and run through every layer. ``forward`` ignores its input's
    values: a slot is the same vector after every token; only its position and what it sees differ.

    Attributes:
        embeddings: ``[k, d]``, row ``i`` is the slot for offset ``i + 1``.
        fingerprint: the model config fields these slots were made for.
        adapters: pseudo-row adapters (on any layers: the slots run through all), or None.
    """

    SOURCE = "mask"
    BASE_PARAMETERS = ("embeddings",)
    refine = True
    layer = -1
    input_layers = (-1,)

    def __init__(self, hidden_size: int, k: int, fingerprint: dict, adapters: PseudoRowAdapters | None = None):
        super().__init__()
        for name, value in (("k", k), ("hidden_size", hidden_size)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.k = k
        self.fingerprint = dict(fingerprint)
        self.embeddings = nn.Parameter(torch.zeros(k, hidden_size))
        self.adapters = adapters

    @property
    def hidden_size(self) -> int:
        return self.embeddings.shape[-1]

    @classmethod
    def for_model(cls, model, k: int = 3, *, adapter_rank: int = 0, adapter_layers=None) -> "MaskSlots":
        """Slots initialised to the mean input embedding (an "unknown token"), in the model's dtype;
        ``adapter_rank > 0`` adds pseudo-row adapters on ``adapter_layers`` (default: every layer)."""
        weight = model.get_input_embeddings().weight
        adapters = adapters_for(model, adapter_rank, adapter_layers, 0)
        slots = cls(model.config.hidden_size, k, model_fingerprint(model), adapters)
        with torch.no_grad():
            slots.embeddings.copy_(weight.float().mean(0).expand(k, -1))
        return slots.to(device=weight.device, dtype=weight.dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` -> ``[..., k, d]``: the slots after every row of ``hidden`` (differentiable)."""
        return self.embeddings.expand(*hidden.shape[:-1], *self.embeddings.shape)

    def check_model(self, model) -> None:
        found = check_fingerprint(self.fingerprint, model, "mask-slot source")
        if self.hidden_size != found["hidden_size"]:
            raise ValueError(f"mask slots are {self.hidden_size} wide but the model's hidden size is {found['hidden_size']}")
        if self.adapters is not None:
            self.adapters.check_model(model)

    def config_dict(self) -> dict:
        adapters = None if self.adapters is None else self.adapters.config()
        return config_dict(self.SOURCE, self.layer, self.k, self.hidden_size, self.fingerprint, adapters=adapters)

    def save_pretrained(self, path) -> None:
        """Write the slots (``predictor_config.json`` with ``"source": "mask"``, ``predictor.safetensors``) into ``path``."""
        save(path, self.config_dict(), self.state_dict())

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None) -> "MaskSlots":
        config = read_config(Path(path), cls.SOURCE)
        adapters = PseudoRowAdapters.from_config(config.get("adapters"), Path(path) / CONFIG_NAME)
        return load_state(cls(config["hidden_size"], config["k"], config["fingerprint"], adapters), Path(path), device, dtype)


class MaskDrafts(DraftSource):
    """Draft source of mask slots: ``specdec.patch(model, MaskDrafts.for_model(model, k=3))``.

    Attributes:
        module: the trainable :class:`MaskSlots` (what :func:`specdec.train_predictor` trains).
    """

    kind = "mask"
    layer = -1

    def __init__(self, module: MaskSlots):
        if not isinstance(module, MaskSlots):
            raise TypeError(f"MaskDrafts needs MaskSlots, got {type(module).__name__}")
        self.module = module
        self.k = module.k
        self.has_adapters = module.adapters is not None

    @classmethod
    def for_model(cls, model, k: int = 3, *, adapter_rank: int = 0, adapter_layers=None) -> "MaskDrafts":
        """Untrained slots for ``model`` (they decode exactly; training makes them accepted), with
        pseudo-row adapters of rank ``adapter_rank`` on ``adapter_layers`` (default: every layer) if > 0."""
        return cls(MaskSlots.for_model(model, k, adapter_rank=adapter_rank, adapter_layers=adapter_layers))

    def save_pretrained(self, path) -> None:
        self.module.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None) -> "MaskDrafts":
        """Load slots saved by :meth:`save_pretrained`; a FIRP or early-exit folder is refused by name."""
        return cls(MaskSlots.from_pretrained(path, device, dtype))

    def check_model(self, model) -> None:
        self.module.check_model(model)

    def prepared(self, model, backend: str) -> "MaskDrafts":
        return MaskDrafts(frozen_copy(self.module, model))

    def inject(self, hidden, out) -> None:
        out.view(hidden.shape[0], self.k, -1).copy_(self.module.embeddings)

    def adapted(self, layers, num_real: int):
        return applied(self.module, layers, num_real)
