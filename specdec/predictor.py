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

    Attributes:
        weight: ``[k, d, d]`` (``weight[i]`` is ``W_{i+1}``, out x in like ``nn.Linear``).
        bias: ``[k, d]``.
        layer: the transfer layer ``t``: pseudo states are made from layer ``t``'s output.
        fingerprint: the model config fields this predictor was made for.
    """

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
        found = model_fingerprint(model)
        for field in FINGERPRINT_FIELDS:
            if self.fingerprint.get(field) != found[field]:
                raise ValueError(
                    f"predictor does not match the model: {field} is {self.fingerprint.get(field)!r} "
                    f"in the predictor but {found[field]!r} in the model"
                )
        check_layer(self.layer, found["num_hidden_layers"])
        if self.hidden_size != found["hidden_size"]:
            raise ValueError(f"predictor maps are {self.hidden_size} wide but the model's hidden size is {found['hidden_size']}")

    def config_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "layer": self.layer,
            "k": self.k,
            "hidden_size": self.hidden_size,
            "fingerprint": self.fingerprint,
        }

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``predictor_config.json`` and ``predictor.safetensors`` into directory ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.detach().contiguous().cpu(), "bias": self.bias.detach().contiguous().cpu()}
        save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        (path / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None) -> "FuturePredictor":
        """Load a predictor saved by :meth:`save_pretrained`; raise clear errors on bad files."""
        config = read_config(Path(path))
        tensors = read_weights(Path(path), config)
        predictor = cls(config["hidden_size"], config["k"], config["layer"], config["fingerprint"])
        with torch.no_grad():
            predictor.weight.copy_(tensors["weight"])
            predictor.bias.copy_(tensors["bias"])
        return predictor.to(device=device, dtype=dtype or tensors["weight"].dtype)


def is_int(value) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` must not pass for layer 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_layer(layer: int, num_layers: int) -> None:
    if not is_int(layer) or not 0 <= layer < num_layers:
        raise ValueError(f"transfer layer must be an int in [0, {num_layers - 1}] for a {num_layers}-layer model, got {layer!r}")


def read_config(path: Path) -> dict:
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
    return config


def read_weights(path: Path, config: dict) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no predictor weights at {path}: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupted predictor weights {file}: {err}") from None
    k, d = config["k"], config["hidden_size"]
    expected = {"weight": (k, d, d), "bias": (k, d)}
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise ValueError(f"corrupted predictor weights {file}: {name} is {got}, expected {shape}")
        if not tensors[name].is_floating_point():
            raise ValueError(f"corrupted predictor weights {file}: {name} is {tensors[name].dtype}, expected a floating-point dtype")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"corrupted predictor weights {file}: {name} has non-finite values")
    return tensors

