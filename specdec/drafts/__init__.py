"""Draft sources: where the candidate tokens of each step's tree come from.

- :class:`FIRPDrafts`: pseudo rows mapped from real rows' hidden states at a transfer layer.
- :class:`MaskDrafts`: pseudo rows of learned embeddings entering before layer 0 (SPACE).
- :class:`EarlyExitDrafts`: the accepted row's early-layer state, straight to the LM head (SPEED's
  guess); no extra rows, and it may wrap one of the two above.
- :class:`HeadDrafts`: a token-aware draft head (EAGLE-style) that drafts a tree after each step
  from the accepted row's final state and the token that follows it; no extra rows in the step.
- :class:`LookupDrafts`: an n-gram lookup chain around any of them.

A source may inject pseudo rows after a transfer layer (FIRP does); the decoder ranks their
final hidden states through the LM head in the same pass that verifies the step, and hands the
ranking of the accepted row's pseudo rows to the source, which returns the :class:`Candidates` of
the next step (adding, say, an n-gram lookup chain). A planner then picks the tree. Sources never
affect the output, only how much of it each step accepts.
"""

from .base import Candidates, DraftContext, DraftSource
from .early_exit import EarlyExitDrafts, ExitHead
from .firp.source import FIRPDrafts
from .forced import ForcedDrafts
from .head.network import TokenHead
from .head.source import HeadDrafts
from .lookup import LookupDrafts, NgramIndex
from .mask import MaskDrafts, MaskSlots

__all__ = [
    "Candidates",
    "DraftContext",
    "DraftSource",
    "EarlyExitDrafts",
    "ExitHead",
    "FIRPDrafts",
    "ForcedDrafts",
    "HeadDrafts",
    "LookupDrafts",
    "MaskDrafts",
    "MaskSlots",
    "NgramIndex",
    "TokenHead",
]
