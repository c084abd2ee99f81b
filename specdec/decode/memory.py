"""What ``tree="auto"`` learns from the steps it runs, kept across ``generate`` calls: acceptance
estimates, the achieved rate ``rho``, FIRP's gain ``g``, the realism of each node kind, and the
exploration clock (see :mod:`specdec.decode.planner`)."""

from dataclasses import dataclass, field

from .acceptance import AcceptanceModel
from .cost import StepCost

RATE_DECAY = 0.95
GAIN_DECAY = 0.9
GAIN_PRIOR = 0.0  # pseudo rows are not assumed to pay: the first exploration measures what they add
GAIN_PRIOR_WEIGHT = 1.0
REALISM_DECAY = 0.98  # per step: the realism's evidence covers the last few dozen steps
CALL_FADE = 0.5  # weight of earlier calls' acceptance evidence when a new call starts
REALISM_PRIOR = 1.0  # pseudo-nodes, expected and accepted, that hold a realism at 1 at first
EXPLORE_FIRST = 8  # idle steps before the first exploration (see :mod:`specdec.decode.exploration`)


@dataclass
class DraftingMemory:
    """What :class:`~specdec.decode.planner.AutoPlanner` learns, kept across ``generate`` calls (per
    model and source).

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

    def rate(self, cost: StepCost) -> float:
        """``rho``: tokens per second achieved so far (a plain step's rate before any step ran)."""
        return self.rate_tokens / self.rate_seconds if self.rate_seconds > 0 else 1.0 / cost(1)

    def learn_gain(self, gain: float) -> None:
        """One measured ``g`` (what the ranking added to this step's value, in tokens)."""
        self.gain_weight = GAIN_DECAY * self.gain_weight + 1
        self.gain += (gain - self.gain) / self.gain_weight

    def learn_verification(self, parents, keys, path: list[int]) -> None:
        """Acceptance of every node whose parent the walk reached.

        Args:
            parents: each draft node's parent row (row ``m + 1`` is node ``m``; row 0 the root).
            keys: each node's acceptance key.
            path: the rows the walk took, root first.
        """
        reached = set(path)
        acceptance = self.acceptance
        for sums in self.checked.values():
            sums[0] *= REALISM_DECAY
            sums[1] *= REALISM_DECAY
        for row, (parent, key) in enumerate(zip(parents, keys), start=1):
            if parent in reached:
                sums = self.checked.setdefault(key[0], [0.0, 0.0])
                sums[0] += row in reached
                sums[1] += acceptance.prob(key)  # what the estimate expected, before it learns from this
                acceptance.observe(key, row in reached)
        acceptance.hot = len(path) > 1

    def learn_rate(self, seconds: float, emitted: int) -> None:
        """A finished step's wall time and the tokens it emitted."""
        self.rate_tokens = RATE_DECAY * self.rate_tokens + emitted
        self.rate_seconds = RATE_DECAY * self.rate_seconds + seconds
