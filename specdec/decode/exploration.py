"""When ``tree="auto"`` tries what its estimates would not (see :mod:`specdec.decode.planner`).

When nothing new was tried for a while (no pseudo rows; for a source without pseudo rows, no
drafts), a step verifies what the estimates favour at full realism (at most :data:`EXPLORE_NODES`
nodes), with pseudo rows on the likeliest end row, so a predictor that becomes useful again, or
drafts the realism had written off, are noticed. The wait doubles each time (8, 16, ... 256
steps), so exploring costs at most one step in eight, and under 2% after a thousand idle steps;
it starts again at 8 when the ranking pays for the root's pseudo rows.
"""

from ..drafts import Candidates
from .cost import StepCost
from .expansion import expand, likeliest_end
from .memory import EXPLORE_FIRST, DraftingMemory
from .selection import Choice, StepShape, select

EXPLORE_MAX = 256
EXPLORE_NODES = 8  # an exploration step verifies at most this many of the best nodes


def rearm_if_paid(memory: DraftingMemory, gain: float, shape: StepShape, cost: StepCost, rate: float) -> None:
    """Explore again soon when the ranking's measured ``gain`` paid for the root's pseudo rows."""
    if gain > rate * (cost.step(shape.segments(1, 1)) - cost(1)):
        memory.explore_every = EXPLORE_FIRST


def explored(
    choice: Choice, nodes: list, cands: Candidates, memory: DraftingMemory, shape: StepShape, cost: StepCost, max_depth: int
) -> tuple[Choice, list, tuple[int, ...]]:
    """``(choice, nodes, owners)`` of this step: the planner's own, or an exploration when it is due.

    Counts the idle steps (steps that tried nothing that would otherwise go unnoticed) and, once
    they reach ``memory.explore_every``, replaces the choice by the best of the first
    :data:`EXPLORE_NODES` nodes at full realism, with pseudo rows on the likeliest end row.
    """
    tried = choice.owners if shape.k else choice.nodes  # what would go unnoticed if never tried
    memory.idle_steps = 0 if tried else memory.idle_steps + 1
    if memory.idle_steps < memory.explore_every:
        return choice, nodes, choice.owners
    nodes = expand(cands, memory, max_depth, realistic=False)
    choice = select(nodes[:EXPLORE_NODES], shape, cost, memory.rate(cost), memory.gain)
    owners = (likeliest_end(nodes[: choice.nodes]),) if shape.k else ()
    memory.idle_steps = 0
    memory.explore_every = min(2 * memory.explore_every, EXPLORE_MAX)
    return choice, nodes, owners
