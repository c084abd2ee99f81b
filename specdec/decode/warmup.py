"""The explicit warm-up of a patched model (:func:`specdec.warmup`): the step timed at chosen row counts.

Decoding never times anything for its own sake (:mod:`specdec.decode.cost`), so a fresh
``patch()`` plans plain steps until its first steps have measured what rows cost. A server that
can spend a second before its first request calls ``specdec.warmup(model)`` instead: it makes what
the first call would make (the packed weights, or with ``compile=True`` the compiled step and the
draft head's compiled pass) and runs one step per row count on a scratch cache, each a chain of
draft nodes (the rows of a real step, no pseudo rows), timed as the best of a few.
"""

import time

import torch

from .. import kernels
from ..drafts import Candidates, DraftContext, DraftSource
from .loop import EagerStep, ModelParts
from .tree import StepLayout

REPEATS = 3


def time_steps(parts: ModelParts, rows: list[int], prompt_tokens: int, backend: str, steps=EagerStep, drafts: DraftSource | None = None) -> dict[int, float]:
    """``{rows: seconds}``: the best of :data:`REPEATS` steps of each row count over a cached prefix of
    ``prompt_tokens`` random tokens (the step as decoding runs it: forward pass, LM-head argmax, one
    host read), through ``steps`` (the loop's step factory: eager, or compiled, which compiles here,
    the program ``drafts`` needs).
    A ``drafts`` source that reads the states (the token-aware head) first observes the prefix and
    drafts once, untimed, so its network's compiled pass is ready too."""
    device = parts.lm_head.device
    vocab = parts.lm_head.shape[0]
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(vocab, (prompt_tokens + max(rows),), generator=generator).to(device)
    source = drafts if drafts is not None else DraftSource()
    with steps.open(parts, backend, prompt_tokens + max(rows), source) as step:
        states = step.prefill(tokens[:prompt_tokens], drafts is not None and drafts.reads_states)
        if states is not None:
            context = DraftContext(tokens[:prompt_tokens].tolist(), run=step.run_network)
            drafts.observe(context, states, tokens[1 : prompt_tokens + 1].tolist())
            drafts.propose(context, Candidates())
        seconds = {}
        for count in rows:
            layout = StepLayout.of(tuple(range(count - 1)), (), 0, device)  # a chain: root and count - 1 nodes
            root, nodes = tokens[prompt_tokens : prompt_tokens + 1], tokens[prompt_tokens + 1 : prompt_tokens + count]
            samples = []
            for _ in range(REPEATS + 1):  # the first run of a row count is a warm-up of its own
                start = time.perf_counter()
                hidden, _ = step.forward(source, layout, root, nodes, prompt_tokens)
                kernels.lm_head_argmax(hidden, parts.lm_head, backend=backend)[0].tolist()
                samples.append(time.perf_counter() - start)
                step.truncate(prompt_tokens)
            seconds[count] = min(samples[1:])
    return seconds
