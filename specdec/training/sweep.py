"""Transfer-layer sweep: train one predictor per layer, report accuracy and real-decoding tau."""

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..drafts import FIRPDrafts
from ..patching import is_patched, patch, stats, unpatch
from ..drafts.firp.predictor import FuturePredictor, check_layer
from .train import TrainConfig, evaluate_predictor, train_predictor


@dataclass
class LayerResult:
    layer: int
    top1: list[float]
    top5: list[float]
    tau: float | None
    predictor: FuturePredictor


def measure_tau(model, predictor, prompts: list[torch.Tensor], max_new_tokens: int, tree="default") -> float:
    """Mean tokens per step of patched greedy decoding over ``prompts`` (each ``[1, P]``).

    The predictor's own drafts (:class:`FIRPDrafts` of a :class:`FuturePredictor`, or a draft source
    as given, no lookup) in a static ``tree``, so the figure measures the drafts and does not depend
    on timings as ``tree="auto"`` would.
    """
    if is_patched(model):
        raise ValueError("measure_tau patches the model itself: unpatch it first")
    patch(model, FIRPDrafts(predictor) if isinstance(predictor, FuturePredictor) else predictor, tree=tree)
    try:
        steps = new = 0
        for ids in prompts:
            model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            run = stats(model)
            steps, new = steps + run.steps, new + run.new_tokens
    finally:
        unpatch(model)
    return new / steps


def sweep_layers(
    model,
    train_data,
    eval_data,
    layers: list[int],
    k: int = 3,
    *,
    tokenizer=None,
    config: TrainConfig | None = None,
    prompts: list[torch.Tensor] | None = None,
    max_new_tokens: int = 64,
    tree="default",
) -> list[LayerResult]:
    """Train and evaluate a predictor at each of ``layers``; tau needs ``prompts``.

    With ``config.checkpoint_dir`` set, layer ``t`` checkpoints into its sub-folder ``layer-t``. A layer
    the model does not have is refused (``ValueError``) before any training.
    """
    config = config or TrainConfig()
    for layer in layers:  # every layer before the first is trained
        check_layer(layer, model.config.num_hidden_layers)
    results = []
    for layer in layers:
        layer_config = config
        if config.checkpoint_dir:
            layer_config = replace(config, checkpoint_dir=str(Path(config.checkpoint_dir) / f"layer-{layer}"))
        predictor = train_predictor(model, train_data, layer, k, tokenizer=tokenizer, config=layer_config)
        scores = evaluate_predictor(model, predictor, eval_data, tokenizer=tokenizer, seq_len=config.seq_len)
        tau = measure_tau(model, predictor, prompts, max_new_tokens, tree) if prompts else None
        results.append(LayerResult(layer, scores["top1"], scores["top5"], tau, predictor))
    return results


def format_table(results: list[LayerResult]) -> str:
    """A plain-text table: layer, per-offset top-1 / top-5 agreement, tau."""
    k = len(results[0].top1)
    head = ["layer"] + [f"top1@{i}" for i in range(1, k + 1)] + [f"top5@{i}" for i in range(1, k + 1)] + ["tau"]
    lines = ["  ".join(f"{h:>7}" for h in head)]
    for r in results:
        cells = [f"{r.layer:>7}"] + [f"{v:>7.3f}" for v in r.top1 + r.top5]
        cells.append(f"{r.tau:>7.2f}" if r.tau is not None else f"{'-':>7}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def best_layer(results: list[LayerResult]) -> LayerResult:
    """The result with the highest tau, or the highest mean top-1 agreement when tau was not measured."""
    return max(results, key=lambda r: (r.tau if r.tau is not None else 0.0, sum(r.top1)))
