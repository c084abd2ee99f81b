"""FIRP: a trained :class:`FuturePredictor` turns real rows into pseudo rows at the transfer layer."""

from .. import kernels
from ..predictor import FuturePredictor
from .base import DraftSource


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
        param = model.get_input_embeddings().weight
        predictor = self.predictor
        if predictor.weight.device != param.device or predictor.weight.dtype != param.dtype:
            predictor = FuturePredictor(predictor.hidden_size, predictor.k, predictor.layer, predictor.fingerprint)
            predictor.load_state_dict(self.predictor.state_dict())
            predictor = predictor.to(device=param.device, dtype=param.dtype)
        return FIRPDrafts(predictor.eval().requires_grad_(False), backend)

    def inject(self, hidden, out) -> None:
        kernels.project_future(hidden, self.predictor.weight, self.predictor.bias, out=out, backend=self.backend)
