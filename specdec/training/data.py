"""Training data for the predictor: corpus files, tokenisation, packing, batches."""

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
# Control characters other than whitespace (tab, newline, vertical tab, form feed, carriage return).
CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
MAX_CONTROL_SHARE = 0.25
"""A corpus file with more control characters than this share of its characters is not text
(text has next to none; binary data that happens to be valid UTF-8, zeros say, has many)."""


def read_corpus(paths: Sequence[str | Path], text_field: str = "text") -> list[str]:
    """Texts from files, folders (their ``.txt/.md/.rst/.py/.jsonl`` files, recursively) or JSONL.

    A ``.jsonl`` file gives one text per line, from the field ``text_field``.
    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a bad JSONL line or a
    file that is not text (see :func:`read_text`).
    """
    texts = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"corpus path {path} does not exist")
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in (*TEXT_SUFFIXES, ".jsonl")) if path.is_dir() else [path]
        for file in files:
            texts.extend(read_jsonl(file, text_field) if file.suffix == ".jsonl" else [read_text(file)])
    return texts


def read_text(file: Path) -> str:
    """The text of a corpus file; ``ValueError`` naming a file that is not UTF-8 or is more than
    :data:`MAX_CONTROL_SHARE` control characters (binary data)."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus file {file} is not UTF-8 text ({err.reason} at byte {err.start}): pass text, JSONL or folders of them") from None
    controls = len(text) - len(CONTROL.sub("", text))
    if controls > MAX_CONTROL_SHARE * len(text):
        raise ValueError(f"corpus file {file} is not text: {controls / len(text):.0%} of its characters are control characters")
    return text


def read_jsonl(file: Path, text_field: str) -> list[str]:
    """The ``text_field`` strings of a JSONL file's records, one per non-blank line."""
    texts = []
    for number, line in enumerate(read_text(file).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{number}: not JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{file}:{number}: no string field {text_field!r}")
        texts.append(record[text_field])
    return texts


def pack_texts(texts: Sequence[str], tokenizer, seq_len: int, model_config) -> torch.Tensor:
    """Tokenise ``texts``, join them with EOS, and cut ``[N, seq_len]`` sequences (the tail is dropped)."""
    check_tokenizer(tokenizer, model_config)
    check_seq_len(seq_len, getattr(model_config, "max_position_embeddings", None))
    ids: list[int] = []
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for text in texts:
        if text.strip():
            # verbose=False: no "longer than the specified maximum sequence length" warning (the ids are cut into sequences)
            ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + separator)
    count = len(ids) // seq_len
    if count == 0:
        raise ValueError(f"the corpus has {len(ids)} tokens, fewer than one sequence of seq_len={seq_len}")
    return torch.tensor(ids[: count * seq_len], dtype=torch.int64).view(count, seq_len)


def check_seq_len(seq_len: int, max_positions: int | None) -> None:
    """Raise ``ValueError`` if sequences of ``seq_len`` tokens do not fit the model's positions (None: no limit)."""
    if max_positions is not None and seq_len > max_positions:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_position_embeddings {max_positions}")


def check_tokenizer(tokenizer, model_config) -> None:
    """Raise ``ValueError`` if the tokenizer can produce ids the model does not have."""
    if len(tokenizer) > model_config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {model_config.vocab_size}: "
            "they do not belong together"
        )


def as_sequences(model, data, tokenizer, seq_len: int) -> torch.Tensor:
    """Packed int64 ``[N, T]`` from texts or token ids; clear errors for empty or mismatched input."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.numel() == 0:
            raise ValueError(f"token batches must be a non-empty [N, T] tensor, got shape {tuple(data.shape)}")
        if int(data.max()) >= model.config.vocab_size or int(data.min()) < 0:
            raise ValueError(f"token ids must be in [0, {model.config.vocab_size}) for this model")
        return data.long()
    texts = list(data)
    if not texts or not any(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("the corpus is empty: no non-blank text")
    if tokenizer is None:
        raise ValueError("texts need a tokenizer: pass tokenizer=")
    return pack_texts(texts, tokenizer, seq_len, model.config)


def batch_at(sequences: torch.Tensor, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The batch ``[B, T]`` of training step ``step``: epochs are seeded shuffles, so resuming needs only the step."""
    count = sequences.shape[0]
    per_epoch = max(1, count // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return sequences[order[index * batch_size : (index + 1) * batch_size]]
