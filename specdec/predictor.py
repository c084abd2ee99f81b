"""The FIRP future-state predictor: ``k`` linear maps applied at a transfer layer."""

import json
from pathlib import Path

import torch
from torch import nn

CONFIG_NAME = "predictor_config.json"
WEIGHTS_NAME = "predictor.safetensors"
FORMAT_VERSION = 1
FINGERPRINT_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def model_fingerprint(model_or_config) -> dict:
    """The fields of a model's config that a predictor must match."""
    config = getattr(model_or_config, "config", model_or_config)
    return {field: getattr(config, field) for field in FINGERPRINT_FIELDS}


class FuturePredictor(nn.Module):
    """``k`` maps ``p_i(h) = W_i h + b_i`` from the hidden state after layer ``layer``.

    This is the trainable protocol :func:`specdec.train_predictor` drives: ``k`` offsets, the
    ``layer`` whose output ``forward`` reads (-1: the token embeddings), ``refine`` (whether the
    states run through layers ``layer + 1 ..`` before the LM head, or go straight to the final norm
    and LM head), ``forward``, ``check_model`` and ``save_pretrained``/``from_pretrained``.

    Attributes:
        weight: ``[k, d, d]`` (``weight[i]`` is ``W_{i+1}``, out x in like ``nn.Linear``).
        bias: ``[k, d]``.
        layer: the transfer layer ``t``: pseudo states are made from layer ``t``'s output.
        fingerprint: the model config fields this predictor was made for.
    """

    SOURCE = "firp"  # the draft source this module's files belong to (checked on load)
    WHAT = "predictor"  # how errors name it
    refine = True

    def __init__(self, hidden_size: int, k: int, layer: int, fingerprint: dict):
        super().__init__()
        for name, value, low in (("k", k, 1), ("hidden_size", hidden_size, 1), ("layer", layer, 0)):
            if not is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.k = k
        self.layer = layer
        self.fingerprint = dict(fingerprint)
        self.weight = nn.Parameter(torch.eye(hidden_size).repeat(k, 1, 1))
        self.bias = nn.Parameter(torch.zeros(k, hidden_size))

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[-1]

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 3) -> "FuturePredictor":
        """Identity-initialised predictor for ``model`` (default layer: ``L // 4``)."""
        config = model.config
        num_layers = config.num_hidden_layers
        layer = num_layers // 4 if layer is None else layer
        check_layer(layer, num_layers)
        param = next(model.parameters())
        predictor = cls(config.hidden_size, k, layer, model_fingerprint(config))
        return predictor.to(device=param.device, dtype=param.dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` -> ``[..., k, d]`` pseudo hidden states (differentiable; training path)."""
        return torch.einsum("...e,kde->...kd", hidden, self.weight) + self.bias

    def check_model(self, model) -> None:
        """Raise ``ValueError`` naming the first fingerprint field that differs from ``model``."""
        found = check_fingerprint(self.fingerprint, model, self.WHAT)
        check_layer(self.layer, found["num_hidden_layers"])
        if self.hidden_size != found["hidden_size"]:
            raise ValueError(f"{self.WHAT} maps are {self.hidden_size} wide but the model's hidden size is {found['hidden_size']}")

    def config_dict(self) -> dict:
        return config_dict(self.SOURCE, self.layer, self.k, self.hidden_size, self.fingerprint)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``predictor_config.json`` and ``predictor.safetensors`` into directory ``path``."""
        save(path, self.config_dict(), {"weight": self.weight, "bias": self.bias})

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None) -> "FuturePredictor":
        """Load a predictor saved by :meth:`save_pretrained`; raise clear errors on bad files."""
        config = read_config(Path(path), cls.SOURCE)
        k, d = config["k"], config["hidden_size"]
        tensors = read_weights(Path(path), {"weight": (k, d, d), "bias": (k, d)})
        predictor = cls(config["hidden_size"], config["k"], config["layer"], config["fingerprint"])
        with torch.no_grad():
            predictor.weight.copy_(tensors["weight"])
            predictor.bias.copy_(tensors["bias"])
        return predictor.to(device=device, dtype=dtype or tensors["weight"].dtype)


def is_int(value) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` must not pass for layer 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_fingerprint(fingerprint: dict, model, what: str) -> dict:
    """Raise ``ValueError`` naming the first fingerprint field that differs; returns the model's."""
    found = model_fingerprint(model)
    for field in FINGERPRINT_FIELDS:
        if fingerprint.get(field) != found[field]:
            raise ValueError(
                f"{what} does not match the model: {field} is {fingerprint.get(field)!r} "
                f"in the {what} but {found[field]!r} in the model"
            )
    return found


def config_dict(source: str, layer: int, k: int, hidden_size: int, fingerprint: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "layer": layer,
        "k": k,
        "hidden_size": hidden_size,
        "fingerprint": fingerprint,
    }


def save(path: str | Path, config: dict, tensors: dict) -> None:
    """Write ``config`` as ``predictor_config.json`` and ``tensors`` as ``predictor.safetensors`` into ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")


def check_layer(layer: int, num_layers: int) -> None:
    if not is_int(layer) or not 0 <= layer < num_layers:
        raise ValueError(f"transfer layer must be an int in [0, {num_layers - 1}] for a {num_layers}-layer model, got {layer!r}")


def read_config(path: Path, source: str) -> dict:
    """The checked config of the ``source`` (``"firp"``, ``"mask"``, ``"exit"``) saved in ``path``."""
    file = path / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no predictor at {path}: {CONFIG_NAME} is missing")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupted predictor config {file}: {err}") from None
    required = {"format_version": int, "layer": int, "k": int, "hidden_size": int, "fingerprint": dict}
    for key, kind in required.items():
        value = config.get(key) if isinstance(config, dict) else None
        if not (is_int(value) if kind is int else isinstance(value, kind)):
            raise ValueError(f"corrupted predictor config {file}: field {key!r} missing or not {kind.__name__} (got {value!r})")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(f"predictor format {config['format_version']} in {file} is not supported (expected {FORMAT_VERSION})")
    if config["k"] < 1:
        raise ValueError(f"corrupted predictor config {file}: k={config['k']} must be >= 1")
    saved = config.get("source", "firp")  # files written before mask and early-exit sources were FIRP's
    if saved != source:
        raise ValueError(f"{path} holds a {saved!r} draft source, not a {source!r} one (load it with {LOADERS.get(saved, saved)})")
    return config


LOADERS = {"firp": "FuturePredictor.from_pretrained", "mask": "MaskDrafts.from_pretrained", "exit": "EarlyExitDrafts.from_pretrained"}


def read_weights(path: Path, expected: dict[str, tuple]) -> dict:
    """The tensors saved in ``path``, checked against ``expected`` (name -> shape)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no predictor weights at {path}: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupted predictor weights {file}: {err}") from None
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise ValueError(f"corrupted predictor weights {file}: {name} is {got}, expected {shape}")
        if not tensors[name].is_floating_point():
            raise ValueError(f"corrupted predictor weights {file}: {name} is {tensors[name].dtype}, expected a floating-point dtype")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"corrupted predictor weights {file}: {name} has non-finite values")
    return tensors

