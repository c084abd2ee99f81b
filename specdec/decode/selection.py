"""How much of the candidate tree a step verifies, and which rows carry pseudo rows: the choice
that maximises ``E + g * P(end on an owner) - rho * T`` under the step-cost model (see
:mod:`specdec.decode.planner`)."""

import heapq
from dataclasses import dataclass

from .cost import StepCost
from .expansion import Node

MAX_OWNERS = 2
CHECKPOINTS = frozenset(range(0, 9)) | {10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64}


@dataclass
class Choice:
    """A step's choice: its value (expected tokens less the time it costs at the achieved rate), the
    number of best-first nodes it verifies and the rows that carry pseudo rows."""

    value: float
    nodes: int
    owners: tuple[int, ...]


@dataclass(frozen=True)
class StepShape:
    """What pricing a step needs of the source: ``k`` pseudo rows per owner, which run through
    ``fraction`` of the model's layers."""

    k: int
    fraction: float

    def segments(self, real: int, owners: int) -> tuple:
        """``(fraction of layers, rows)`` of a step with ``real`` rows, ``owners`` of which carry pseudo rows."""
        if not owners:
            return ((1.0, real),)
        return ((1.0 - self.fraction, real), (self.fraction, real + owners * self.k))


def select(nodes: list[Node], shape: StepShape, cost: StepCost, rate: float, gain: float) -> Choice:
    """The best prefix of ``nodes`` and pseudo-row owners by ``E + g * P(end on an owner) - rho * T``.

    ``E`` = 1 + the sum of the verified nodes' path probabilities; ``g`` = ``gain``, what FIRP's
    ranking adds to a step, times the probability that the walk ends on a row with pseudo rows;
    ``T`` = the step's cost; ``rho`` = ``rate``. Prefixes are tried at :data:`CHECKPOINTS` sizes and
    at the whole list; owners are the (at most :data:`MAX_OWNERS`) likeliest end rows.
    """
    with_pseudo = shape.k > 0 and gain > 0
    end = [1.0]  # probability that the walk ends on each real row
    expected = 1.0
    best = Choice(expected - rate * cost(1), 0, ())
    for n in range(len(nodes) + 1):
        if n:
            prob, parent = nodes[n - 1][0], nodes[n - 1][1]
            expected += prob
            end[parent] -= prob
            end.append(prob)
        if n not in CHECKPOINTS and n != len(nodes):
            continue
        value = expected - rate * cost.step(shape.segments(n + 1, 0))
        if value > best.value:
            best = Choice(value, n, ())
        if with_pseudo:
            ends = 0.0
            top = heapq.nlargest(MAX_OWNERS, range(n + 1), key=end.__getitem__)
            for count, row in enumerate(top, start=1):
                ends += end[row]
                value = expected + gain * ends - rate * cost.step(shape.segments(n + 1, count))
                if value > best.value:
                    best = Choice(value, n, tuple(top[:count]))
    return best
