"""A device whose steps take what a given curve says: planner tests that must not depend on the
timings of the machine running them."""

from collections.abc import Callable

from specdec import patching
from specdec.decode.cost import StepCost
from specdec.decode.planner import AutoPlanner


def simulate_steps(monkeypatch, seconds: Callable[[int], float]) -> None:
    """Every step :class:`AutoPlanner` observes took ``sum(fraction * seconds(rows))`` over its
    segments, whatever the machine did: its choices then depend on the drafts alone."""
    observe_seconds = AutoPlanner.observe_seconds

    def simulated(planner, plan, _measured, emitted):
        observe_seconds(planner, plan, sum(fraction * seconds(rows) for fraction, rows in plan.segments), emitted)

    monkeypatch.setattr(AutoPlanner, "observe_seconds", simulated)


def pin_cost(model, monkeypatch, seconds: Callable[[int], float], measured: bool = True, regime: str = "greedy") -> None:
    """Give ``model``'s planner of ``regime`` (``"greedy"`` or ``"sample"``) the step-cost curve
    ``seconds(rows)`` and a device that runs to it. ``measured=False`` leaves the single-row step
    unmeasured (the first step is plain)."""
    param = model.get_input_embeddings().weight
    cost = StepCost.measured(seconds) if measured else StepCost.shaped(seconds)
    costs = patching._TUNING.setdefault(model, patching.Tuning()).costs
    for step in ("packed", "eager", "compiled"):  # whichever the step runs (see specdec.decode.packing, .graphs)
        costs[(param.device, param.dtype, regime, step)] = cost
    simulate_steps(monkeypatch, seconds)
