"""Online estimates of how likely each draft node is to be accepted.

A node's *conditional* acceptance is the probability that verification moves to it given that it
reaches its parent. It depends on where the node's token came from (``kind``: FIRP's ranking,
the lookup chain, or both agreeing), its depth, and for ranked tokens the draft's own probability
(EAGLE-2 ranks by it too). Each ``(kind, depth, bucket)`` holds a Beta posterior: the prior trusts
the draft's probability (or a fixed guess for lookup chains) with the weight of
:data:`PRIOR_WEIGHT` observations, and every verified node adds one observation. Observations decay
by :data:`FORGET` per update of their key, so the estimates follow a change of text.
"""

import bisect

# Upper edges of the draft-probability buckets; the last bucket is (0.9, 1].
PROB_EDGES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9)
PROB_CENTERS = (0.01, 0.035, 0.075, 0.15, 0.25, 0.375, 0.525, 0.675, 0.825, 0.95)
PRIOR_WEIGHT = 2.0
FORGET = 0.995
CHAIN_PRIOR = {1: 0.4}  # first lookup token; deeper ones, once the chain is on track: 0.7
MAX_CHAIN_DEPTH_KEY = 4
MAX_NGRAM_KEY = 3


class AcceptanceModel:
    """Calibrated conditional acceptance probabilities, learned from verified steps."""

    def __init__(self):
        self.counts: dict[tuple, list[float]] = {}  # key -> [accepted, rejected] (prior included)

    @staticmethod
    def ranked_key(kind: str, depth: int, prob: float) -> tuple:
        """Key of a ranked token (``kind`` ``"firp"``, or ``"both"`` when the chain agrees) of draft probability ``prob``."""
        return kind, depth, bisect.bisect_left(PROB_EDGES, prob)

    @staticmethod
    def chain_key(depth: int, ngram: int) -> tuple:
        """Key of a lookup-chain token at ``depth`` found by an ``ngram``-token match."""
        return "chain", min(depth, MAX_CHAIN_DEPTH_KEY), min(ngram, MAX_NGRAM_KEY)

    def prob(self, key: tuple) -> float:
        """Estimated conditional acceptance of a node with ``key``."""
        counts = self.counts.get(key)
        if counts is None:
            return _prior(key)
        return counts[0] / (counts[0] + counts[1])

    def observe(self, key: tuple, accepted: bool) -> None:
        """Record that a node with ``key`` whose parent was reached was (or was not) accepted."""
        counts = self.counts.get(key)
        if counts is None:
            prior = _prior(key)
            counts = self.counts[key] = [PRIOR_WEIGHT * prior, PRIOR_WEIGHT * (1 - prior)]
        counts[0] = FORGET * counts[0] + accepted
        counts[1] = FORGET * counts[1] + (not accepted)


def _prior(key: tuple) -> float:
    kind, depth, bucket = key
    if kind == "chain":
        return CHAIN_PRIOR.get(depth, 0.7)
    center = PROB_CENTERS[bucket]
    return max(center, 0.5) if kind == "both" else center
