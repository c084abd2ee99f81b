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
