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

The parts, each a module of its own: :mod:`~specdec.decode.expansion` (step 1),
:mod:`~specdec.decode.selection` (step 2), :mod:`~specdec.decode.exploration` (step 3) and
:mod:`~specdec.decode.memory` (what is learned from each verified step); :class:`AutoPlanner`
runs them in that order.
"""

from dataclasses import dataclass

import torch

from ..drafts import Candidates
from .cost import StepCost
from .expansion import FREE, expand
from .exploration import explored, rearm_if_paid
from .memory import EXPLORE_FIRST, DraftingMemory
from .selection import StepShape, select
from .tree import StepLayout, TreeShape

AUTO_TOP_K = 6
__all__ = ["AUTO_TOP_K", "EXPLORE_FIRST", "AutoPlanner", "DraftingMemory", "LayoutCache", "Plan", "StaticPlanner", "merged_ranking"]


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


def merged_ranking(cands: Candidates, width: int, depth: int = 0) -> list[list[int]]:
    """Per depth (at least ``depth`` of them), ``width`` ranked tokens with the chain's token (where it
    reaches) moved to rank 0.

    A source that ranks fewer than ``width`` tokens has its last one repeated, and one that ranks
    fewer depths (the token-aware head stops where its paths become unlikely) its last depth: those
    nodes are wasted rows, never a wrong output (the walk takes the first matching child).
    """
    rows = []
    for level, ranked in enumerate(cands.ranked):
        if level < len(cands.chain):
            guess = cands.chain[level]
            ranked = [guess] + [t for t in ranked if t != guess]
        rows.append((ranked + ranked[-1:] * width)[:width])
    return rows + rows[-1:] * (depth - len(rows))


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
        ranking = merged_ranking(cands, self.top_k, self.max_depth)
        tokens = [ranking[len(path) - 1][path[-1]] for path in self.shape.paths]
        return Plan(self.full, tokens, torch.tensor(tokens, dtype=torch.int64, device=self.device))

    def observe(self, plan: Plan, path: list[int]) -> None:
        """Static trees learn nothing."""

    def observe_seconds(self, plan: Plan, seconds: float, emitted: int) -> None:
        """Static trees learn nothing."""


class AutoPlanner:
    """The cost-aware tree of ``tree="auto"`` (see the module docstring).

    Args:
        pseudo_per_row: ``k`` of the source (0: it injects no pseudo rows).
        pseudo_fraction: fraction of the model's layers a pseudo row runs through.
        max_depth: deepest node (``max(k, the source's chain depth)``).
        memory, cost, layouts: the learned state, the step-cost curve and the layout cache.
    """

    def __init__(self, pseudo_per_row: int, pseudo_fraction: float, max_depth: int, memory: DraftingMemory, cost: StepCost, layouts: LayoutCache):
        self.shape = StepShape(pseudo_per_row, pseudo_fraction)
        self.max_depth = max(1, max_depth)
        self.memory, self.cost, self.layouts = memory, cost, layouts
        self.top_k = AUTO_TOP_K
        self.device = layouts.device
        memory.begin_call()
        self._plain = Plan(layouts.get((), ()), [], torch.empty(0, dtype=torch.int64, device=self.device), [])

    @property
    def k(self) -> int:
        """Pseudo rows per owner row (the source's ``k``)."""
        return self.shape.k

    @property
    def fraction(self) -> float:
        """Fraction of the model's layers a pseudo row runs through."""
        return self.shape.fraction

    @property
    def rate(self) -> float:
        """``rho``: tokens per second achieved so far (a plain step's rate before any step ran)."""
        return self.memory.rate(self.cost)

    def plan(self, cands: Candidates) -> Plan:
        if not self.cost.ready:  # nothing measured on this device yet: a plain step, which measures one
            return self._plain
        memory, shape, cost = self.memory, self.shape, self.cost
        nodes = expand(cands, memory, self.max_depth)
        choice = select(nodes, shape, cost, self.rate, memory.gain)
        if cands.ranked:  # g: what the pseudo rows' ranking adds over the chain and the early exit alone
            without = select(expand(cands, memory, self.max_depth, FREE), shape, cost, self.rate, memory.gain).value
            gain = max(0.0, choice.value - without)
            memory.learn_gain(gain)
            rearm_if_paid(memory, gain, shape, cost, self.rate)
        choice, nodes, owners = explored(choice, nodes, cands, memory, shape, cost, self.max_depth)
        chosen = nodes[: choice.nodes]
        tokens = [node[2] for node in chosen]
        layout = self.layouts.get(tuple(node[1] for node in chosen), tuple(sorted(owners)))
        return Plan(
            layout,
            tokens,
            torch.tensor(tokens, dtype=torch.int64, device=self.device),
            [node[3] for node in chosen],
            shape.segments(choice.nodes + 1, len(owners)),
        )

    def observe(self, plan: Plan, path: list[int]) -> None:
        """Acceptance of every node whose parent the walk reached (``path``: rows walked, root first)."""
        self.memory.learn_verification(plan.layout.parents, plan.keys, path)

    def observe_seconds(self, plan: Plan, seconds: float, emitted: int) -> None:
        """A finished step: its wall time refines the cost curve and, with its tokens, the rate."""
        self.cost.observe(plan.segments, seconds)
        self.memory.learn_rate(seconds, emitted)
