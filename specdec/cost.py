"""What a decoding step costs on this device, as a function of the rows it processes.

Rows are counted in *full-model row equivalents*: a real row runs through every layer, a pseudo
row only through the layers after the transfer layer, so it counts as the fraction of layers it
runs through. The curve is measured, not assumed: :meth:`StepCost.calibrate` times real steps
(a chain of ``n`` real rows on the live cache) at the sizes of :data:`GRID`, and
:meth:`StepCost.observe` refines it from every step the decoder runs. Between grid points the
curve is linear; past the last measured point it continues with the last slope. The curve
need not be monotone: on CPUs the matrix kernels change with the row count (SmolLM2-135M on
2 cores, ``bench/results/e2e-steps-smollm2-135m-cpu.csv``: 58.3 ms for 8 rows, 54.1 ms for 12),
and the planner may use that.
"""

from collections.abc import Callable

GRID = (1, 2, 4, 6, 8, 12, 16, 24, 32, 64)
REPEATS = 2  # the fastest of these: interference from other work only ever slows a step down
STOP_RATIO = 6.0  # stop calibrating once a step costs this many single-row steps: no tree that big pays
LEARNING_RATE = 0.05


class StepCost:
    """Seconds per step against row equivalents (see the module docstring)."""

    def __init__(self):
        self.rows: list[float] = []
        self.seconds: list[float] = []

    @property
    def calibrated(self) -> bool:
        return len(self.rows) >= 2

    def calibrate(self, measure: Callable[[int], float]) -> None:
        """Time steps of ``n`` real rows with ``measure(n)`` (seconds, one run) along :data:`GRID`."""
        measure(GRID[0])  # warm-up
        rows, seconds = [], []
        for n in GRID:
            rows.append(float(n))
            seconds.append(min(measure(n) for _ in range(REPEATS)))
            if seconds[-1] > STOP_RATIO * seconds[0] and len(rows) >= 2:
                break
        self.rows, self.seconds = rows, seconds

    def __call__(self, rows: float) -> float:
        """Estimated seconds of a step with ``rows`` row equivalents."""
        i, w = self._segment(rows)
        return self.seconds[i] + w * (self.seconds[i + 1] - self.seconds[i])

    def observe(self, rows: float, seconds: float) -> None:
        """Move the curve towards one measured step (the two grid points around ``rows``).

        The error is clipped to half the estimate: one stalled step must not move the curve far.
        """
        i, w = self._segment(rows)
        estimate = self(rows)
        error = min(max(seconds - estimate, -0.5 * estimate), 0.5 * estimate)
        w = min(max(w, 0.0), 1.0)
        self.seconds[i] += LEARNING_RATE * (1 - w) * error
        self.seconds[i + 1] += LEARNING_RATE * w * error

    def _segment(self, rows: float) -> tuple[int, float]:
        """``(i, w)``: ``rows`` lies at fraction ``w`` from grid point ``i`` to ``i + 1`` (``w > 1`` past the end)."""
        if not self.calibrated:
            raise RuntimeError("StepCost used before calibrate()")
        points = self.rows
        i = 0
        while i < len(points) - 2 and rows > points[i + 1]:
            i += 1
        return i, (rows - points[i]) / (points[i + 1] - points[i])
