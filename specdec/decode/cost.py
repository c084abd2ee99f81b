"""What a decoding step costs on this device, learned from the steps decoding runs anyway.

The curve ``T(r)`` is the time of a step whose every layer runs ``r`` rows. A step with pseudo
rows runs its real rows ``R`` through the layers up to the transfer layer and ``R`` plus the
pseudo rows after it, so it is priced by its *segments* ``((f_1, r_1), (f_2, r_2))``: fractions of
the model's layers and the rows they run, ``f_1 T(r_1) + f_2 T(r_2)``. (Counting a pseudo row as a
fraction of a row would not do: on CPUs a layer with two rows costs far more than one with one
row, so one real row and three pseudo rows cost much less than two real rows.)

Nothing is timed in front of decoding: every step the decoder runs is one observation
(:meth:`StepCost.observe`), kept at the points of :data:`GRID`: the single-row step ``T1`` in
seconds, every other point as its ratio to ``T1``. Ratios are what the hardware fixes; seconds
drift with the prefix length and with other work on the machine, and a curve of seconds learned
while the machine was busy would keep pricing rows as if it still were. Before the first plain step
nothing is known (:attr:`StepCost.ready` is False, and the planner plans plain steps). After it, a
row count that has not been observed is priced from the nearest observed ones, and where there is
none by a deliberately pessimistic prior: the single-row step ``T1`` times ``1 + PRIOR_JUMP``, plus
``PRIOR_SLOPE * T1`` per extra row. The jump is real on CPUs, where two rows leave the
matrix-vector path for a matrix-matrix one (SmolLM2-135M, 2 threads, AMD EPYC: 53 ms for one row,
80 ms for two to eight); on GPUs it is near zero, which the first drafted steps show. So the
planner drafts, at first, only where drafts are likely enough to pay even at that price, and each
such step teaches the curve what rows cost here. The curve need not be monotone (SmolLM2 on 2
cores, ``bench/results/e2e-steps-smollm2-135m-cpu.csv``: 58.3 ms for 8 rows, 54.1 ms for 12), and
the planner may use that.
"""

import bisect
from collections.abc import Callable, Sequence

GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
PRIOR_JUMP = 0.5  # more than one row, until measured: 1.5 single-row steps ...
PRIOR_SLOPE = 0.05  # ... plus this many single-row steps per extra row
MAX_WEIGHT = 20.0  # observations a point averages over at most (it follows slow changes, e.g. a growing prefix)
PRIOR_WEIGHT = 0.5  # weight of a point's derived estimate against its own observations
CLIP = 2.0  # an observation counts at most this factor above the estimate; this factor below restarts a point

Segments = Sequence[tuple[float, int]]  # (fraction of the layers, rows they run)


class StepCost:
    """Seconds per step against rows (see the module docstring)."""

    def __init__(self):
        self.means = [0.0] * len(GRID)  # T1 in seconds, then per grid point the mean observed ratio to T1
        self.weights = [0.0] * len(GRID)  # and their (capped) weight
        self._points: tuple[tuple, tuple[float, ...]] | None = None  # (means and weights, points() of them)

    @classmethod
    def measured(cls, seconds: Callable[[int], float]) -> "StepCost":
        """A curve taken as fully measured, ``seconds(rows)`` at every grid point (pins a planner's choices)."""
        cost = cls()
        single = float(seconds(1))
        cost.means = [single] + [float(seconds(rows)) / single for rows in GRID[1:]]
        cost.weights = [MAX_WEIGHT] * len(GRID)
        return cost

    @classmethod
    def shaped(cls, ratio: Callable[[int], float]) -> "StepCost":
        """A curve whose shape, ``ratio(rows)`` single-row steps, is taken as fully measured, and
        whose single-row step is not (the first plain step measures it)."""
        cost = cls.measured(ratio)
        cost.weights[0] = 0.0
        return cost

    @property
    def ready(self) -> bool:
        """Whether a plain (single-row) step has been observed: the planner's first anchor."""
        return self.weights[0] > 0

    def __call__(self, rows: int) -> float:
        """``T(rows)``: estimated seconds of a step whose every layer runs ``rows`` rows."""
        return self._at(self.points(), rows)

    def step(self, segments: Segments) -> float:
        """Estimated seconds of a step of ``segments`` (``(fraction of layers, rows)`` pairs)."""
        points = self.points()
        return sum(fraction * self._at(points, rows) for fraction, rows in segments)

    def points(self) -> tuple[float, ...]:
        """The estimate at every grid point: its observations blended with what its neighbours imply
        (computed again only when an observation has changed them: the planner asks many times a step)."""
        if not self.ready:
            raise RuntimeError("StepCost used before a single-row step was observed")
        state = (*self.means, *self.weights)
        if self._points is not None and self._points[0] == state:
            return self._points[1]
        single = self.means[0]
        seen = [i for i in range(1, len(GRID)) if self.weights[i] > 0]
        estimates = [single]
        for i in range(1, len(GRID)):
            w = self.weights[i]
            estimates.append(single * (w * self.means[i] + PRIOR_WEIGHT * self._derived(i, seen)) / (w + PRIOR_WEIGHT))
        self._points = (state, tuple(estimates))
        return self._points[1]

    def observe(self, segments: Segments, seconds: float) -> None:
        """One measured step: the grid points it depends on move towards it.

        A step far slower than expected (a stall, a first-use compile) counts as :data:`CLIP` times
        the estimate; one far faster restarts the points it lands on, since interference only ever
        slows a step down and an earlier observation may have been such an outlier.
        """
        if not self.ready:
            if all(rows == 1 for _, rows in segments):
                self.means[0], self.weights[0] = seconds, 1.0
            return
        points = self.points()
        estimate = sum(fraction * self._at(points, rows) for fraction, rows in segments)
        seconds = min(seconds, CLIP * estimate)
        shares = [(i, fraction * w) for fraction, rows in segments for i, w in self._neighbours(rows)]
        # The error goes to the points the step depends on, each in proportion to its uncertainty:
        # a well-measured single-row point takes little of what an unseen row count got wrong.
        uncertainty = [1 / (self.weights[i] + PRIOR_WEIGHT) for i in range(len(GRID))]
        spread = sum(share * uncertainty[i] for i, share in shares)
        for i, share in shares:
            target = points[i] + (seconds - estimate) * uncertainty[i] / spread
            if i == 0:
                self._add(0, max(target, seconds / (2 * CLIP)), share)  # a floor against absurd targets
            else:  # no row count costs less than half a single-row step
                self._add(i, max(target / points[0], 1 / CLIP), share)

    @staticmethod
    def _neighbours(rows: int) -> list[tuple[int, float]]:
        """The grid points ``T(rows)`` interpolates between, with their weights."""
        if rows <= GRID[0]:
            return [(0, 1.0)]
        i = min(bisect.bisect_left(GRID, rows), len(GRID) - 1) - 1
        w = min((rows - GRID[i]) / (GRID[i + 1] - GRID[i]), 1.0)
        return [(i, 1 - w), (i + 1, w)]

    @classmethod
    def _at(cls, points: Sequence[float], rows: int) -> float:
        if rows > GRID[-1]:  # past the last point, with the last segment's slope
            slope = (points[-1] - points[-2]) / (GRID[-1] - GRID[-2])
            return points[-1] + slope * (rows - GRID[-1])
        return sum(w * points[i] for i, w in cls._neighbours(rows))

    def _derived(self, i: int, seen: list[int]) -> float:
        """Point ``i``'s ratio from its nearest observed neighbours (linear between them), else from the prior."""
        slope = PRIOR_SLOPE
        below = [j for j in seen if j < i]
        above = [j for j in seen if j > i]
        if below and above:
            lo, hi = below[-1], above[0]
            w = (GRID[i] - GRID[lo]) / (GRID[hi] - GRID[lo])
            return self.means[lo] + w * (self.means[hi] - self.means[lo])
        if below:
            return self.means[below[-1]] + slope * (GRID[i] - GRID[below[-1]])
        prior = 1 + PRIOR_JUMP + slope * (GRID[i] - 1)
        if above:  # never cheaper than a single-row step, never dearer than the prior
            return min(prior, max(1.0, self.means[above[0]] - slope * (GRID[above[0]] - GRID[i])))
        return prior

    def _add(self, i: int, value: float, weight: float) -> None:
        if weight <= 0:
            return
        if self.weights[i] == 0 or (value < self.means[i] / CLIP and weight >= 0.5):
            self.means[i], self.weights[i] = value, weight
            return
        self.weights[i] = min(self.weights[i] + weight, MAX_WEIGHT)
        self.means[i] += weight / self.weights[i] * (value - self.means[i])
