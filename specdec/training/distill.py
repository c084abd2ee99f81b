"""Self-distillation data: the model's own responses to a prompt set (the EAGLE / HASS / Medusa-2 recipe).

Prompt files are JSONL, one record per line:

- ``{"id": "chat-0001", "prompt": "Explain recursion."}``: a user message, rendered with the
  tokenizer's chat template (generation prompt added);
- ``{"id": "code-0001", "prefix": "import os\\n..."}``: raw text, continued as it is.

The output is JSONL with one record per (prompt, sample): ``{"id", "sample", "text",
"new_tokens", "temperature"}``, where ``text`` is the rendered prompt followed by the
response (special tokens kept, the end-of-turn token included when the model stopped), so
``python -m specdec train --data out.jsonl`` reads it directly. Records are appended batch by
batch; a resumed run skips the (id, sample) pairs already in the file.
"""

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..decode.packing import PackedWeights, PlainWeights


def read_prompts(path: str | Path) -> list[dict]:
    """Validated prompt records of a JSONL file (see the module docstring); unique ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    records, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err})") from None
        kinds = [key for key in ("prompt", "prefix") if isinstance(record, dict) and isinstance(record.get(key), str)]
        if len(kinds) != 1 or not isinstance(record.get("id"), str) or not record[kinds[0]].strip():
            raise ValueError(f"{path}:{number}: need a string 'id' and exactly one non-empty string 'prompt' or 'prefix'")
        if record["id"] in seen:
            raise ValueError(f"{path}:{number}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        records.append(record)
    if not records:
        raise ValueError(f"prompt file {path} has no records")
    return records


def render(record: dict, tokenizer) -> str:
    """The text the model continues: the chat-templated user message, or the raw prefix."""
    if "prefix" in record:
        return record["prefix"]
    if not tokenizer.chat_template:
        raise ValueError(f"prompt {record['id']!r} is a chat message but the tokenizer has no chat template")
    messages = [{"role": "user", "content": record["prompt"]}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def done_keys(out: Path) -> set[tuple[str, int]]:
    """(id, sample) pairs already written to ``out``."""
    keys = set()
    for number, line in enumerate(out.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                keys.add((record["id"], record["sample"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{out}:{number}: not a distillation record; cannot resume from it") from None
    return keys


def response_text(tokens: torch.Tensor, tokenizer, stop_ids: set[int]) -> tuple[str, int]:
    """Decode new tokens ``[N]`` (int64) up to and including the first stop token; ``(text, count)``."""
    ids = tokens.tolist()
    for index, token in enumerate(ids):
        if token in stop_ids:
            ids = ids[: index + 1]
            break
    return tokenizer.decode(ids, skip_special_tokens=False), len(ids)


@torch.no_grad()
def distill(
    model,
    tokenizer,
    records: list[dict],
    out: str | Path,
    *,
    temperature: float = 0.5,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    samples: int = 1,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
    packed: bool = True,
) -> int:
    """Generate ``samples`` responses per prompt record and append them to the JSONL file ``out``.

    Batches are left-padded and formed from prompts of similar length; sampling uses the
    plain softmax at ``temperature`` (0: greedy), with no top-k/top-p. A tokenizer without a pad
    token pads with its eos token (set on ``tokenizer``). Each batch is seeded
    from ``seed`` and its first record, so a resumed run draws what an uninterrupted one would
    for the same batch. ``packed``: on a CPU, run the model's linear layers on oneDNN-packed weights
    (:mod:`specdec.decode.packing`; a batch of rows then costs little more than one row) where they
    apply; the responses are samples either way, but their rounding differs from unpacked decoding.
    Returns the number of records written by this call.
    """
    if temperature < 0 or max_new_tokens < 1 or batch_size < 1 or samples < 1:
        raise ValueError("need temperature >= 0, max_new_tokens >= 1, batch_size >= 1 and samples >= 1")
    out = Path(out)
    if out.exists() and out.stat().st_size and not resume:
        raise FileExistsError(f"{out} already has records: pass resume=True (--resume) to continue it")
    done = done_keys(out) if out.exists() else set()
    texts = {r["id"]: render(r, tokenizer) for r in records}
    lengths = {key: len(tokenizer(text, add_special_tokens=False).input_ids) for key, text in texts.items()}
    todo = sorted(((r["id"], s) for r in records for s in range(samples) if (r["id"], s) not in done), key=lambda key: (lengths[key[0]], key))
    eos = model.generation_config.eos_token_id
    stop_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    device = next(model.parameters()).device
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    bar = tqdm(total=len(todo), disable=not progress, desc="distill", unit="resp")
    head = model.get_output_embeddings().weight
    weights = PackedWeights().for_step(model, head) if packed else PlainWeights()
    with open(out, "a") as sink, weights.active(model, head):
        for begin in range(0, len(todo), batch_size):
            batch = todo[begin : begin + batch_size]
            encoded = tokenizer([texts[key] for key, _ in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + sum(map(ord, f"{batch[0][0]}#{batch[0][1]}")))
            generated = model.generate(**encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
            new = generated[:, encoded.input_ids.shape[1] :].cpu()
            tokens = 0
            for (key, sample), row in zip(batch, new):
                text, count = response_text(row, tokenizer, stop_ids)
                record = {"id": key, "sample": sample, "text": texts[key] + text, "new_tokens": count, "temperature": temperature}
                sink.write(json.dumps(record) + "\n")
                tokens += count
            sink.flush()
            written += len(batch)
            bar.update(len(batch))
            bar.set_postfix_str(f"{tokens / len(batch):.0f} new tokens/resp")
    bar.close()
    return written
