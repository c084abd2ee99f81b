"""``patch()`` / ``unpatch()``: FIRP decoding under an existing model's ``generate``.

Patching validates everything first (a bad argument leaves the model as it
was), switches the model to the wrapping attention implementation (see
:mod:`specdec.attention`) and overrides ``generate`` on the instance only. The
override calls transformers' own ``generate`` with ``custom_generate`` set to
the speculative loop, so generation configs, stopping criteria and logits
processors are prepared by transformers exactly as for plain decoding. Requests
the loop does not cover run the original ``generate`` after a one-time warning.
"""

import types
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from transformers.generation import GenerationMode

from .attention import wrapped_name
from .cost import StepCost
from .decoding import ModelParts, speculative_generate
from .drafts import DraftSource, LookupDrafts
from .greedy_rules import StopChecker, unsupported_processor
from .kernels import check_backend
from .planner import AutoPlanner, DraftingMemory, LayoutCache, StaticPlanner
from .predictor import FuturePredictor
from .stats import DecodeStats
from .tree import TreeShape
from .verification import rule_for

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STATE_ATTR = "_specdec_state"
ASSISTED_KWARGS = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit", "custom_generate")
PASSIVE_MODEL_KWARGS = ("attention_mask", "position_ids", "use_cache", "logits_to_keep", "cache", "past_key_values")


@dataclass
class PatchState:
    """A patched model's settings. ``shape`` is None for ``tree="auto"``; ``owner`` is the object
    passed to :func:`patch` (what ``tree="auto"`` keeps its statistics under)."""

    source: DraftSource
    shape: TreeShape | None
    backend: str
    original_attn: str
    parts: ModelParts
    owner: object
    last_stats: DecodeStats | None = None
    warned: set = field(default_factory=set)


@dataclass
class Tuning:
    """What ``tree="auto"`` learns about a model, kept across ``generate`` and ``patch`` calls:
    step-cost curves per (device, dtype), layout caches per (device, k), and a
    :class:`~specdec.planner.DraftingMemory` per draft source and decoding regime."""

    costs: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    memories: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)


_TUNING: "weakref.WeakKeyDictionary[object, Tuning]" = weakref.WeakKeyDictionary()


class _Unsupported(Exception):
    """Raised inside ``generate`` before any work when the request needs the original decoding."""


def patch(model, predictor: "FuturePredictor | DraftSource", tree="auto", backend: str = "auto"):
    """Make ``model.generate`` decode greedily with speculative drafts; returns ``model``.

    Args:
        model: a loaded ``*ForCausalLM`` of a supported type (see ``SUPPORTED_MODEL_TYPES``).
        predictor: a :class:`FuturePredictor` for this model (drafts from FIRP merged with n-gram
            lookup, :class:`LookupDrafts`), or any :class:`DraftSource` (used as given, e.g.
            ``FIRPDrafts(predictor)`` for FIRP alone).
        tree: ``"auto"`` (each step's tree chosen for the most tokens per second from acceptance
            statistics and this device's measured step cost; see :mod:`specdec.planner`), or a
            static tree: ``"chain"``, ``"default"`` (16 nodes), ``"wide"`` (60 nodes), a node count
            ``N`` (the ``N`` most likely paths) or a list of paths.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`specdec.kernels`).

    Patching an already patched model replaces its settings. Errors leave the model untouched.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} is not supported; supported types: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if isinstance(predictor, FuturePredictor):
        source = LookupDrafts(predictor)
    elif isinstance(predictor, DraftSource):
        source = predictor
    else:
        raise TypeError(f"predictor must be a FuturePredictor or a DraftSource, got {type(predictor).__name__}")
    source.check_model(model)
    shape = None if isinstance(tree, str) and tree == "auto" else TreeShape.resolve(tree, source.k)
    if shape is not None and shape.num_nodes and not source.k:
        raise ValueError("static trees draft from pseudo rows, and this source injects none: use tree='auto'")
    if shape is not None and shape.num_candidates > model.config.vocab_size:
        raise ValueError(f"tree uses rank {shape.num_candidates - 1} but the vocabulary has {model.config.vocab_size} tokens")
    check_backend(backend)
    current = getattr(model, STATE_ATTR, None)
    original = current.original_attn if current is not None else model.config._attn_implementation
    name = wrapped_name(original)
    parts = ModelParts.of(model)
    source = source.prepared(model, backend)

    if model.config._attn_implementation != name:
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:
            raise RuntimeError(f"transformers refused attn_implementation={name!r} for {type(model).__name__}")
    setattr(model, STATE_ATTR, PatchState(source, shape, backend, original, parts, predictor))
    model.generate = types.MethodType(_patched_generate, model)
    return model


def unpatch(model):
    """Restore the original ``generate`` and attention implementation; returns ``model``."""
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        return model
    model.set_attn_implementation(state.original_attn)
    del model.generate
    delattr(model, STATE_ATTR)
    return model


def is_patched(model) -> bool:
    return getattr(model, STATE_ATTR, None) is not None


def stats(model) -> DecodeStats | None:
    """Statistics of the last ``generate`` call of a patched model (None before the first)."""
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise ValueError("model is not patched with specdec.patch()")
    return state.last_stats


def _patched_generate(model, *args, **kwargs):
    state = getattr(model, STATE_ATTR)
    reason = next((f"{key} was given" for key in ASSISTED_KWARGS if kwargs.get(key) is not None), None)
    if reason is None:
        streamer = kwargs.pop("streamer", None)
        try:
            return type(model).generate(model, *args, custom_generate=_speculative, specdec_streamer=streamer, **kwargs)
        except _Unsupported as err:
            reason = str(err)
            kwargs["streamer"] = streamer
    if reason not in state.warned:
        state.warned.add(reason)
        warnings.warn(f"specdec: {reason}; running the original generate instead", stacklevel=2)
    state.last_stats = DecodeStats(fallback=reason)
    return type(model).generate(model, *args, **kwargs)


def _speculative(model, input_ids, logits_processor, stopping_criteria, generation_config, specdec_streamer=None, **model_kwargs):
    """The ``custom_generate`` callable: FIRP greedy decoding, or ``_Unsupported`` before any work."""
    state = getattr(model, STATE_ATTR)
    reason = unsupported_request(input_ids, logits_processor, generation_config, model_kwargs)
    if reason is not None:
        raise _Unsupported(reason)
    if specdec_streamer is not None:
        specdec_streamer.put(input_ids.cpu())
    stop = StopChecker(stopping_criteria, generation_config.max_length)
    rule = rule_for(generation_config, logits_processor)
    sequence, run_stats = speculative_generate(
        state.parts, state.source, _planner(model, state, rule.regime), input_ids, stop, rule, state.backend, specdec_streamer
    )
    if specdec_streamer is not None:
        specdec_streamer.end()
    state.last_stats = run_stats
    return sequence


def _planner(model, state: PatchState, regime: tuple) -> "AutoPlanner | StaticPlanner":
    """The planner of one ``generate`` call, with what earlier calls in the same ``regime`` (greedy,
    or sampling at given settings: acceptance differs between them) learned for ``tree="auto"``."""
    param = model.get_input_embeddings().weight
    source = state.source
    if state.shape is not None:
        return StaticPlanner(state.shape, source.k, param.device)
    tuning = _TUNING.setdefault(model, Tuning())
    cost = tuning.costs.setdefault((param.device, param.dtype), StepCost())
    layouts = tuning.layouts.setdefault((param.device, source.k), LayoutCache(source.k, param.device))
    memory = tuning.memories.setdefault(state.owner, {}).setdefault(regime, DraftingMemory())
    num_layers = len(state.parts.layers)
    fraction = (num_layers - source.layer - 1) / num_layers if source.layer is not None else 0.0
    return AutoPlanner(source.k, fraction, max(source.k, source.chain_depth), memory, cost, layouts)


def unsupported_request(input_ids, logits_processor, generation_config, model_kwargs) -> str | None:
    """Why a prepared ``generate`` request needs the original decoding, or None if FIRP covers it."""
    batch, length = input_ids.shape
    if batch != 1:
        return f"batch size {batch} (speculative decoding supports batch size 1)"
    if length == 0:
        return "an empty prompt"
    mode = generation_config.get_generation_mode()
    if mode not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        return f"generation mode {mode.value!r} (speculative decoding covers greedy search and sampling)"
    if generation_config.num_return_sequences not in (None, 1):
        return f"num_return_sequences={generation_config.num_return_sequences}"
    if generation_config.return_dict_in_generate:
        return "return_dict_in_generate=True"
    extra = sorted(key for key, value in model_kwargs.items() if key not in PASSIVE_MODEL_KWARGS and value is not None)
    if extra:
        return f"generate argument(s) {', '.join(extra)}"
    mask = model_kwargs.get("attention_mask")
    if mask is not None and not bool((mask == 1).all()):
        return "padding in attention_mask"
    positions = model_kwargs.get("position_ids")
    if positions is not None and not torch.equal(positions.view(-1).cpu(), torch.arange(length)):
        return "custom position_ids"
    for key in ("cache", "past_key_values"):
        cache = model_kwargs.get(key)
        if cache is not None and cache.get_seq_length() > 0:
            return "a pre-filled cache"
    name = unsupported_processor(logits_processor)
    if name is not None:
        return f"logits processor {name}"
    return None
