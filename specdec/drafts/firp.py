"""FIRP: a trained :class:`FuturePredictor` turns real rows into pseudo rows at the transfer layer."""

from .. import kernels
from ..predictor import FuturePredictor
from .base import DraftSource, frozen_copy


class FIRPDrafts(DraftSource):
    """Pseudo rows from a :class:`FuturePredictor`; the decoder ranks them through the LM head."""

    def __init__(self, predictor: FuturePredictor, backend: str = "auto"):
        self.predictor = predictor
        self.backend = backend
        self.k = predictor.k
        self.layer = predictor.layer

    def check_model(self, model) -> None:
        self.predictor.check_model(model)

    def prepared(self, model, backend: str) -> "FIRPDrafts":
        return FIRPDrafts(frozen_copy(self.predictor, model), backend)

    def inject(self, hidden, out) -> None:
        kernels.project_future(hidden, self.predictor.weight, self.predictor.bias, out=out, backend=self.backend)
