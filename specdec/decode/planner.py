"""Which draft tree each step verifies: a static shape, or the cost-aware choice of ``tree="auto"``.

A planner turns the :class:`~specdec.drafts.Candidates` of the next step into a :class:`Plan`: the
draft nodes (tokens, parents) and the real rows that carry pseudo rows.

:class:`AutoPlanner` maximises expected tokens per second. Every step it

1. expands the candidates best-first into a tree (EAGLE-2 style): a node's path probability is its
   parent's times its conditional acceptance from :class:`~specdec.decode.acceptance.AcceptanceModel`.
   The ranked tokens at depth ``j`` (FIRP's, mask slots', early exit's) hang under every depth
   ``j - 1`` node, the lookup chain continues under its own nodes (deeper than ``k`` if it
   reaches), and a chain token that is also ranked is one node;
2. picks how many of those nodes to verify (a prefix of the best-first order, so always a tree) and
   which rows get pseudo rows, maximising ``E - rho * T``: ``E`` = 1 + the sum of the nodes' path
   probabilities (expected tokens), plus ``g`` times the probability that the step ends on a row
   with pseudo rows (``g``: what FIRP's ranking adds to a step, in tokens, measured online);
   ``T`` = the :class:`~specdec.decode.cost.StepCost` of the step's rows, learned from the steps run so
   far (plain steps until a single-row step has been measured; rows not yet seen priced
   pessimistically); ``rho`` = the tokens per second decoding currently achieves. Maximising
   ``E - rho * T`` at the achieved rate is how average-reward problems are solved; an empty tree
   without pseudo rows is one of the choices, so where drafts do not pay a step is a plain step.
   Every node's conditional acceptance is scaled by its kind's *realism* (lookup chain, FIRP's
   ranking, both, early exit, mask slots): accepted over expected on recent steps, at most 1.
   Estimates that promise more than verification gives lose their say within a few steps,
   whatever the reason (optimistic priors, a change of text, the planner picking the estimates
   whose noise is highest), and one kind's failures do not silence another's. The realism's
   evidence fades by :data:`REALISM_DECAY` a step, so drafts written off are tried again once it
   is stale (every few dozen steps where they keep failing);
3. every so often, when nothing new was tried for a while (no pseudo rows; for a source without
   pseudo rows, no drafts), verifies what the estimates favour at full realism (at most
   :data:`EXPLORE_NODES` nodes), with pseudo rows
   on the likeliest end row, so a predictor that becomes useful again, or drafts the realism had
   written off, are noticed. The wait doubles each time (8, 16, ... 256 steps), so exploring costs
   at most one step in eight, and under 2% after a thousand idle steps.

Statistics (acceptance, ``rho``, ``g``) live in a :class:`DraftingMemory` kept across ``generate``
calls for the same model and draft source.
"""

import heapq
import math
from dataclasses import dataclass, field

import torch

from .acceptance import AcceptanceModel
from .cost import StepCost
from ..drafts import Candidates
from .tree import StepLayout, TreeShape

AUTO_MAX_NODES = 48
AUTO_TOP_K = 6
MAX_OWNERS = 2
MIN_PATH_PROB = 0.005
CHECKPOINTS = frozenset(range(0, 9)) | {10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64}
RATE_DECAY = 0.95
GAIN_DECAY = 0.9
GAIN_PRIOR = 0.0  # pseudo rows are not assumed to pay: the first exploration measures what they add
GAIN_PRIOR_WEIGHT = 1.0
REALISM_DECAY = 0.98  # per step: the realism's evidence covers the last few dozen steps
CALL_FADE = 0.5  # weight of earlier calls' acceptance evidence when a new call starts
REALISM_PRIOR = 1.0  # pseudo-nodes, expected and accepted, that hold a realism at 1 at first
EXPLORE_FIRST, EXPLORE_MAX = 8, 256
EXPLORE_NODES = 8  # an exploration step verifies at most this many of the best nodes
FREE = frozenset({"exit"})  # ranked kinds that need no pseudo rows


@dataclass
class Plan:
    """One step's tree.

    Attributes:
        layout: the rows (see :class:`~specdec.decode.tree.StepLayout`).
        tokens: host, draft token of every node.
        nodes: int64 ``[M]`` the same tokens on the device.
        keys: acceptance key of every node (``tree="auto"``), or None.
        segments: the step's ``(fraction of layers, rows)`` pairs (see :mod:`specdec.decode.cost`).
    """

    layout: StepLayout
    tokens: list[int]
    nodes: torch.Tensor
    keys: list[tuple] | None = None
    segments: tuple = ((1.0, 1),)


class LayoutCache:
    """Step layouts by tree structure, built once each (trees repeat across steps)."""

    MAX_ENTRIES = 1024

    def __init__(self, pseudo_per_row: int, device: torch.device):
        self.pseudo_per_row, self.device = pseudo_per_row, device
        self.layouts: dict[tuple, StepLayout] = {}

    def get(self, parents: tuple[int, ...], owners: tuple[int, ...]) -> StepLayout:
        key = (parents, owners)
        layout = self.layouts.get(key)
        if layout is None:
            if len(self.layouts) >= self.MAX_ENTRIES:
                self.layouts.clear()
            layout = self.layouts[key] = StepLayout.of(parents, owners, self.pseudo_per_row, self.device)
        return layout


def merged_ranking(cands: Candidates, width: int) -> list[list[int]]:
    """Per depth, ``width`` ranked tokens with the chain's token (where it reaches) moved to rank 0.

    A source that ranks fewer than ``width`` tokens has its last one repeated: those nodes are
    wasted rows, never a wrong output (the walk takes the first matching child).
    """
    rows = []
    for depth, ranked in enumerate(cands.ranked):
        if depth < len(cands.chain):
            guess = cands.chain[depth]
            ranked = [guess] + [t for t in ranked if t != guess]
        rows.append((ranked + ranked[-1:] * width)[:width])
    return rows


class StaticPlanner:
    """A fixed tree shape over the ranked candidates; every real row carries pseudo rows.

    Static trees reach depth ``<= k``; a lookup chain is merged as the rank-0 candidate of the
    depths it reaches (:func:`merged_ranking`). Without a ranking (the first step) the tree is empty.
    """

    def __init__(self, shape: TreeShape, pseudo_per_row: int, device: torch.device):
        self.shape = shape
        self.top_k = shape.num_candidates
        self.max_depth = shape.depth
        self.full = StepLayout.build(shape, pseudo_per_row, device)
        self.empty = Plan(StepLayout.build(TreeShape(()), pseudo_per_row, device), [], torch.empty(0, dtype=torch.int64, device=device))
        self.device = device

    def plan(self, cands: Candidates) -> Plan:
        if not cands.ranked:
            return self.empty
        ranking = merged_ranking(cands, self.top_k)
        tokens = [ranking[len(path) - 1][path[-1]] for path in self.shape.paths]
        return Plan(self.full, tokens, torch.tensor(tokens, dtype=torch.int64, device=self.device))

    def observe(self, plan: Plan, path: list[int]) -> None:
        """Static trees learn nothing."""

    def observe_seconds(self, plan: Plan, seconds: float, emitted: int) -> None:
        """Static trees learn nothing."""


@dataclass
class DraftingMemory:
    """What :class:`AutoPlanner` learns, kept across ``generate`` calls (per model and source).

    Attributes:
        acceptance: conditional acceptance estimates.
        rate_tokens, rate_seconds: decaying sums of emitted tokens and step seconds (``rho`` is their ratio).
        gain: ``g``, the tokens FIRP's ranking adds to a step: a decaying mean of the measured gains,
            starting at :data:`GAIN_PRIOR` with the weight of :data:`GAIN_PRIOR_WEIGHT` measurements
            (``gain_weight``), so a first useful ranking counts at once.
        idle_steps: steps since a step last carried pseudo rows; explore_every: steps to wait before exploring.
        checked: per node kind, decaying sums ``[accepted, expected]`` over the nodes whose parent
            the walk reached: how many were accepted, and how many the acceptance estimates expected
            (see :meth:`realism`).
    """

    acceptance: AcceptanceModel = field(default_factory=AcceptanceModel)
    rate_tokens: float = 0.0
    rate_seconds: float = 0.0
    gain: float = GAIN_PRIOR
    gain_weight: float = GAIN_PRIOR_WEIGHT
    idle_steps: int = 0
    explore_every: int = EXPLORE_FIRST
    checked: dict = field(default_factory=dict)

    def begin_call(self) -> None:
        """A ``generate`` call starts, usually on another text: what earlier calls saw keeps
        :data:`CALL_FADE` of its weight, so this text's own evidence soon dominates."""
        self.acceptance.fade(CALL_FADE)
        for sums in self.checked.values():
            sums[0] *= CALL_FADE
            sums[1] *= CALL_FADE

    def realism(self, kind: str) -> float:
        """Accepted over expected nodes of ``kind`` on recent steps, at most 1: the factor by which
        the planner scales their conditional acceptance. Per-key estimates start from priors and
        are read where they look best (the planner picks the nodes whose estimates are highest,
        noise included), so they can promise more than verification gives; this corrects for it
        within a few steps."""
        accepted, expected = self.checked.get(kind, (0.0, 0.0))
        return min(1.0, (accepted + REALISM_PRIOR) / (expected + REALISM_PRIOR))


@dataclass
class _Choice:
    value: float
    nodes: int
    owners: tuple[int, ...]


class AutoPlanner:
    """The cost-aware tree of ``tree="auto"`` (see the module docstring).

    Args:
        pseudo_per_row: ``k`` of the source (0: it injects no pseudo rows).
        pseudo_fraction: fraction of the model's layers a pseudo row runs through.
        max_depth: deepest node (``max(k, the source's chain depth)``).
        memory, cost, layouts: the learned state, the step-cost curve and the layout cache.
    """

    def __init__(self, pseudo_per_row: int, pseudo_fraction: float, max_depth: int, memory: DraftingMemory, cost: StepCost, layouts: LayoutCache):
        self.k, self.fraction, self.max_depth = pseudo_per_row, pseudo_fraction, max(1, max_depth)
        self.memory, self.cost, self.layouts = memory, cost, layouts
        self.top_k = AUTO_TOP_K
        self.device = layouts.device
        memory.begin_call()
        self._plain = Plan(layouts.get((), ()), [], torch.empty(0, dtype=torch.int64, device=self.device), [])

    @property
    def rate(self) -> float:
        """``rho``: tokens per second achieved so far (a plain step's rate before any step ran)."""
        memory = self.memory
        return memory.rate_tokens / memory.rate_seconds if memory.rate_seconds > 0 else 1.0 / self.cost(1)

    def plan(self, cands: Candidates) -> Plan:
        if not self.cost.ready:  # nothing measured on this device yet: a plain step, which measures one
            return self._plain
        nodes = self._expand(cands)
        choice = self._select(nodes)
        memory = self.memory
        if cands.ranked:  # g: what the pseudo rows' ranking adds over the chain and the early exit alone
            without = self._select(self._expand(cands, FREE)).value
            gain = max(0.0, choice.value - without)
            memory.gain_weight = GAIN_DECAY * memory.gain_weight + 1
            memory.gain += (gain - memory.gain) / memory.gain_weight
            if gain > self.rate * (self.cost.step(self._segments(1, 1)) - self.cost(1)):
                memory.explore_every = EXPLORE_FIRST  # the ranking paid for the root's pseudo rows: look again soon
        explored = choice.owners if self.k else choice.nodes  # what would go unnoticed if never tried
        memory.idle_steps = 0 if explored else memory.idle_steps + 1
        owners = choice.owners
        if memory.idle_steps >= memory.explore_every:
            # Try what the estimates themselves favour, with pseudo rows where the walk likely ends:
            # a predictor that became useful, or drafts the realism had written off, get noticed.
            nodes = self._expand(cands, realistic=False)
            choice = self._select(nodes[:EXPLORE_NODES])
            owners = (self._likeliest_end(nodes[: choice.nodes]),) if self.k else ()
            memory.idle_steps = 0
            memory.explore_every = min(2 * memory.explore_every, EXPLORE_MAX)
        chosen = nodes[: choice.nodes]
        tokens = [node[2] for node in chosen]
        layout = self.layouts.get(tuple(node[1] for node in chosen), tuple(sorted(owners)))
        return Plan(
            layout,
            tokens,
            torch.tensor(tokens, dtype=torch.int64, device=self.device),
            [node[3] for node in chosen],
            self._segments(choice.nodes + 1, len(owners)),
        )

    def observe(self, plan: Plan, path: list[int]) -> None:
        """Acceptance of every node whose parent the walk reached (``path``: rows walked, root first)."""
        reached = set(path)
        memory = self.memory
        acceptance = memory.acceptance
        for sums in memory.checked.values():
            sums[0] *= REALISM_DECAY
            sums[1] *= REALISM_DECAY
        for row, (parent, key) in enumerate(zip(plan.layout.parents, plan.keys), start=1):
            if parent in reached:
                sums = memory.checked.setdefault(key[0], [0.0, 0.0])
                sums[0] += row in reached
                sums[1] += acceptance.prob(key)  # what the estimate expected, before it learns from this
                acceptance.observe(key, row in reached)
        acceptance.hot = len(path) > 1

    def observe_seconds(self, plan: Plan, seconds: float, emitted: int) -> None:
        """A finished step: its wall time refines the cost curve and, with its tokens, the rate."""
        self.cost.observe(plan.segments, seconds)
        memory = self.memory
        memory.rate_tokens = RATE_DECAY * memory.rate_tokens + emitted
        memory.rate_seconds = RATE_DECAY * memory.rate_seconds + seconds

    def _segments(self, real: int, owners: int) -> tuple:
        """``(fraction of layers, rows)`` of a step with ``real`` rows, ``owners`` of which carry pseudo rows."""
        if not owners:
            return ((1.0, real),)
        return ((1.0 - self.fraction, real), (self.fraction, real + owners * self.k))

    def _expand(self, cands: Candidates, use: frozenset | None = None, realistic: bool = True) -> list[tuple]:
        """Candidate nodes best-first: ``(path probability, parent row, token, key)``, parents first.

        Ranked tokens count only if their kind is in ``use`` (None: all; :data:`FREE`: the early
        exit's, which a step has whatever rows it carries). Conditional acceptances are scaled by
        their kind's realism unless ``realistic`` is False (exploration).
        """
        memory = self.memory
        acceptance = memory.acceptance

        def prob(key: tuple) -> float:
            return acceptance.prob(key) * (memory.realism(key[0]) if realistic else 1.0)

        by_depth = []  # per depth: token -> (conditional probability, key, draft probability)
        for depth, (tokens, logps) in enumerate(zip(cands.ranked, cands.logp), start=1):
            kinds = cands.kinds[depth - 1] if cands.kinds else ["firp"] * len(tokens)
            row = {}
            for token, logp, kind in zip(tokens, logps, kinds):
                if token not in row and (use is None or kind in use):
                    draft = math.exp(logp)
                    key = acceptance.ranked_key(kind, depth, draft)
                    row[token] = (prob(key), key, draft)
            by_depth.append(row)
        chain, ngram = cands.chain[: self.max_depth], cands.chain_ngram
        children: dict[tuple[int, bool], list[tuple]] = {}

        def kids(depth: int, on_chain: bool) -> list[tuple]:
            """``(conditional probability, token, key, on chain)`` of the children of a node at ``depth``."""
            cached = children.get((depth, on_chain))
            if cached is not None:
                return cached
            found = {}
            if depth < len(by_depth):
                found = {token: (p, token, key, False) for token, (p, key, _) in by_depth[depth].items()}
            if on_chain and depth < len(chain):
                token = chain[depth]
                if token in found:
                    key = acceptance.ranked_key("both", depth + 1, by_depth[depth][token][2])
                else:
                    key = acceptance.chain_key(depth + 1, ngram)
                found[token] = (prob(key), token, key, True)
            result = list(found.values())
            total = sum(child[0] for child in result)
            if total > 1:  # siblings carry different tokens: at most one of them is accepted
                result = [(p / total, *rest) for p, *rest in result]
            children[(depth, on_chain)] = result
            return result

        heap, order = [], 0
        for p, token, key, on_chain in kids(0, True):
            heap.append((-p, order, 0, 1, token, key, on_chain))
            order += 1
        heapq.heapify(heap)
        nodes = []
        while heap and len(nodes) < AUTO_MAX_NODES:
            neg_prob, _, parent, depth, token, key, on_chain = heapq.heappop(heap)
            if -neg_prob < MIN_PATH_PROB:
                break
            nodes.append((-neg_prob, parent, token, key))
            if depth < self.max_depth:
                row = len(nodes)
                for p, child, child_key, child_on_chain in kids(depth, on_chain):
                    heapq.heappush(heap, (neg_prob * p, order, row, depth + 1, child, child_key, child_on_chain))
                    order += 1
        return nodes

    def _select(self, nodes: list[tuple]) -> _Choice:
        """The best prefix of ``nodes`` and pseudo-row owners by ``E + g * P(end on an owner) - rho * T``."""
        rate, gain, cost = self.rate, self.memory.gain, self.cost
        with_pseudo = self.k > 0 and gain > 0
        end = [1.0]  # probability that the walk ends on each real row
        expected = 1.0
        best = _Choice(expected - rate * cost(1), 0, ())
        for n in range(len(nodes) + 1):
            if n:
                prob, parent = nodes[n - 1][0], nodes[n - 1][1]
                expected += prob
                end[parent] -= prob
                end.append(prob)
            if n not in CHECKPOINTS and n != len(nodes):
                continue
            value = expected - rate * cost.step(self._segments(n + 1, 0))
            if value > best.value:
                best = _Choice(value, n, ())
            if with_pseudo:
                ends = 0.0
                top = heapq.nlargest(MAX_OWNERS, range(n + 1), key=end.__getitem__)
                for count, row in enumerate(top, start=1):
                    ends += end[row]
                    value = expected + gain * ends - rate * cost.step(self._segments(n + 1, count))
                    if value > best.value:
                        best = _Choice(value, n, tuple(top[:count]))
        return best

    def _likeliest_end(self, nodes: list[tuple]) -> int:
        end = [1.0] + [node[0] for node in nodes]
        for prob, parent, _, _ in nodes:
            end[parent] -= prob
        return max(range(len(end)), key=end.__getitem__)
