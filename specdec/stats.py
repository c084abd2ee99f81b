"""Per-``generate`` statistics of speculative decoding."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DecodeStats:
    """What the last patched ``generate`` call did.

    Attributes:
        steps: forward passes that emitted tokens (the first one, on the last prompt
            token, has no drafts).
        new_tokens: tokens emitted, after cutting at the stop.
        tree_nodes: draft nodes per step; k: draft depth of the source.
        accepted: accepted drafts of every drafted step (all steps but the first).
        seconds: wall time of the decoding loop (prefill included).
        fallback: why the original ``generate`` ran instead, or None.
    """

    steps: int = 0
    new_tokens: int = 0
    tree_nodes: int = 0
    k: int = 0
    accepted: tuple[int, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    fallback: str | None = None

    @property
    def tau(self) -> float:
        """Mean tokens emitted per step (accepted drafts + 1); 0 when nothing ran."""
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def acceptance(self) -> tuple[float, ...]:
        """Per depth ``d = 1..k``: the fraction of drafted steps that accepted at least ``d`` drafts."""
        if not self.accepted:
            return tuple(0.0 for _ in range(self.k))
        return tuple(sum(a >= d for a in self.accepted) / len(self.accepted) for d in range(1, self.k + 1))

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        if self.fallback is not None:
            return f"DecodeStats(fallback: {self.fallback})"
        per_depth = ", ".join(f"{a:.2f}" for a in self.acceptance)
        return (
            f"DecodeStats(steps={self.steps}, new_tokens={self.new_tokens}, tau={self.tau:.2f}, "
            f"tree_nodes={self.tree_nodes}, k={self.k}, acceptance by depth=[{per_depth}], "
            f"{self.tokens_per_second:.1f} tok/s)"
        )
