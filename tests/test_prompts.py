"""The SmolLM2 prompt sets: valid, several hundred distillation requests, and no evaluation prompt among them."""

from pathlib import Path

from specdec.demo.run import CHAT_PROMPTS
from specdec.training.distill import read_prompts

PROMPTS = Path(__file__).resolve().parents[1] / "bench" / "prompts"


def test_evaluation_and_demo_prompts_are_held_out_of_the_distillation_set():
    distill = read_prompts(PROMPTS / "distill.jsonl")
    chats = {r["prompt"].strip().lower() for r in distill if "prompt" in r}
    assert len(chats) >= 400 and sum("prefix" in r for r in distill) >= 100
    held_out = [r["prompt"] for r in read_prompts(PROMPTS / "eval-chat.jsonl")] + list(CHAT_PROMPTS)
    assert len(held_out) >= 24
    assert not [p for p in held_out if p.strip().lower() in chats]


def test_self_written_requests_are_new_and_hold_no_evaluation_prompt():
    """``distill-self.jsonl`` (requests SmolLM2 wrote, more code prefixes) repeats no request or prefix of
    ``distill.jsonl`` and none of the evaluation or demo prompts."""
    first = read_prompts(PROMPTS / "distill.jsonl")
    second = read_prompts(PROMPTS / "distill-self.jsonl")
    new_chats = [r["prompt"].strip().lower() for r in second if "prompt" in r]
    assert len(new_chats) >= 500 and len(set(new_chats)) == len(new_chats)
    assert not set(new_chats) & {r["prompt"].strip().lower() for r in first if "prompt" in r}
    assert not {r["prefix"] for r in second if "prefix" in r} & {r["prefix"] for r in first if "prefix" in r}
    held_out = {p.strip().lower() for p in [r["prompt"] for r in read_prompts(PROMPTS / "eval-chat.jsonl")] + list(CHAT_PROMPTS)}
    assert not held_out & set(new_chats)
