"""Plain greedy decoding's rules, applied token by token inside a speculative step.

Stopping criteria are checked after each emitted token, as ``generate`` does:
length and EOS criteria are read on the host, and every other criterion is called
on the sequence so far, once per token. Logits processors that depend only on the
tokens so far (min length, repetition penalty, bad words, ...) are applied per verified row
with that row's own context, which keeps the output exact at the cost of
materialising those rows' logits; a processor not known to be stateless makes
``generate`` fall back to the original decoding.
"""

import torch
import torch.nn.functional as F
from transformers import generation as hf_generation

_STATELESS_PROCESSORS = (
    "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "EncoderRepetitionPenaltyLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "NoBadWordsLogitsProcessor",
    "SequenceBiasLogitsProcessor",
    "SuppressTokensLogitsProcessor",
    "SuppressTokensAtBeginLogitsProcessor",
    "ForcedEOSTokenLogitsProcessor",
    "InfNanRemoveLogitsProcessor",
    "LogitNormalization",
    "PrefixConstrainedLogitsProcessor",
    # Sampling's warpers: functions of the scores alone.
    "TemperatureLogitsWarper",
    "TopKLogitsWarper",
    "TopPLogitsWarper",
    "MinPLogitsWarper",
    "TypicalLogitsWarper",
    "EpsilonLogitsWarper",
    "EtaLogitsWarper",
)
STATELESS_PROCESSORS = tuple(
    getattr(hf_generation, name) for name in _STATELESS_PROCESSORS if hasattr(hf_generation, name)
)


def unsupported_processor(processors) -> str | None:
    """Name of the first processor that speculative decoding cannot apply exactly, or None."""
    for proc in processors:
        if not isinstance(proc, STATELESS_PROCESSORS):
            return type(proc).__name__
    return None


def active_processors(processors, shortest_context: int) -> list:
    """Processors that can still change a logit when every context has at least ``shortest_context`` tokens."""
    active = []
    for proc in processors:
        if isinstance(proc, hf_generation.MinLengthLogitsProcessor) and shortest_context >= proc.min_length:
            continue
        if isinstance(proc, hf_generation.MinNewTokensLengthLogitsProcessor) and (
            shortest_context - proc.prompt_length_to_skip >= proc.min_new_tokens
        ):
            continue
        active.append(proc)
    return active


def processed_argmax(hidden: torch.Tensor, lm_head: torch.Tensor, processors, contexts: list[list[int]]) -> torch.Tensor:
    """Greedy ids ``[R]`` of rows ``hidden [R, d]`` after ``processors``, row ``r`` in context ``contexts[r]``."""
    logits = F.linear(hidden, lm_head).float()
    ids = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
    for row, context in enumerate(contexts):
        context_ids = torch.tensor([context], dtype=torch.int64, device=logits.device)
        ids[row] = processors(context_ids, logits[row : row + 1]).argmax(dim=-1)[0]
    return ids


class StopChecker:
    """Evaluates ``generate``'s stopping criteria one emitted token at a time."""

    def __init__(self, criteria, max_length: int):
        self.max_length = max_length
        self.eos: set[int] = set()
        self.others = []
        for criterion in criteria:
            if isinstance(criterion, hf_generation.MaxLengthCriteria):
                self.max_length = min(self.max_length, criterion.max_length)
            elif isinstance(criterion, hf_generation.EosTokenCriteria):
                self.eos.update(int(t) for t in criterion.eos_token_id.view(-1).tolist())
            else:
                self.others.append(criterion)

    def stops(self, sequence: torch.Tensor, token: int) -> bool:
        """Whether plain decoding stops right after ``sequence [1, L]``, whose last token is ``token``.

        Every other criterion is called once per token, also when EOS or the length limit
        already stops, as plain ``generate``'s ``StoppingCriteriaList`` calls all of them.
        """
        others = [bool(criterion(sequence, None).any()) for criterion in self.others]
        return token in self.eos or sequence.shape[1] >= self.max_length or any(others)
