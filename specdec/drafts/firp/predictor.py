"""The FIRP future-state predictor: ``k`` linear maps applied at a transfer layer (the paper's map;
richer maps in :mod:`specdec.drafts.firp.maps`), optionally with :mod:`pseudo-row adapters <specdec.drafts.firp.adapters>`."""

import json
from pathlib import Path

import torch
from torch import nn

from ... import kernels
from .adapters import PseudoRowAdapters, adapters_for
from .vocabulary import DraftVocabulary

CONFIG_NAME = "predictor_config.json"
WEIGHTS_NAME = "predictor.safetensors"
VOCAB_NAME = "draft_vocab.json"
FORMAT_VERSION = 1
FINGERPRINT_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def model_fingerprint(model_or_config) -> dict:
    """The fields of a model's config that a predictor must match."""
    config = getattr(model_or_config, "config", model_or_config)
    return {field: getattr(config, field) for field in FINGERPRINT_FIELDS}


MAP_CLASSES: "dict[str, type[FuturePredictor]]" = {}
"""Every FIRP map kind by the name its files record (``"linear"``, ``"mlp"``, ``"multi"``): each
class that names a ``MAP`` registers itself when it is defined, so this module needs no import of
:mod:`~specdec.drafts.firp.maps` (which imports it) to load the richer kinds."""


class FuturePredictor(nn.Module):
    """``k`` maps ``p_i(h) = W_i h + b_i`` from the hidden state after layer ``layer``.

    This is the trainable protocol :func:`specdec.train_predictor` drives: ``k`` offsets, the
    ``layer`` whose output ``forward`` reads (-1: the token embeddings), ``input_layers`` (the
    layers whose outputs, concatenated, are ``forward``'s input), ``refine`` (whether the states
    run through layers ``layer + 1 ..`` before the LM head, or go straight to the final norm and LM
    head), ``adapters`` (None or :class:`~specdec.drafts.firp.adapters.PseudoRowAdapters` on those layers),
    ``BASE_PARAMETERS`` (the parameters of the paper's map; the others train at
    ``TrainConfig.adapter_lr``), ``forward``, ``check_model``, ``config_dict`` and
    ``save_pretrained``/``from_pretrained``.

    Attributes:
        weight: ``[k, d, d]`` (``weight[i]`` is ``W_{i+1}``, out x in like ``nn.Linear``).
        bias: ``[k, d]``.
        layer: the transfer layer ``t``: pseudo states are made from layer ``t``'s output.
        fingerprint: the model config fields this predictor was made for.
        adapters: pseudo-row adapters on layers after ``t``, or None.
        draft_vocab: the :class:`~specdec.drafts.firp.vocabulary.DraftVocabulary` its pseudo rows are ranked
            over on CPU (saved as ``draft_vocab.json``), or None: the whole vocabulary.
    """

    SOURCE = "firp"  # the draft source this module's files belong to (checked on load)
    WHAT = "predictor"  # how errors name it
    MAP = "linear"  # the map kind its files record (FuturePredictor.from_pretrained loads every kind)
    BASE_PARAMETERS = ("weight", "bias")
    refine = True
    earlier_layer = None  # a second input layer (MultiLayerPredictor), or None
    draft_vocab = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "MAP" in vars(cls):  # a map kind of its own (not a subclass that only changes behaviour)
            MAP_CLASSES[cls.MAP] = cls

    def __init__(self, hidden_size: int, k: int, layer: int, fingerprint: dict, adapters: PseudoRowAdapters | None = None):
        super().__init__()
        for name, value, low in (("k", k, 1), ("hidden_size", hidden_size, 1), ("layer", layer, 0)):
            if not is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if adapters is not None and not self.refine:
            raise ValueError(f"an {self.WHAT}'s states skip the later layers: adapters do not apply to it")
        if adapters is not None and min(adapters.layers) <= layer:
            raise ValueError(f"adapters must be on layers after the transfer layer {layer}, which the pseudo rows run through; got {list(adapters.layers)}")
        self.k = k
        self.layer = layer
        self.fingerprint = dict(fingerprint)
        self.weight = nn.Parameter(torch.eye(hidden_size).repeat(k, 1, 1))
        self.bias = nn.Parameter(torch.zeros(k, hidden_size))
        self.adapters = adapters

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[-1]

    @property
    def input_layers(self) -> tuple[int, ...]:
        """The layers whose outputs, concatenated in this order, ``forward`` reads."""
        return (self.layer,)

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 3, *, adapter_rank: int = 0, adapter_layers=None, **options) -> "FuturePredictor":
        """Identity-initialised predictor for ``model`` (default layer: ``L // 4``).

        ``adapter_rank > 0`` adds pseudo-row adapters on ``adapter_layers`` (default: every layer
        after ``layer``); ``options`` are the constructor's own (a richer map's).
        """
        config = model.config
        layer = default_layer(config.num_hidden_layers) if layer is None else layer
        check_layer(layer, config.num_hidden_layers)
        adapters = adapters_for(model, adapter_rank, adapter_layers, layer + 1)
        param = next(model.parameters())
        predictor = cls(config.hidden_size, k, layer, model_fingerprint(config), adapters=adapters, **options)
        return predictor.to(device=param.device, dtype=param.dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` -> ``[..., k, d]`` pseudo hidden states (differentiable; training path)."""
        return apply_maps(hidden, self.weight) + self.bias

    def project(self, hidden: torch.Tensor, out: torch.Tensor, backend: str) -> None:
        """Decoding path of ``forward``: ``hidden [R, d_in]`` -> ``out [R * k, d]`` (row ``r * k + i``), in place."""
        kernels.project_future(hidden, self.weight, self.bias, out=out, backend=backend)

    def check_model(self, model) -> None:
        """Raise ``ValueError`` naming the first fingerprint field that differs from ``model``."""
        found = check_fingerprint(self.fingerprint, model, self.WHAT)
        check_layer(self.layer, found["num_hidden_layers"])
        if self.hidden_size != found["hidden_size"]:
            raise ValueError(f"{self.WHAT} maps are {self.hidden_size} wide but the model's hidden size is {found['hidden_size']}")
        if self.adapters is not None:
            self.adapters.check_model(model)

    def map_options(self) -> dict:
        """The constructor arguments of this map kind beyond the linear map's (saved in the config)."""
        return {}

    @classmethod
    def read_map_options(cls, config: dict, file: Path) -> dict:
        """:meth:`map_options` from a saved config, checked (``ValueError`` naming ``file``)."""
        return {}

    def config_dict(self) -> dict:
        adapters = None if self.adapters is None else self.adapters.config()
        return config_dict(self.SOURCE, self.layer, self.k, self.hidden_size, self.fingerprint, map=self.MAP, adapters=adapters, **self.map_options())

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``predictor_config.json``, ``predictor.safetensors`` and, with a draft vocabulary,
        ``draft_vocab.json`` into directory ``path``."""
        save(path, self.config_dict(), self.state_dict())
        write_draft_vocab(Path(path) / VOCAB_NAME, self.draft_vocab, self.fingerprint)

    @classmethod
    def from_pretrained(cls, path: str | Path, device=None, dtype=None) -> "FuturePredictor":
        """Load a predictor saved by :meth:`save_pretrained`; raise clear errors on bad files.

        ``FuturePredictor.from_pretrained`` loads every FIRP map kind (returning a
        :class:`~specdec.drafts.firp.maps.MLPPredictor` for an ``"mlp"`` folder, ...); a subclass refuses a
        folder of another kind by name.
        """
        path = Path(path)
        config = read_config(path, cls.SOURCE)
        kind = config.get("map", "linear")
        if kind != cls.MAP:
            if cls is FuturePredictor and kind in MAP_CLASSES:
                return MAP_CLASSES[kind].from_pretrained(path, device, dtype)
            raise ValueError(
                f"{path} holds a {kind!r} map, not a {cls.MAP!r} one "
                f"(FuturePredictor.from_pretrained loads every FIRP map kind: {', '.join(MAP_CLASSES)})"
            )
        file = path / CONFIG_NAME
        adapters = PseudoRowAdapters.from_config(config.get("adapters"), file)
        options = cls.read_map_options(config, file)
        try:
            predictor = cls(config["hidden_size"], config["k"], config["layer"], config["fingerprint"], adapters=adapters, **options)
        except ValueError as err:
            raise ValueError(f"corrupted predictor config {file}: {err}") from None
        predictor.draft_vocab = read_draft_vocab(path / VOCAB_NAME)
        return load_state(predictor, path, device, dtype)



MAP_CLASSES[FuturePredictor.MAP] = FuturePredictor


def write_draft_vocab(file: Path, vocab: DraftVocabulary | None, fingerprint: dict) -> None:
    """Save ``vocab`` into ``file`` (None: remove a stale one); ``ValueError`` if it does not fit ``fingerprint``'s model."""
    if vocab is None:
        file.unlink(missing_ok=True)
        return
    if vocab.vocab_size != fingerprint.get("vocab_size", vocab.vocab_size):
        raise ValueError(f"the draft vocabulary is of {vocab.vocab_size} tokens, the model of {fingerprint['vocab_size']}")
    file.write_text(json.dumps({"vocab_size": vocab.vocab_size, "ids": vocab.ids.tolist()}) + "\n")


def read_draft_vocab(file: Path) -> DraftVocabulary | None:
    """The draft vocabulary saved in ``file``, None if there is none; ``ValueError`` naming a bad file."""
    if not file.is_file():
        return None
    try:
        saved = json.loads(file.read_text())
        return DraftVocabulary(torch.tensor(saved["ids"], dtype=torch.int64), saved["vocab_size"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"corrupted draft vocabulary {file}: {err}") from None


def default_layer(num_layers: int) -> int:
    """FIRP's default transfer layer of a ``num_layers``-layer model: ``L // 4``."""
    return num_layers // 4


def apply_maps(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``[..., e]`` by ``k`` maps ``weight [k, d, e]`` -> ``[..., k, d]``."""
    return torch.einsum("...e,kde->...kd", hidden, weight)


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


def config_dict(source: str, layer: int, k: int, hidden_size: int, fingerprint: dict, **contents) -> dict:
    """A saved source's config: what every kind records, then ``contents`` (map kind, adapters, ...)."""
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "layer": layer,
        "k": k,
        "hidden_size": hidden_size,
        "fingerprint": fingerprint,
        **contents,
    }


def save(path: str | Path, config: dict, tensors: dict) -> None:
    """Write ``config`` as ``predictor_config.json`` and ``tensors`` as ``predictor.safetensors`` into ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")


def check_layer(layer: int, num_layers: int, what: str = "transfer layer") -> None:
    """Raise ``ValueError`` unless ``layer`` is one of a ``num_layers``-layer model's (``what`` names it)."""
    if not is_int(layer) or not 0 <= layer < num_layers:
        raise ValueError(f"{what} must be an int in [0, {num_layers - 1}] for a {num_layers}-layer model, got {layer!r}")


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


LOADERS = {"firp": "FuturePredictor.from_pretrained", "mask": "MaskDrafts.from_pretrained", "exit": "EarlyExitDrafts.from_pretrained", "head": "HeadDrafts.from_pretrained"}


def read_int(config: dict, key: str, file: Path, low: int) -> int:
    """``config[key]``, an int >= ``low``, or ``ValueError`` naming ``file``."""
    value = config.get(key)
    if not is_int(value) or value < low:
        raise ValueError(f"corrupted predictor config {file}: field {key!r} missing or not an int >= {low} (got {value!r})")
    return value


def load_state(module: nn.Module, path: Path, device=None, dtype=None) -> nn.Module:
    """``module`` (built from its saved config) filled with the tensors saved in ``path``, each
    checked by name and shape, on ``device`` in ``dtype`` (default: the saved dtype)."""
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    tensors = read_weights(path, expected)
    with torch.no_grad():
        module.load_state_dict({name: tensors[name] for name in expected})
    return module.to(device=device, dtype=dtype or tensors[next(iter(expected))].dtype)


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

