"""Draft sources: where the candidate tokens of each step's tree come from.

A source may inject pseudo rows after a transfer layer (FIRP does); the decoder ranks their
final hidden states through the LM head in the same pass that verifies the step, and hands the
ranking of the accepted row's pseudo rows to the source, which returns the :class:`Candidates` of
the next step (adding, say, an n-gram lookup chain). A planner then picks the tree. Sources never
affect the output, only how much of it each step accepts.
"""

from .base import Candidates, DraftContext, DraftSource
from .firp import FIRPDrafts
from .forced import ForcedDrafts
from .lookup import LookupDrafts, NgramIndex

__all__ = ["Candidates", "DraftContext", "DraftSource", "FIRPDrafts", "ForcedDrafts", "LookupDrafts", "NgramIndex"]
