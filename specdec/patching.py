"""``patch()`` / ``unpatch()``: FIRP decoding under an existing model's ``generate``.

Patching validates everything first (a bad argument leaves the model as it
was), switches the model to the wrapping attention implementation (see
:mod:`specdec.decode.attention`) and overrides ``generate`` on the instance only (plus
the helper that would drop ``tokenizer``, see ``_generation_mode_kwargs``). The
override calls transformers' own ``generate`` with ``custom_generate`` set to
the speculative loop, so generation configs, stopping criteria and logits
processors are prepared by transformers exactly as for plain decoding. Requests
the loop does not cover run the original ``generate`` after a one-time warning.

Nothing of the model is captured at patch time: each call reads its modules
again, re-runs ``patch()``'s checks and re-wraps a switched attention
implementation, so changes made after ``patch()`` cannot silently go unseen.

A patched model survives ``pickle`` / ``torch.save`` and ``copy.deepcopy`` with its patch
state: the overrides are :class:`_Override` objects, which pickle as (model, name) and are
re-created on the loaded model (registering the wrapped attention in a fresh process).
"""

import dataclasses
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from transformers.generation import GenerationMode

from .decode.attention import WRAPPABLE, ensure_wrapped, unwrapped_name, wrapped_name
from .decode.cost import StepCost
from .decode.graphs import CompiledStep, compile_refusal
from .decode.loop import EagerStep, ModelParts, speculative_generate
from .decode.packing import PackedWeights, PlainWeights
from .decode.warmup import time_steps
from .drafts import DraftSource, HeadDrafts, LookupDrafts, TokenHead
from .decode.rules import StopChecker, unsupported_processor
from .kernels import check_backend
from .decode.planner import AutoPlanner, DraftingMemory, LayoutCache, StaticPlanner
from .drafts.firp.predictor import FuturePredictor
from .decode.stats import DecodeStats
from .decode.tree import TreeShape
from .decode.verification import rule_for

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STATE_ATTR = "_specdec_state"
STATS_ATTR = "_specdec_stats"  # the last patched call's DecodeStats (kept by unpatch)
ASSISTED_KWARGS = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit", "custom_generate")
# Model kwargs that do not change greedy decoding (``tokenizer`` is handed back by _generation_mode_kwargs).
PASSIVE_MODEL_KWARGS = ("attention_mask", "position_ids", "use_cache", "logits_to_keep", "cache", "past_key_values", "tokenizer")


@dataclass
class PatchState:
    """What ``patch()`` was given; ``prepared`` is ``source`` made ready for the device and dtype in
    ``prepared_for``. ``shape`` is None for ``tree="auto"``; ``owner`` is the object passed to
    :func:`patch` (what ``tree="auto"`` keeps its statistics under); ``weights`` what the step's
    linears run on (:class:`PackedWeights` for ``compile="auto"``, else :class:`PlainWeights`);
    ``steps`` the loop's step factory (:class:`EagerStep`, or a :class:`CompiledStep` for ``compile=True``)."""

    source: DraftSource
    shape: TreeShape | None
    backend: str
    prepared: DraftSource
    prepared_for: tuple
    owner: object
    weights: "PackedWeights | PlainWeights"
    steps: "type[EagerStep] | CompiledStep" = EagerStep
    warned: set = field(default_factory=set)

    def step_name(self, weights: "PackedWeights | PlainWeights") -> str:
        """What a call's step runs: ``"compiled"``, else what its linears run on (``weights.name``)."""
        return self.steps.name if isinstance(self.steps, CompiledStep) else weights.name


@dataclass
class Tuning:
    """What ``tree="auto"`` learns about a model, kept across ``generate`` and ``patch`` calls:
    step-cost curves per (device, dtype, greedy or sampling, step), layout caches per (device, k), and a
    :class:`~specdec.decode.planner.DraftingMemory` per draft source, decoding regime and step (its
    achieved rate is the step's: a rate learned on a faster or slower step would misprice this one's
    rows, as when a benchmark alternates ``compile`` settings on one model)."""

    costs: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    memories: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)


_TUNING: "weakref.WeakKeyDictionary[object, Tuning]" = weakref.WeakKeyDictionary()
_COMPILED: "weakref.WeakKeyDictionary[object, CompiledStep]" = weakref.WeakKeyDictionary()
# model -> compile setting -> its packed weights (each setting packs its own set: all linears, or the heads)
_PACKED: "weakref.WeakKeyDictionary[object, dict[object, PackedWeights]]" = weakref.WeakKeyDictionary()


class _NoPredictor:
    """The owner :func:`patch` keeps ``tree="auto"``'s statistics under when it is given no predictor
    (a class, so it can key the weak dictionary of :class:`Tuning`)."""


class _Unsupported(Exception):
    """Raised inside ``generate`` before any work when the request needs the original decoding."""


def patch(model, predictor: "FuturePredictor | TokenHead | DraftSource | None" = None, tree="auto", backend: str = "auto", compile="auto"):
    """Make ``model.generate`` decode with speculative drafts (greedy or sampling); returns ``model``.

    Args:
        model: a loaded ``*ForCausalLM`` of a supported type (see ``SUPPORTED_MODEL_TYPES``).
        predictor: None (the default: n-gram lookup drafts alone, ``LookupDrafts()``, which need no
            training; ``tree`` must be ``"auto"``), a :class:`FuturePredictor` for this model (drafts
            from FIRP merged with n-gram lookup, :class:`LookupDrafts`), a :class:`TokenHead` (the
            token-aware head's draft trees merged with n-gram lookup), or any :class:`DraftSource` (used as given, e.g.
            ``FIRPDrafts(predictor)`` for FIRP alone, :class:`MaskDrafts`, :class:`EarlyExitDrafts`).
        tree: ``"auto"`` (each step's tree chosen for the most tokens per second from acceptance
            statistics and this device's measured step cost; see :mod:`specdec.decode.planner`), or a
            static tree: ``"chain"``, ``"default"`` (16 nodes), ``"wide"`` (60 nodes), a node count
            ``N`` (the ``N`` most likely paths) or a list of paths.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`specdec.kernels`).
        compile: ``"auto"`` (the default): on a CPU, the step's linear layers and LM head run on
            oneDNN-packed copies of their weights (:mod:`specdec.decode.packing`; packed once, at the
            first call, about a second for a 135M model on 2 CPU cores, and kept while the weights are
            unchanged, also across ``unpatch()`` and a later ``patch()``; they cost the weights' memory
            again, for the model's life, and are skipped when that is not free), for each weight
            shape and row count where the first calls timed them faster than the weights as stored;
            elsewhere the step as ``False``. ``False``: the model's weights as stored. ``True``: the
            step as one compiled program over a cache of fixed addresses
            (:mod:`specdec.decode.graphs`), for every draft source but those with an early exit,
            pseudo-row adapters or pseudo rows entering before the first layer (n-gram lookup, the
            token-aware head, FIRP maps without adapters). On a CPU the program is built once per machine and
            model by AOTInductor into a package on disk (:mod:`specdec.decode.packages`; about the
            weights' size, in ``$SPECDEC_CACHE_DIR`` or ``~/.cache/specdec``), at the first call or
            in :func:`warmup`, with a progress line on stderr (a minute or two for SmolLM2-135M on 2
            CPU cores); every later process, and a copy of the model, loads it in seconds. On CUDA
            it is ``torch.compile``'d and run as CUDA graphs, compiled in each process. Kept for
            the model's life. Faster than ``"auto"`` once built (``docs/results.md``).

    Patching an already patched model replaces its settings. Errors leave the model untouched.
    Each ``generate`` call reads the model's modules afresh and checks them again, so later
    changes (attention implementation, dtype, device, a new LM head) are honoured or refused.
    """
    if predictor is None or isinstance(predictor, FuturePredictor):
        source = LookupDrafts(predictor)
    elif isinstance(predictor, TokenHead):
        source = LookupDrafts(HeadDrafts(predictor))  # prepared() gives it the backend
    elif isinstance(predictor, DraftSource):
        source = predictor
    else:
        raise TypeError(f"predictor must be None, a FuturePredictor, a TokenHead or a DraftSource, got {type(predictor).__name__}")
    check_backend(backend)
    if not (compile is False or compile is True or (isinstance(compile, str) and compile == "auto")):
        raise ValueError(f"compile must be 'auto', True or False, got {compile!r}")
    refused = compile_refusal(source, model.config.num_hidden_layers) if compile is True else None
    if refused is not None:
        raise ValueError(f"compile=True does not cover draft sources with {refused}, which this {type(source).__name__} has: use compile='auto' or False")
    static = not (isinstance(tree, str) and tree == "auto")
    if static and not source.depth:
        raise ValueError("static trees draft from ranked candidates (pseudo rows or an early exit), and this source has none: use tree='auto'")
    shape = TreeShape.resolve(tree, source.depth) if static else None
    parts = _validated(model, source, shape)
    wrapped_name(unwrapped_name(model.config._attn_implementation))  # refuses flash/flex/... before any change
    prepared = source.prepared(model, backend)

    reason = ensure_wrapped(model, parts.layers)
    if reason is not None:
        raise ValueError(f"specdec cannot patch this model: {reason}")
    # The model's packed weights and compiled programs (checked against its weights at each call)
    # outlive unpatch() and serve a later patch(), which then packs and compiles nothing; they die
    # with the model. compile=True packs only the LM head and draft networks (the layers are compiled).
    weights = PlainWeights() if compile is False else _PACKED.setdefault(model, {}).setdefault(compile, PackedWeights())
    steps = _COMPILED.setdefault(model, CompiledStep()) if compile is True else EagerStep
    owner = _NoPredictor if predictor is None else predictor
    setattr(model, STATE_ATTR, PatchState(source, shape, backend, prepared, _placement(model), owner, weights, steps))
    setattr(model, STATS_ATTR, None)
    for name in _OVERRIDES:
        setattr(model, name, _Override(model, name))
    return model


def unpatch(model):
    """Restore the original ``generate`` and the attention implementation the model now wraps; returns ``model``.

    :func:`stats` still answers with the last patched call's statistics afterwards."""
    if getattr(model, STATE_ATTR, None) is None:
        return model
    current = model.config._attn_implementation
    if unwrapped_name(current) != current:
        model.set_attn_implementation(unwrapped_name(current))
    for name in _OVERRIDES:
        delattr(model, name)
    if isinstance(getattr(model, STATE_ATTR).steps, CompiledStep):
        getattr(model, STATE_ATTR).steps.release()  # the static cache; the compiled programs are kept
    delattr(model, STATE_ATTR)
    return model


WARMUP_ROWS = (1, 2, 4, 8, 16, 32)


def warmup(model, rows=WARMUP_ROWS, prompt_tokens: int = 128) -> dict[int, float]:
    """Ready a patched model for its first request; returns ``{rows: seconds}`` of the step.

    Does what the first ``generate`` call would do before its first step (packs the weights with
    ``compile="auto"`` on a CPU; with ``compile=True`` compiles, or loads, the step and the draft
    head's pass, and runs the head over the prefix once) and times one greedy step of each row count in ``rows`` (a chain of
    draft nodes over a cached prefix of ``prompt_tokens`` random tokens; best of a few). With
    ``tree="auto"`` the timings become the planner's step-cost curve for greedy decoding, so the
    first request plans from measured costs instead of plain steps and a pessimistic prior (later
    steps go on refining it). Takes about ``2 * len(rows)`` steps' time per row count on top of
    one ``prompt_tokens`` prompt pass.
    """
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise ValueError("warmup() needs a model patched with specdec.patch()")
    if isinstance(rows, int) or not rows or any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 64 for r in rows):
        raise ValueError(f"rows must be a non-empty sequence of ints in [1, 64], got {rows!r}")
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
        raise ValueError(f"prompt_tokens must be an int >= 0, got {prompt_tokens!r}")
    parts, source = _bind(model, state)
    weights = state.weights.for_step(parts.layers, parts.lm_head)
    rows = sorted(set(rows) | {1})  # the single-row step anchors the curve
    with torch.no_grad(), weights.active(state.steps.networks(parts, source), parts.lm_head, source.vocabulary):
        seconds = time_steps(parts, rows, prompt_tokens, state.backend, state.steps, source)
    if state.shape is None:
        device, dtype = _placement(model)
        cost = _TUNING.setdefault(model, Tuning()).costs.setdefault((device, dtype, "greedy", state.step_name(weights)), StepCost())
        for count in rows:
            cost.observe([(1.0, count)], seconds[count])
    return seconds


def is_patched(model) -> bool:
    return getattr(model, STATE_ATTR, None) is not None


def stats(model) -> DecodeStats | None:
    """Statistics of the last ``generate`` call since the latest :func:`patch` (None before the first),
    the same after :func:`unpatch`; ``ValueError`` for a model that was never patched."""
    if not hasattr(model, STATS_ATTR):
        raise ValueError("model was never patched with specdec.patch(): it has no specdec statistics")
    return getattr(model, STATS_ATTR)


def _validated(model, source: DraftSource, shape: TreeShape | None) -> ModelParts:
    """Check that ``source`` and ``shape`` can serve ``model`` as it is now; return its decoder parts."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r} is not supported; supported types: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if model.get_output_embeddings() is None or not hasattr(getattr(model, "model", None), "layers"):
        raise ValueError(
            f"specdec needs a *ForCausalLM model with an LM head, got {type(model).__name__} "
            "(load it with AutoModelForCausalLM)"
        )
    source.check_model(model)
    if shape is not None and shape.num_candidates > model.config.vocab_size:
        raise ValueError(f"tree uses rank {shape.num_candidates - 1} but the vocabulary has {model.config.vocab_size} tokens")
    return ModelParts.of(model)


def _placement(model) -> tuple:
    """``(device, dtype)`` of the model's embeddings: what a prepared draft source depends on."""
    weight = model.get_input_embeddings().weight
    return weight.device, weight.dtype


def _bind(model, state: PatchState) -> tuple[ModelParts, DraftSource]:
    """The model's modules as they are at this call, checked again, and the draft source prepared for them.

    Raises ``ValueError`` when the model no longer passes ``patch()``'s checks, and ``_Unsupported``
    (the original ``generate`` runs) when its attention implementation cannot be wrapped.
    """
    try:
        parts = _validated(model, state.source, state.shape)
    except ValueError as err:
        raise ValueError(f"{err} (the model changed after specdec.patch(); patch it again or call specdec.unpatch())") from None
    reason = ensure_wrapped(model, parts.layers)
    if reason is not None:
        raise _Unsupported(reason)
    placement = _placement(model)
    if placement != state.prepared_for:
        state.prepared, state.prepared_for = state.source.prepared(model, state.backend), placement
    return parts, state.prepared


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
    setattr(model, STATS_ATTR, DecodeStats(fallback=reason))
    return type(model).generate(model, *args, **kwargs)


def _generation_mode_kwargs(model, custom_generate, kwargs, *args):
    """transformers' own extraction, keeping the ``tokenizer`` it drops for ``custom_generate`` callables.

    Without it, ``stop_strings`` (and token healing) find no tokenizer. ``kwargs`` is
    ``generate``'s keyword dict, which the extraction pops from.
    """
    tokenizer = kwargs.get("tokenizer")
    mode_kwargs = type(model)._extract_generation_mode_kwargs(model, custom_generate, kwargs, *args)
    if tokenizer is not None:
        mode_kwargs.setdefault("tokenizer", tokenizer)
    return mode_kwargs


# Methods set on a patched model instance (and removed by unpatch).
_OVERRIDES = {"generate": _patched_generate, "_extract_generation_mode_kwargs": _generation_mode_kwargs}


class _Override:
    """``_OVERRIDES[name]`` bound to one patched model, as an instance attribute.

    Unlike a bound method (pickled as ``getattr(model, name)``, which fails while the model is
    being unpickled), it pickles as its model and name and is re-created by :func:`_restore_override`.
    """

    def __init__(self, model, name: str):
        self.model, self.name = model, name

    def __call__(self, *args, **kwargs):
        return _OVERRIDES[self.name](self.model, *args, **kwargs)

    def __reduce__(self):
        return _restore_override, (self.model, self.name)


def _restore_override(model, name: str) -> _Override:
    """Unpickling: the override again, with the wrapped attention implementations registered
    (a fresh process has none, and the loaded model's config names one)."""
    for original in WRAPPABLE:
        wrapped_name(original)
    return _Override(model, name)


def _speculative(model, input_ids, logits_processor, stopping_criteria, generation_config, specdec_streamer=None, **model_kwargs):
    """The ``custom_generate`` callable: speculative decoding, or ``_Unsupported`` before any work."""
    state = getattr(model, STATE_ATTR)
    reason = unsupported_request(input_ids, logits_processor, generation_config, model_kwargs)
    if reason is not None:
        raise _Unsupported(reason)
    parts, source = _bind(model, state)
    if specdec_streamer is not None:
        specdec_streamer.put(input_ids.cpu())
    stop = StopChecker(stopping_criteria, generation_config.max_length)
    rule = rule_for(generation_config, logits_processor)
    weights = state.weights.for_step(parts.layers, parts.lm_head)
    step = state.step_name(weights)
    planner = _planner(model, state, parts, source, rule.regime, step)
    with weights.active(state.steps.networks(parts, source), parts.lm_head, source.vocabulary):
        sequence, run_stats = speculative_generate(
            parts, source, planner, input_ids, stop, rule, state.backend, specdec_streamer, state.steps
        )
    run_stats = dataclasses.replace(run_stats, step=step)
    if specdec_streamer is not None:
        specdec_streamer.end()
    setattr(model, STATS_ATTR, run_stats)
    # Plain decoding appends int64 tokens with torch.cat, which promotes narrower ids (int32) to int64.
    return sequence.to(torch.promote_types(input_ids.dtype, torch.int64))


def _planner(model, state: PatchState, parts: ModelParts, source: DraftSource, regime: tuple, step: str) -> "AutoPlanner | StaticPlanner":
    """The planner of one ``generate`` call, with what earlier calls in the same ``regime`` (greedy,
    or sampling at given settings: acceptance differs between them) learned for ``tree="auto"``;
    ``step`` names what the step runs (compiled, or eager on packed or stored weights), which has its own cost curve."""
    device, dtype = _placement(model)
    if state.shape is not None:
        return StaticPlanner(state.shape, source.k, device)
    tuning = _TUNING.setdefault(model, Tuning())
    cost = tuning.costs.setdefault((device, dtype, regime[0], step), StepCost())  # a sampling step costs more than a greedy one
    layouts = tuning.layouts.setdefault((device, source.k), LayoutCache(source.k, device))
    memory = tuning.memories.setdefault(state.owner, {}).setdefault((regime, step), DraftingMemory())
    num_layers = len(parts.layers)
    fraction = (num_layers - source.layer - 1) / num_layers if source.layer is not None else 0.0
    return AutoPlanner(source.k, fraction, max(source.depth, source.chain_depth), memory, cost, layouts)


def unsupported_request(input_ids, logits_processor, generation_config, model_kwargs) -> str | None:
    """Why a prepared ``generate`` request needs the original decoding, or None if FIRP covers it.

    The mode and the arguments are checked before the shape of ``input_ids``: ``generate``
    expands it for beams and leaves it empty for ``inputs_embeds``, which are the real reasons.
    """
    mode = generation_config.get_generation_mode()
    if mode not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        return f"generation mode {mode.value!r} (speculative decoding covers greedy search and sampling)"
    if generation_config.num_return_sequences not in (None, 1):
        return f"num_return_sequences={generation_config.num_return_sequences}"
    if generation_config.return_dict_in_generate:
        return "return_dict_in_generate=True"
    if model_kwargs.get("inputs_embeds") is not None:
        return "inputs_embeds was given (speculative decoding starts from token ids)"
    extra = sorted(key for key, value in model_kwargs.items() if key not in PASSIVE_MODEL_KWARGS and value is not None)
    if extra:
        return f"generate argument(s) {', '.join(extra)}"
    batch, length = input_ids.shape
    if batch != 1:
        return f"batch size {batch} (speculative decoding supports batch size 1)"
    if length == 0:
        return "an empty prompt"
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
