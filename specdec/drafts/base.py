"""The draft-source interface and what flows through it."""

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Candidates:
    """Draft material for the next step, on the host.

    Attributes:
        ranked: per depth ``j = 1..k``, candidate tokens in rank order (empty: no ranking, e.g. the
            accepted row carried no pseudo rows, or the first step).
        logp: the draft's log-probability of each ranked token (same shape as ``ranked``).
        kinds: the source of each ranked token (``"firp"``, ``"mask"``, ``"exit"``; same shape as
            ``ranked``; empty: every token is ``"firp"``); ``tree="auto"`` learns acceptance per kind.
        exit_ranked, exit_logp: the early-exit ranking of the accepted row (:class:`EarlyExitDrafts`),
            as ``ranked``/``logp``, until the source merges it into them.
        tree: an explicit draft tree (the token-aware head's): ``(parent, token, logp, kind)`` per
            node, parents first, ``parent`` an index into ``tree`` or -1 (under the root), ``logp``
            the draft's log-probability of ``token`` given the parent's path. ``tree="auto"`` expands it
            instead of ``ranked``, which then holds each depth's nodes for static trees.
        chain: a guessed continuation of any length (n-gram lookup), depth 1 first; may be empty.
        chain_ngram: the length of the n-gram whose match gave ``chain`` (0 without a chain).
    """

    ranked: list[list[int]] = field(default_factory=list)
    logp: list[list[float]] = field(default_factory=list)
    kinds: list[list[str]] = field(default_factory=list)
    exit_ranked: list[list[int]] = field(default_factory=list)
    exit_logp: list[list[float]] = field(default_factory=list)
    tree: list[tuple[int, int, float, str]] = field(default_factory=list)
    chain: list[int] = field(default_factory=list)
    chain_ngram: int = 0


@dataclass
class DraftContext:
    """Per-``generate`` state shared with the sources.

    Attributes:
        tokens: every token so far (prompt and output, the next root last); the decoder appends to it.
        scratch: per-call state a source keeps between steps (keyed by the source), e.g. an n-gram index.
        run: ``run(network, *inputs)`` runs a source's network (an ``nn.Module`` over a cache of fixed
            size, e.g. :meth:`~specdec.drafts.head.network.TokenHead.forward`) as the call's step
            runs the model: eagerly, or as a compiled program of it (``compile=True``).
    """

    tokens: list[int]
    scratch: dict = field(default_factory=dict)
    run: Callable = field(default=lambda network, *inputs: network(*inputs))


class DraftSource:
    """Interface of a draft source (see the package docstring).

    Attributes:
        k: pseudo rows per real row that carries them, and the depth of their ranking (0: none).
        layer: transfer layer after which pseudo rows are injected (-1: before layer 0), or None.
        capture_layer: an earlier layer whose real-row output :meth:`inject` reads too (-1: the
            embeddings), or None.
        exit_layer: layer after which the real rows' hidden states feed :meth:`exit_states`, or None.
        exit_depth: depths the early-exit ranking covers (0: none).
        chain_depth: the longest chain :meth:`propose` may return (0: none).
        kind: what :meth:`propose` tags its pseudo rows' ranked tokens with.
        reads_states: whether :meth:`observe` wants the final-normed states of the committed rows.
        has_adapters: whether :meth:`adapted` changes the layers for the pseudo rows.
        vocabulary: the :class:`~specdec.drafts.firp.vocabulary.DraftVocabulary` the pseudo rows are ranked over
            on CPU, or None (the whole vocabulary). Real rows always use the whole vocabulary.
    """

    k: int = 0
    layer: int | None = None
    capture_layer: int | None = None
    exit_layer: int | None = None
    exit_depth: int = 0
    chain_depth: int = 0
    kind: str = "firp"
    reads_states: bool = False
    has_adapters: bool = False
    vocabulary = None

    @property
    def depth(self) -> int:
        """Depths the ranked candidates cover (pseudo rows or early exit): what static trees may use."""
        return max(self.k, self.exit_depth)

    def check_model(self, model) -> None:
        """Raise ``ValueError`` if this source cannot serve ``model``."""

    def prepared(self, model, backend: str) -> "DraftSource":
        """A copy (or self) ready to run with ``model``'s device and dtype on ``backend``."""
        return self

    def inject(self, hidden, out) -> None:
        """Write ``[B * k, d]`` pseudo rows into ``out`` from real rows ``hidden [B, d]`` (``[B, 2d]``
        with a :attr:`capture_layer`: the states after :attr:`layer`, then those after it)."""
        raise NotImplementedError

    def adapted(self, layers, num_real: int):
        """A context inside which decoder ``layers`` run this source's pseudo rows (the rows after the
        first ``num_real``) with its adapters, if it has any; real rows run the model unchanged."""
        return contextlib.nullcontext()

    def exit_states(self, hidden):
        """``[exit_depth, d]`` states for the final norm and LM head from the accepted row's ``hidden [1, d]``
        after :attr:`exit_layer` (model dtype)."""
        raise NotImplementedError

    def networks(self) -> list:
        """The source's own ``nn.Module`` s that run between steps (the token-aware head), whose linear
        layers ``compile="auto"`` runs on packed weights like the model's."""
        return []

    def observe(self, context: DraftContext, states, tokens: list[int]) -> None:
        """Rows just committed to the cache (the prompt's, then each step's accepted path), for a source
        that :attr:`reads_states`: ``states [n, d]`` their final-normed hidden states (model dtype),
        ``tokens`` the token that follows each (its own target)."""

    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        """The next step's candidates, given the ranking of the accepted row's pseudo rows."""
        if ranked.ranked and not ranked.kinds:
            ranked.kinds = [[self.kind] * len(row) for row in ranked.ranked]
        return ranked


class WrappingSource(DraftSource):
    """A source around another one (``inner``), whose rows, layers and early exit it runs unchanged;
    subclasses change only :meth:`propose` (and :meth:`prepared`)."""

    def __init__(self, inner: DraftSource):
        self.inner = inner
        self.k, self.layer, self.kind = inner.k, inner.layer, inner.kind
        self.capture_layer, self.exit_layer, self.exit_depth = inner.capture_layer, inner.exit_layer, inner.exit_depth
        self.vocabulary, self.reads_states, self.has_adapters = inner.vocabulary, inner.reads_states, inner.has_adapters

    @property
    def depth(self) -> int:
        return self.inner.depth

    def observe(self, context: DraftContext, states, tokens: list[int]) -> None:
        self.inner.observe(context, states, tokens)

    def networks(self) -> list:
        return self.inner.networks()

    def check_model(self, model) -> None:
        self.inner.check_model(model)

    def inject(self, hidden, out) -> None:
        self.inner.inject(hidden, out)

    def adapted(self, layers, num_real: int):
        return self.inner.adapted(layers, num_real)

    def exit_states(self, hidden):
        return self.inner.exit_states(hidden)


def frozen_copy(module, model):
    """A copy of a source's trainable ``module`` on ``model``'s device and dtype, in eval mode without
    gradients (the caller's module is left as it was, so it can go on training)."""
    param = model.get_input_embeddings().weight
    return copy.deepcopy(module).to(device=param.device, dtype=param.dtype).eval().requires_grad_(False)
