"""``tree="auto"`` makes the same plans as the planner that recorded ``tests/data/planner-record.json``.

The record holds every plan (draft tokens, parents, rows carrying pseudo rows, cost segments) of a
fixed scenario on a simulated device (steps take what a pinned cost curve says, so nothing depends
on this machine's timings): FIRP with lookup on repeated text, a second call on other text (the
evidence of the first call fades), and drafts that are always right then always wrong (the realism
and the exploration). Any change to the planner's decisions shows here; a deliberate one rewrites
the record with ``python tests/test_planner_record.py`` and says why in its commit.
"""

import json
from pathlib import Path

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from simulated_device import pin_cost
from specdec import FIRPDrafts, ForcedDrafts
from specdec.decode.planner import AutoPlanner
from tiny_models import prompt, tiny_model

RECORD = Path(__file__).resolve().parent / "data" / "planner-record.json"


def cpu_like(rows: int) -> float:
    """Seconds of a step of ``rows`` rows on a CPU-like device (a jump past one row, then a slope)."""
    return 0.05 * (1.0 if rows == 1 else 1.4 + 0.03 * rows)


def gpu_like(rows: int) -> float:
    """Seconds of a step of ``rows`` rows on a GPU-like device (rows nearly free): wide trees."""
    return 0.02 * (1.0 + 0.004 * rows)


def recorded_plans(monkeypatch) -> list[dict]:
    """Every plan :class:`AutoPlanner` makes in the scenario on both devices, in order."""
    plans = []
    plan = AutoPlanner.plan

    def recording(planner, cands):
        chosen = plan(planner, cands)
        plans.append({"tokens": chosen.tokens, "parents": list(chosen.layout.parents), "owners": list(chosen.layout.owners),
                      "segments": [list(segment) for segment in chosen.segments]})
        return chosen

    monkeypatch.setattr(AutoPlanner, "plan", recording)
    for device in (cpu_like, gpu_like):
        with monkeypatch.context() as patcher:
            run_scenario(patcher, device)
    return plans


def run_scenario(monkeypatch, seconds) -> None:
    """The scenario's ``generate`` calls on a device whose steps take ``seconds(rows)``."""
    model = tiny_model("llama-gqa", seed=11)
    pin_cost(model, monkeypatch, seconds, measured=False)
    text = prompt(model, 10, seed=12)
    predictor = perturbed_predictor(model, 1, 3, seed=4)
    specdec.patch(model, predictor)
    for ids in (torch.cat([text, text, text[:, :4]], dim=1), prompt(model, 14, seed=13)):
        model.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=None)
    ids = prompt(model, 9, seed=14)
    plain = model.generate(ids, max_new_tokens=60, do_sample=False, eos_token_id=None)[0].tolist()
    for correct in (True, False):
        source = ForcedDrafts(FIRPDrafts(predictor), plain, model.config.vocab_size, correct=correct, chain_depth=5)
        specdec.patch(model, source)
        model.generate(ids, max_new_tokens=60, do_sample=False, eos_token_id=None)


def test_auto_planner_makes_the_recorded_plans(monkeypatch):
    record = json.loads(RECORD.read_text())
    plans = recorded_plans(monkeypatch)
    assert len(plans) == len(record)
    for step, (made, expected) in enumerate(zip(plans, record)):
        assert made == expected, f"plan {step} differs from the record"
    assert any(len(p["owners"]) > 1 for p in plans) and any(len(p["tokens"]) > 16 for p in plans)  # two owners, wide trees


if __name__ == "__main__":
    with pytest.MonkeyPatch.context() as patcher:
        RECORD.write_text(json.dumps(recorded_plans(patcher)) + "\n")
    print(f"wrote {RECORD}")
