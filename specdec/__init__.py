"""specdec: lossless FIRP speculative decoding for Hugging Face Llama-style models.

    import specdec
    model, tokenizer, pred = specdec.load_demo("stdlib-9m")   # or your model and a trained predictor
    input_ids = tokenizer("def read_config(path):", return_tensors="pt").input_ids
    specdec.patch(model, pred)
    model.generate(input_ids, max_new_tokens=64)   # same tokens as plain greedy
    print(specdec.stats(model))
    specdec.unpatch(model)
"""

from .decode.stats import DecodeStats
from .decode.tree import TREE_NAMES, TreeShape
from .demo import load_demo
from .drafts import Candidates, DraftContext, DraftSource, EarlyExitDrafts, FIRPDrafts, ForcedDrafts, HeadDrafts, LookupDrafts, MaskDrafts, TokenHead
from .drafts.firp.adapters import PseudoRowAdapters
from .drafts.firp.maps import MLPPredictor, MultiLayerPredictor
from .drafts.firp.predictor import FuturePredictor
from .drafts.firp.vocabulary import DraftVocabulary
from .patching import SUPPORTED_MODEL_TYPES, is_patched, patch, stats, unpatch, warmup
from .training.sweep import measure_tau, sweep_layers
from .training.train import TrainConfig, evaluate_predictor, train_predictor

__version__ = "0.1.0"

__all__ = [
    "Candidates",
    "SUPPORTED_MODEL_TYPES",
    "TREE_NAMES",
    "DecodeStats",
    "DraftContext",
    "DraftSource",
    "DraftVocabulary",
    "EarlyExitDrafts",
    "FIRPDrafts",
    "ForcedDrafts",
    "FuturePredictor",
    "HeadDrafts",
    "LookupDrafts",
    "MLPPredictor",
    "MaskDrafts",
    "MultiLayerPredictor",
    "PseudoRowAdapters",
    "TokenHead",
    "TrainConfig",
    "TreeShape",
    "evaluate_predictor",
    "is_patched",
    "load_demo",
    "measure_tau",
    "patch",
    "stats",
    "sweep_layers",
    "train_predictor",
    "unpatch",
    "warmup",
]
