"""Online estimates of how likely each draft node is to be accepted.

A node's *conditional* acceptance is the probability that verification moves to it given that it
reaches its parent. It depends on where the node's token came from (``kind``: a source's ranking,
the lookup chain, or both agreeing), its depth, and for ranked tokens the draft's own probability
(EAGLE-2 ranks by it too). Each ``(kind, depth, bucket)`` holds a Beta posterior: every verified
node adds one observation, and the prior, with the weight of :data:`PRIOR_WEIGHT` observations, is
the draft's probability (or a fixed guess for lookup chains).

Two refinements, each found on a benchmark where the plain estimates kept a useless draft alive:

- *Calibrated priors.* A bucket's prior is scaled down where nodes of the same ``(kind, depth)``
  have done worse than their guesses (never up: a key earns more through its own observations).
  An untrained predictor ranks the current token with probability 0.9; after a few misses its
  drafts are distrusted at every probability, not only in the buckets already tried.
- *Streaks.* Acceptance runs in streaks (a model repeating itself accepts everything, then
  nothing once it stops), so every estimate is kept twice: for steps that follow a step which
  accepted a draft (``hot``) and for the others. Without the split, one repetitive prompt's
  successes kept the planner drafting for dozens of failed steps on the next.

Observations decay by :data:`FORGET` per update, so the estimates follow a change of text.
"""

import bisect

# Upper edges of the draft-probability buckets; the last bucket is (0.9, 1].
PROB_EDGES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9)
PROB_CENTERS = (0.01, 0.035, 0.075, 0.15, 0.25, 0.375, 0.525, 0.675, 0.825, 0.95)
PRIOR_WEIGHT = 2.0
CALIBRATION_WEIGHT = 2.0  # pseudo-observations that hold a (kind, depth)'s calibration at 1 at first
FORGET = 0.995
CHAIN_PRIOR = {1: 0.4}  # first lookup token; deeper ones, once the chain is on track: 0.7
MAX_CHAIN_DEPTH_KEY = 4
MAX_NGRAM_KEY = 3


class AcceptanceModel:
    """Calibrated conditional acceptance probabilities, learned from verified steps."""

    def __init__(self):
        self.counts: dict[tuple, list[float]] = {}  # (*key, hot) -> [accepted, rejected], decayed observations
        self.calibration: dict[tuple, list[float]] = {}  # (kind, depth, hot) -> [accepted, sum of uncalibrated priors]
        self.hot = False  # whether the last verified step accepted a draft (set by the planner)

    @staticmethod
    def ranked_key(kind: str, depth: int, prob: float) -> tuple:
        """Key of a ranked token (``kind``: its source, ``"firp"``, ``"mask"`` or ``"exit"``, or ``"both"`` when the chain agrees) of draft probability ``prob``."""
        return kind, depth, bisect.bisect_left(PROB_EDGES, prob)

    @staticmethod
    def chain_key(depth: int, ngram: int) -> tuple:
        """Key of a lookup-chain token at ``depth`` found by an ``ngram``-token match."""
        return "chain", min(depth, MAX_CHAIN_DEPTH_KEY), min(ngram, MAX_NGRAM_KEY)

    def prior(self, key: tuple) -> float:
        """The key's guess times its ``(kind, depth)``'s record (accepted / expected by the guesses), at most 1."""
        guess = _prior(key)
        record = self.calibration.get((*key[:2], self.hot))
        if record is None:
            return guess
        return guess * min(1.0, (record[0] + CALIBRATION_WEIGHT) / (record[1] + CALIBRATION_WEIGHT))

    def prob(self, key: tuple) -> float:
        """Estimated conditional acceptance of a node with ``key`` in the current (hot or cold) state."""
        prior = self.prior(key)
        counts = self.counts.get((*key, self.hot))
        if counts is None:
            return prior
        return (counts[0] + PRIOR_WEIGHT * prior) / (counts[0] + counts[1] + PRIOR_WEIGHT)

    def fade(self, factor: float) -> None:
        """Weigh every observation so far ``factor`` times as much (a new text begins)."""
        for table in (self.counts, self.calibration):
            for sums in table.values():
                sums[0] *= factor
                sums[1] *= factor

    def observe(self, key: tuple, accepted: bool) -> None:
        """Record that a node with ``key`` whose parent was reached was (or was not) accepted."""
        counts = self.counts.setdefault((*key, self.hot), [0.0, 0.0])
        counts[0] = FORGET * counts[0] + accepted
        counts[1] = FORGET * counts[1] + (not accepted)
        record = self.calibration.setdefault((*key[:2], self.hot), [0.0, 0.0])
        record[0] = FORGET * record[0] + accepted
        record[1] = FORGET * record[1] + _prior(key)


def _prior(key: tuple) -> float:
    kind, depth, bucket = key
    if kind == "chain":
        return CHAIN_PRIOR.get(depth, 0.7)
    center = PROB_CENTERS[bucket]
    return max(center, 0.5) if kind == "both" else center
