"""FIRP: a trained :class:`FuturePredictor` (the paper's linear map or a richer one of
:mod:`specdec.drafts.firp.maps`, with or without pseudo-row adapters) turns real rows into pseudo rows at the
transfer layer."""

from .adapters import applied
from .predictor import FuturePredictor
from ..base import DraftSource, frozen_copy


class FIRPDrafts(DraftSource):
    """Pseudo rows from a :class:`FuturePredictor`; the decoder ranks them through the LM head."""

    def __init__(self, predictor: FuturePredictor, backend: str = "auto"):
        self.predictor = predictor
        self.backend = backend
        self.k = predictor.k
        self.layer = predictor.layer
        self.capture_layer = predictor.earlier_layer
        self.vocabulary = predictor.draft_vocab
        self.has_adapters = predictor.adapters is not None

    def check_model(self, model) -> None:
        self.predictor.check_model(model)

    def prepared(self, model, backend: str) -> "FIRPDrafts":
        return FIRPDrafts(frozen_copy(self.predictor, model), backend)

    def inject(self, hidden, out) -> None:
        self.predictor.project(hidden, out, self.backend)

    def adapted(self, layers, num_real: int):
        return applied(self.predictor, layers, num_real)
