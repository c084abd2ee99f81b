"""Training the FIRP predictor on a frozen model (firp.md, "Training the predictor"), and the same
for the other trainable draft sources (mask slots, early-exit heads), which follow its protocol
(see :class:`~specdec.drafts.firp.predictor.FuturePredictor`): mask slots are pseudo rows made before layer 0
(``t = -1``, from nothing but their learned vectors), early-exit heads are pseudo states that skip
step 2's layers and go straight to the final norm and LM head.

Per batch of token sequences ``[B, T]``:

1. Teacher pass (no grad): the frozen model's logits at every position, the
   hidden states after the transfer layer ``t``, and every layer's keys/values.
2. Pseudo rows ``P[n, i] = p_i(h_t[n])`` for sampled positions ``n`` and
   ``i = 1..k``, at positions ``n + i``, run through layers ``t+1..L-1`` in one
   packed pass over the teacher's cached keys/values, with a 4-D mask: ``P[n, i]``
   sees real positions ``<= n`` (within a sliding window, if any) and
   ``P[n, 1..i]``.
3. Loss: KL(teacher at real position ``n + i`` || student at ``P[n, i]``), or
   cross-entropy to the true token ``x[n + i + 1]``. Only the predictor trains: its map and,
   in the same pass, its pseudo-row adapters (applied to every row of step 2's packed pass,
   which are all pseudo rows), the new parameters at their own learning rate.

Accuracy is agreement with the teacher's greedy token (what greedy verification
accepts): top-1 and top-5, per offset ``i``.

Cost (SmolLM2-135M, transfer layer 7, k=3, 4 x 128 tokens with every position used, 1488
pseudo rows; 2 CPU cores, nothing else running): one step took 6.3 s in fp32 (teacher 0.7 s,
pseudo-row forward 1.8 s, loss 1.3 s, backward 2.5 s) and 3.1-3.7 s with ``bf16=True``
(bfloat16 autocast of the frozen model's matmuls; the loss and the predictor's update stay
fp32). Using every position of a teacher pass costs 4.3 ms per pseudo row against 5.2 ms for
32 sampled positions per 128-token sequence.
"""

import contextlib
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..drafts import DraftSource, EarlyExitDrafts, MaskDrafts
from ..drafts.firp.adapters import applied
from ..drafts.firp.predictor import MAP_CLASSES, FuturePredictor
from .data import as_sequences, batch_at

SOURCES = ("firp", "mask", "exit")
CHECKPOINT_STATE = "trainer_state.pt"
CURVE_NAME = "curve.jsonl"
# TrainConfig fields a resumed run must share with the checkpoint's run to continue it exactly.
RESUME_SETTINGS = ("steps", "batch_size", "seq_len", "lr", "adapter_lr", "weight_decay", "warmup", "clip", "loss", "positions", "seed", "bf16")


@dataclass
class TrainConfig:
    """Knobs of :func:`train_predictor` (defaults suit small models on a CPU)."""

    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 3e-3
    adapter_lr: float | None = None
    """Peak learning rate of the parameters the paper's map does not have (adapters, an MLP, an
    earlier layer's map); None: ``lr``."""
    weight_decay: float = 0.0
    warmup: int = 30
    clip: float = 1.0
    loss: str = "kl"
    positions: int | None = 64
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True
    bf16: bool = False
    """Run the frozen model's teacher and pseudo-row passes under bfloat16 autocast (about 2x on CPUs with AMX)."""
    eval_every: int = 0
    """With ``eval_data``: evaluate every this many steps and append to ``checkpoint_dir/curve.jsonl``."""

    def __post_init__(self):
        if self.loss not in ("kl", "ce"):
            raise ValueError(f"loss must be 'kl' or 'ce', got {self.loss!r}")
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ValueError("steps and batch_size must be >= 1 and seq_len >= 2")
        if self.checkpoint_every < 1 or self.eval_every < 0:
            raise ValueError(f"checkpoint_every must be >= 1 and eval_every >= 0 (0: no curve), got {self.checkpoint_every} and {self.eval_every}")
        if not self.lr > 0 or (self.adapter_lr is not None and not self.adapter_lr > 0):
            raise ValueError(f"lr and adapter_lr must be > 0, got {self.lr} and {self.adapter_lr}")


class PrefixCache:
    """Answers a layer's ``cache.update`` with fixed prefix keys/values followed by the new ones."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys = torch.cat([self.keys[layer_idx], key_states], dim=2)
        return keys, torch.cat([self.values[layer_idx], value_states], dim=2)


def cache_kwarg(module) -> str:
    """The cache argument's name in this transformers version (``cache`` or ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


@torch.no_grad()
def teacher_pass(model, ids: torch.Tensor, layer: int | tuple[int, ...]):
    """Frozen forward of ``ids [B, T]``: logits ``[B, T, V]``, hidden after ``layer`` (-1: the embeddings)
    ``[B, T, d]`` (a tuple of layers: their outputs concatenated, ``[B, T, len * d]``), keys, values."""
    layers = (layer,) if isinstance(layer, int) else tuple(layer)
    cache = DynamicCache()
    captured = {}
    # Hooks, not output_hidden_states: its last entry is after the final norm.
    hooks = [
        (model.model.embed_tokens if hooked < 0 else model.model.layers[hooked]).register_forward_hook(
            lambda module, args, output, hooked=hooked: captured.setdefault(hooked, output[0] if isinstance(output, tuple) else output)
        )
        for hooked in layers
    ]
    try:
        out = model(ids, use_cache=True, **{cache_kwarg(model): cache})
    finally:
        for hook in hooks:
            hook.remove()
    hidden = torch.cat([captured[hooked] for hooked in layers], dim=-1) if len(layers) > 1 else captured[layers[0]]
    keys = [entry.keys for entry in cache.layers]
    values = [entry.values for entry in cache.layers]
    return out.logits, hidden, keys, values


def layer_window(layer_module, config) -> int | None:
    """Sliding window of a decoder layer, or None."""
    attn = layer_module.self_attn
    return getattr(attn, "sliding_window", getattr(config, "sliding_window", None))


def pseudo_mask(seq_len: int, starts: torch.Tensor, k: int, window: int | None, dtype) -> torch.Tensor:
    """Additive mask ``[1, 1, N*k, T + N*k]`` for pseudo rows ``P[n, i]`` (row ``j*k + i - 1`` for ``n = starts[j]``)."""
    device = starts.device
    rows = starts.shape[0] * k
    owner = starts.repeat_interleave(k)  # n of every pseudo row
    offset = torch.arange(1, k + 1, device=device).repeat(starts.shape[0])  # i of every pseudo row
    real = torch.arange(seq_len, device=device)
    sees_real = real[None, :] <= owner[:, None]
    if window is not None:
        sees_real &= (owner + offset)[:, None] - real[None, :] < window
    row = torch.arange(rows, device=device)
    group = row // k
    sees_pseudo = (group[:, None] == group[None, :]) & (offset[None, :] <= offset[:, None])
    visible = torch.cat([sees_real, sees_pseudo], dim=1)
    mask = torch.zeros(visible.shape, dtype=dtype, device=device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


def student_logits(model, predictor: FuturePredictor, hidden_t, keys, values, starts) -> torch.Tensor:
    """Logits ``[B, N, k, V]`` (float32) of pseudo rows for positions ``starts [N]``.

    ``predictor`` follows :class:`FuturePredictor`'s protocol; ``hidden_t`` is the outputs of its
    ``input_layers`` (``[B, T, d * len(input_layers)]``); with ``refine`` False its states go
    straight to the final norm and LM head. Its adapters, if any, apply to every row of the pass.
    """
    inner = model.model
    batch, seq_len, _ = hidden_t.shape
    k, layer = predictor.k, predictor.layer
    pseudo = predictor(hidden_t[:, starts].float()).to(hidden_t.dtype)  # [B, N, k, d]
    hidden = pseudo.reshape(batch, -1, pseudo.shape[-1])
    positions = (starts[:, None] + torch.arange(1, k + 1, device=starts.device)).reshape(1, -1).expand(batch, -1)
    rotary = inner.rotary_emb(hidden, positions)
    cache = PrefixCache(keys, values)
    masks: dict[int | None, torch.Tensor] = {}
    with applied(predictor, inner.layers, 0):
        for module in inner.layers[layer + 1 :] if predictor.refine else ():
            window = layer_window(module, model.config)
            if window not in masks:
                masks[window] = pseudo_mask(seq_len, starts, k, window, hidden.dtype)
            hidden = module(
                hidden,
                attention_mask=masks[window],
                position_ids=positions,
                position_embeddings=rotary,
                use_cache=True,
                **{cache_kwarg(module): cache},
            )
    logits = model.get_output_embeddings()(inner.norm(hidden)).float()
    return logits.view(batch, starts.shape[0], k, -1)


def offset_targets(tensor: torch.Tensor, starts: torch.Tensor, k: int, shift: int = 0) -> torch.Tensor:
    """``tensor[:, starts + i + shift]`` for ``i = 1..k`` -> ``[B, N, k, ...]``."""
    index = starts[:, None] + torch.arange(1, k + 1, device=starts.device) + shift
    return tensor[:, index]


def predictor_loss(student, teacher_logits, ids, starts, k: int, kind: str) -> torch.Tensor:
    """KL(teacher || student) at position ``n + i``, or cross-entropy to token ``x[n + i + 1]``.

    ``student`` is ``[B, N, k, V]`` float32, ``teacher_logits`` ``[B, T, V]``. The teacher's
    log-probabilities and entropy are computed once per real position (each is the target of up
    to ``k`` pseudo rows), so only the probabilities are gathered per pseudo row.
    """
    log_student = student.log_softmax(-1)
    if kind == "ce":
        target = offset_targets(ids, starts, k, shift=1)
        return F.nll_loss(log_student.flatten(0, 2), target.flatten())
    log_teacher = teacher_logits.float().log_softmax(-1)  # [B, T, V]
    prob = log_teacher.exp()
    neg_entropy = torch.linalg.vecdot(prob, log_teacher)  # [B, T]
    cross = torch.linalg.vecdot(offset_targets(prob, starts, k), log_student)  # [B, N, k]
    return (offset_targets(neg_entropy, starts, k) - cross).mean()


def agreement(student, teacher_logits, starts, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-offset counts ``[k]`` of teacher-greedy hits in the student's top-1 and top-5, and rows ``[k]``."""
    greedy = offset_targets(teacher_logits, starts, k).argmax(-1)  # [B, N, k]
    top5 = student.topk(min(5, student.shape[-1]), dim=-1).indices
    hit1 = (top5[..., 0] == greedy).flatten(0, 1).sum(0)
    hit5 = (top5 == greedy[..., None]).any(-1).flatten(0, 1).sum(0)
    return torch.stack([hit1, hit5]).float(), torch.full((k,), greedy.shape[0] * greedy.shape[1], dtype=torch.float)


def sample_starts(seq_len: int, k: int, count: int | None, generator, device) -> torch.Tensor:
    """Sorted positions ``n`` with ``n + k < seq_len`` (all of them, or ``count`` sampled)."""
    valid = seq_len - k - 1
    if valid < 1:
        raise ValueError(f"seq_len {seq_len} is too short for k={k}")
    if count is None or count >= valid:
        return torch.arange(valid, device=device)
    return torch.randperm(valid, generator=generator)[:count].sort().values.to(device)


class _FrozenModel:
    """Context manager: model in eval mode with gradients off, restored afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.training = self.model.training
        self.model.eval().requires_grad_(False)
        return self.model

    def __exit__(self, *exc):
        for param, flag in zip(self.model.parameters(), self.flags):
            param.requires_grad_(flag)
        self.model.train(self.training)


def train_predictor(
    model,
    data,
    layer: int | None = None,
    k: int = 3,
    *,
    source: str = "firp",
    tokenizer=None,
    config: TrainConfig | None = None,
    predictor=None,
    eval_data=None,
    **overrides,
):
    """Train a draft source for the frozen ``model``; returns it (float32, on the model's device).

    Args:
        model: a supported ``*ForCausalLM``; its weights are not changed.
        data: texts (``list[str]``, needs ``tokenizer``) or packed token ids ``[N, T]``.
        layer, k: transfer layer (FIRP, default ``L // 4``) or exit layer (early exit, default
            ``L // 2``; mask slots take none) and number of future offsets.
        source: what to train when ``predictor`` is None: ``"firp"`` (returns a
            :class:`FuturePredictor`), ``"mask"`` (a :class:`MaskDrafts`) or ``"exit"`` (an
            :class:`EarlyExitDrafts`; ``k`` is its depths too, so pass ``k=1`` for depth 1 only).
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields.
        predictor: start from this :class:`FuturePredictor`, :class:`MaskDrafts` or
            :class:`EarlyExitDrafts` instead (its trainable part is trained in place and it is returned).
        eval_data: held-out texts or token ids ``[N, T]`` for the accuracy-vs-tokens curve
            (``config.eval_every`` and ``config.checkpoint_dir`` must be set).
    """
    config = TrainConfig(**{**(config or TrainConfig()).__dict__, **overrides})
    sequences = as_sequences(model, data, tokenizer, config.seq_len)
    device = next(model.parameters()).device
    if predictor is None:
        predictor = new_source(model, source, layer, k)
    module = trainable(predictor)
    module.to(device=device, dtype=torch.float32).train()
    module.check_model(model)
    optimizer = torch.optim.AdamW(parameter_groups(module, config), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    settings = run_settings(config, sequences)
    start = load_checkpoint(config, module, optimizer, schedule, settings) if config.resume else 0
    hits = torch.zeros(2, module.k)
    rows = torch.zeros(module.k)
    curve = eval_data is not None and config.eval_every > 0 and config.checkpoint_dir is not None
    held_out = as_sequences(model, eval_data, tokenizer, config.seq_len) if curve else None
    desc = f"train {module.SOURCE}" + (f" layer {module.layer}" if module.layer >= 0 else "")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not config.progress, desc=desc)
    with _FrozenModel(model):
        if curve and start == 0:
            record_curve(config, 0, model, predictor, held_out)
        for step in bar:
            ids = batch_at(sequences, config.batch_size, config.seed, step).to(device)
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            starts = sample_starts(ids.shape[1], module.k, config.positions, generator, device)
            with autocast(config, device):
                teacher, hidden_t, keys, values = teacher_pass(model, ids, module.input_layers)
                student = student_logits(model, module, hidden_t, keys, values, starts)
            loss = predictor_loss(student, teacher, ids, starts, module.k, config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.clip)
            optimizer.step()
            schedule.step()
            step_hits, step_rows = agreement(student.detach(), teacher, starts, module.k)
            hits, rows = 0.9 * hits + step_hits.cpu(), 0.9 * rows + step_rows
            top1 = " ".join(f"{v:.2f}" for v in (hits[0] / rows).tolist())
            bar.set_postfix_str(f"loss {loss.item():.3f} top1/offset {top1}")
            if curve and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
                record_curve(config, step + 1, model, predictor, held_out)
                module.train()
            if config.checkpoint_dir and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                save_checkpoint(config, module, optimizer, schedule, step + 1, settings)
    module.eval()
    return predictor


def new_source(model, source: str, layer: int | None, k: int, *, map: str = "linear", adapter_rank: int = 0, adapter_layers=None, **map_options):
    """An untrained ``source`` (``"firp"``, ``"mask"``, ``"exit"``) for ``model``.

    FIRP takes a ``map`` kind (``"linear"``, ``"mlp"``, ``"multi"``, see :mod:`specdec.drafts.firp.maps`) and its
    ``map_options`` (``width``, ``earlier_layer``); FIRP and mask slots take pseudo-row adapters of
    rank ``adapter_rank`` (0: none) on ``adapter_layers`` (None: every layer their rows pass through).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if map not in MAP_CLASSES:
        raise ValueError(f"map must be one of {', '.join(MAP_CLASSES)}, got {map!r}")
    if source != "firp" and (map != "linear" or map_options):
        raise ValueError(f"map kinds and their options are FIRP's, not {source!r}'s")
    if source == "exit" and (adapter_rank or adapter_layers is not None):
        raise ValueError("an early exit's states skip the later layers: adapters do not apply to it")
    adapters = dict(adapter_rank=adapter_rank, adapter_layers=adapter_layers)
    if source == "firp":
        return MAP_CLASSES[map].for_model(model, layer=layer, k=k, **adapters, **map_options)
    if source == "mask":
        if layer is not None:
            raise ValueError("mask slots enter before layer 0: they take no layer")
        return MaskDrafts.for_model(model, k=k, **adapters)
    return EarlyExitDrafts.for_model(model, layer=layer, k=k)


def trainable(predictor):
    """The module :func:`train_predictor` trains: a :class:`FuturePredictor` itself, a source's ``module``."""
    if isinstance(predictor, DraftSource):
        if not isinstance(predictor, (MaskDrafts, EarlyExitDrafts)):
            raise TypeError(f"{type(predictor).__name__} has nothing to train (pass its FuturePredictor)")
        return predictor.module
    if not isinstance(predictor, FuturePredictor):
        raise TypeError(f"predictor must be a FuturePredictor, MaskDrafts or EarlyExitDrafts, got {type(predictor).__name__}")
    return predictor


def parameter_groups(module, config: TrainConfig) -> list[dict]:
    """AdamW groups: the paper's map (``module.BASE_PARAMETERS``) at ``lr``, the rest at ``adapter_lr``."""
    named = list(module.named_parameters())
    base = [param for name, param in named if name in module.BASE_PARAMETERS]
    new = [param for name, param in named if name not in module.BASE_PARAMETERS]
    groups = [{"params": base, "lr": config.lr}]
    if new:
        groups.append({"params": new, "lr": config.lr if config.adapter_lr is None else config.adapter_lr})
    return groups


def autocast(config: TrainConfig, device: torch.device):
    """bfloat16 autocast when ``config.bf16``, else a no-op context."""
    if not config.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def record_curve(config: TrainConfig, step: int, model, predictor, held_out: torch.Tensor) -> None:
    """Evaluate (fp32) and append ``{"step", "tokens", "pseudo_rows", "top1", "top5", "kl"}`` to the curve file
    (``predictor``: what :func:`train_predictor` was given, a FuturePredictor or a source)."""
    scores = evaluate_predictor(model, predictor, held_out, seq_len=config.seq_len)
    k = trainable(predictor).k
    positions = config.seq_len - k - 1 if config.positions is None else min(config.positions, config.seq_len - k - 1)
    entry = {
        "step": step,
        "tokens": step * config.batch_size * config.seq_len,
        "pseudo_rows": step * config.batch_size * positions * k,
        **{key: scores[key] for key in ("top1", "top5", "kl")},
    }
    Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(config.checkpoint_dir) / CURVE_NAME, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_curve(checkpoint_dir: str | Path) -> list[dict]:
    """The curve entries of a checkpoint folder, one per step (the last written wins), by step."""
    path = Path(checkpoint_dir) / CURVE_NAME
    if not path.is_file():
        return []
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            entries[entry["step"]] = entry
    return [entries[step] for step in sorted(entries)]


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_predictor(model, predictor, data, *, tokenizer=None, seq_len: int = 256, batch_size: int = 8, vocabulary=None) -> dict:
    """Per-offset top-1 / top-5 agreement with the frozen model's greedy token on held-out ``data``.

    ``predictor``: a :class:`FuturePredictor`, :class:`MaskDrafts` or :class:`EarlyExitDrafts`.
    ``vocabulary``: a :class:`~specdec.drafts.firp.vocabulary.DraftVocabulary` the drafts are ranked over
    (None: the whole vocabulary); the KL stays the full distribution's.

    Returns ``{"top1": [k floats], "top5": [k floats], "kl": float, "rows": int}`` (kl: mean per pseudo row).
    """
    sequences = as_sequences(model, data, tokenizer, seq_len)
    device = next(model.parameters()).device
    predictor = trainable(predictor)
    predictor.to(device=device, dtype=torch.float32).eval()
    hits, rows, kl_sum = torch.zeros(2, predictor.k), torch.zeros(predictor.k), 0.0
    if vocabulary is not None:
        inside = vocabulary.mask(device)
    with _FrozenModel(model):
        for begin in range(0, sequences.shape[0], batch_size):
            ids = sequences[begin : begin + batch_size].to(device)
            teacher, hidden_t, keys, values = teacher_pass(model, ids, predictor.input_layers)
            starts = sample_starts(ids.shape[1], predictor.k, None, None, device)
            student = student_logits(model, predictor, hidden_t, keys, values, starts)
            ranked = student if vocabulary is None else student.masked_fill(~inside, float("-inf"))
            step_hits, step_rows = agreement(ranked, teacher, starts, predictor.k)
            hits += step_hits.cpu()
            rows += step_rows
            kl_sum += predictor_loss(student, teacher, ids, starts, predictor.k, "kl").item() * float(step_rows[0])
    top1, top5 = (hits[0] / rows).tolist(), (hits[1] / rows).tolist()
    return {"top1": top1, "top5": top5, "kl": kl_sum / float(rows[0]), "rows": int(rows[0])}


def run_settings(config: TrainConfig, sequences: torch.Tensor) -> dict:
    """What a checkpoint records of its run: the ``RESUME_SETTINGS`` and the shape of the packed training data."""
    return {**{name: getattr(config, name) for name in RESUME_SETTINGS}, "training sequences": list(sequences.shape)}


def save_checkpoint(config, predictor, optimizer, schedule, step: int, settings: dict) -> None:
    """Write the predictor, the optimizer and schedule state, the step and the run's ``settings``."""
    path = Path(config.checkpoint_dir)
    predictor.save_pretrained(path)
    state = {"step": step, "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "settings": settings}
    torch.save(state, path / CHECKPOINT_STATE)


def load_checkpoint(config, predictor, optimizer, schedule, settings: dict) -> int:
    """Restore a checkpoint written by a run with the same ``settings``; returns the step to continue from.

    A checkpoint of another layer, ``k``, map, adapters or model, or of a run with other settings, is
    refused by name.
    """
    if not config.checkpoint_dir or not (Path(config.checkpoint_dir) / CHECKPOINT_STATE).is_file():
        raise FileNotFoundError(f"resume: no checkpoint in {config.checkpoint_dir!r}")
    path = Path(config.checkpoint_dir)
    saved = type(predictor).from_pretrained(path)
    saved_config, own = saved.config_dict(), predictor.config_dict()
    differ = [f"{key} {saved_config.get(key)!r} (this run: {own.get(key)!r})" for key in own if saved_config.get(key) != own[key]]
    if differ:
        raise ValueError(f"resume: the checkpoint in {path} is of another source: {', '.join(differ)}")
    state = torch.load(path / CHECKPOINT_STATE, weights_only=False)
    check_settings(path, state.get("settings"), settings)
    predictor.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return state["step"]


def check_settings(path: Path, saved: dict | None, settings: dict) -> None:
    """Raise ``ValueError`` naming each setting in which this run differs from the checkpoint's run."""
    if saved is None:
        raise ValueError(f"resume: the checkpoint in {path} does not record its run's settings (an older specdec wrote it); start a new run")
    differ = [f"{name} {saved.get(name)!r} (this run: {value!r})" for name, value in settings.items() if saved.get(name) != value]
    if differ:
        raise ValueError(
            f"resume: the checkpoint in {path} was written with other settings: {', '.join(differ)}; "
            "resume with the checkpoint's settings, or train afresh into another checkpoint folder"
        )
