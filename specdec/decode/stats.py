"""Per-``generate`` statistics of speculative decoding."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeStats:
    """What the last patched ``generate`` call did.

    Attributes:
        steps: forward passes that emitted tokens (prefill excluded).
        new_tokens: tokens emitted, after cutting at the stop.
        k: pseudo rows per carrying row (the FIRP depth) of the source.
        nodes: draft nodes of every step.
        rows: rows of every step (root, nodes and pseudo rows).
        accepted: accepted drafts of every step.
        seconds: wall time of the decoding loop (prefill and any first-use calibration included).
        fallback: why the original ``generate`` ran instead, or None.
        step: what the step ran: ``"packed"`` (eager, oneDNN-packed weights, see
            :mod:`specdec.decode.packing`), ``"eager"`` (the weights as stored) or ``"compiled"``
            (:mod:`specdec.decode.graphs`).
    """

    steps: int = 0
    new_tokens: int = 0
    k: int = 0
    nodes: tuple[int, ...] = field(default_factory=tuple)
    rows: tuple[int, ...] = field(default_factory=tuple)
    accepted: tuple[int, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    fallback: str | None = None
    step: str = "eager"

    @property
    def tau(self) -> float:
        """Mean tokens emitted per step (accepted drafts + 1); 0 when nothing ran."""
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def tree_nodes(self) -> float:
        """Mean draft nodes per step."""
        return sum(self.nodes) / len(self.nodes) if self.nodes else 0.0

    @property
    def mean_rows(self) -> float:
        """Mean rows per step."""
        return sum(self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def acceptance(self) -> tuple[float, ...]:
        """Per depth ``d = 1, 2, ...``: the fraction of steps with drafts that accepted at least ``d``."""
        drafted = [a for a, n in zip(self.accepted, self.nodes) if n]
        deepest = max(max(drafted, default=0), self.k)
        if not drafted:
            return tuple(0.0 for _ in range(deepest))
        return tuple(sum(a >= d for a in drafted) / len(drafted) for d in range(1, deepest + 1))

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        if self.fallback is not None:
            return f"DecodeStats(fallback: {self.fallback})"
        per_depth = ", ".join(f"{a:.2f}" for a in self.acceptance)
        return (
            f"DecodeStats(steps={self.steps}, new_tokens={self.new_tokens}, tau={self.tau:.2f}, "
            f"nodes/step={self.tree_nodes:.1f}, rows/step={self.mean_rows:.1f}, k={self.k}, step={self.step}, "
            f"acceptance by depth=[{per_depth}], {self.tokens_per_second:.1f} tok/s)"
        )
