"""The token-aware draft source: a :class:`~specdec.drafts.head.network.TokenHead` drafts a tree
after every verified step, knowing the token the step ended with.

Per ``generate`` call the source keeps the head's keys and values of every committed pair
``(f_i, x_{i+1})`` (:meth:`HeadDrafts.observe`: the prompt's, then each step's accepted path) and
the head's output ``g`` of the last one, whose LM-head ranking gives the depth-1 drafts (the token
after the step's bonus token). :meth:`HeadDrafts.propose` then drafts deeper, best-first as
EAGLE-2 does: at each depth the ``beam`` nodes of highest path probability are run through the
head together (each seeing the committed pairs, its own ancestors' draft pairs and itself, in one
pass of ``beam`` rows) and each ranks ``width`` children over the draft vocabulary, until the
source's depth or until every path is less likely than ``min_path_prob``. The result is
:attr:`Candidates.tree` (for ``tree="auto"``, which picks what to verify by its acceptance model
and step cost) and each depth's nodes by path probability in :attr:`Candidates.ranked` (for static
trees). The drafts never touch the step's rows: the source adds no pseudo rows (``k = 0``).
"""

import math
from dataclasses import dataclass

import torch

from ... import kernels
from ..base import Candidates, DraftContext, DraftSource, frozen_copy
from .network import TokenHead

MIN_CAPACITY = 256
# Nodes whose draft path probability is below this are not drafted further. A draft pass costs a few
# percent of a step (SmolLM2 on a CPU: one layer of the model's width over a few rows, and the LM head
# over 4096 tokens), worth about 0.1 tokens at a tau near 2.5, and a node deeper than a path of
# probability p adds less than p expected tokens.
MIN_PATH_PROB = 0.1


@dataclass
class HeadState:
    """A call's committed pairs: ``keys``/``values`` ``[1, H, capacity, hd]`` (the first ``length``
    valid) and ``last`` ``[1, d]``, the head's output on the last committed pair."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0
    last: torch.Tensor | None = None


class HeadDrafts(DraftSource):
    """Draft source of a trained token-aware head: ``specdec.patch(model, HeadDrafts(head))``.

    Args:
        head: the :class:`TokenHead` (what :func:`specdec.training.head.train_head` trains).
        width: children ranked per drafted node.
        beam: nodes expanded per depth (the rows of each draft pass).
        min_path_prob: nodes whose path probability (by the head's own estimates) is below it are not
            expanded; drafting stops early when none is left.
    """

    kind = "head"
    reads_states = True

    def __init__(self, head: TokenHead, width: int = 4, beam: int = 4, backend: str = "auto", min_path_prob: float = MIN_PATH_PROB):
        if not isinstance(head, TokenHead):
            raise TypeError(f"HeadDrafts needs a TokenHead, got {type(head).__name__}")
        for name, value in (("width", width), ("beam", beam)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0.0 <= min_path_prob < 1.0:
            raise ValueError(f"min_path_prob must be in [0, 1), got {min_path_prob!r}")
        self.module, self.width, self.beam, self.backend = head, width, beam, backend
        self.min_path_prob, self.min_logp = min_path_prob, math.log(min_path_prob) if min_path_prob > 0 else -math.inf
        self.vocabulary = head.draft_vocab
        self.embed = self.output = None  # the model's input embeddings and LM head modules, set by prepared()

    @property
    def depth(self) -> int:
        return self.module.depth

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, **options) -> "HeadDrafts":
        """Load a head saved by ``TokenHead.save_pretrained``; another source's folder is refused by name."""
        return cls(TokenHead.from_pretrained(path, device, dtype), **options)

    def save_pretrained(self, path) -> None:
        self.module.save_pretrained(path)

    def check_model(self, model) -> None:
        self.module.check_model(model)

    def networks(self) -> list:
        return [self.module]

    def prepared(self, model, backend: str) -> "HeadDrafts":
        ready = HeadDrafts(frozen_copy(self.module, model), self.width, self.beam, backend, self.min_path_prob)
        ready.embed, ready.output = model.get_input_embeddings(), model.get_output_embeddings()
        return ready

    @property
    def lm_head(self) -> torch.Tensor:
        """``[V, d]`` the model's LM head weight, as it is now (a weight replaced after ``patch()`` is read)."""
        return self.output.weight

    def _state(self, context: DraftContext, extra: int) -> HeadState:
        """The call's state, its cache grown (by doubling) to hold ``extra`` more pairs and one spare
        slot (a compiled pass pads a single row with a second one)."""
        state = context.scratch.get(self)
        if state is None:
            state = context.scratch[self] = HeadState(self.module.zero_kv(1, MIN_CAPACITY), self.module.zero_kv(1, MIN_CAPACITY))
        need = state.length + extra + 1
        if need > state.keys.shape[2]:
            capacity = max(need, 2 * state.keys.shape[2])
            grown = [self.module.zero_kv(1, capacity) for _ in range(2)]
            for new, old in zip(grown, (state.keys, state.values)):
                new[:, :, : state.length] = old[:, :, : state.length]
            state.keys, state.values = grown
        return state

    def _pass(self, context: DraftContext, state: HeadState, features, ids: torch.Tensor, positions, start: int, mask) -> torch.Tensor:
        """``g [n, d]``: the head on pairs ``features [n, d]``, ``ids [n]`` (int64) at ``positions [n]``,
        their keys and values written into the state's cache at slots ``start..start + n - 1``;
        ``mask`` (bool ``[n, C]``) is what each pair sees."""
        slots = torch.arange(start, start + ids.shape[0], device=ids.device)
        inputs = (features[None], self.embed(ids)[None], positions, slots, mask, state.keys, state.values)
        return context.run(self.module, *inputs)[0]

    @torch.no_grad()
    def observe(self, context: DraftContext, states, tokens: list[int]) -> None:
        n = states.shape[0]
        state = self._state(context, n)
        device, length = states.device, state.length
        mask = torch.zeros(n, state.keys.shape[2], dtype=torch.bool, device=device)
        mask[:, :length] = True
        mask[:, length : length + n] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        ids = torch.tensor(tokens, dtype=torch.int64, device=device)
        positions = torch.arange(length, length + n, device=device)
        out = self._pass(context, state, states.to(self.module.qkv.weight.dtype), ids, positions, length, mask)
        state.length += n
        state.last = out[-1:]

    def _rank(self, guesses: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
        """Host ``(tokens, logps)`` ``[rows][width]``: each guess's top ``width`` over the draft vocabulary."""
        if self.vocabulary is None:
            ids, logits, lse = kernels.lm_head_topk(guesses, self.lm_head, self.width, backend=self.backend)
        else:
            weight, token_ids = self.vocabulary.rows(self.lm_head)
            ids, logits, lse = kernels.lm_head_topk(guesses, weight, min(self.width, token_ids.numel()), token_ids=token_ids, backend=self.backend)
        host = torch.cat([ids.double(), (logits - lse[:, None]).double()], dim=1).tolist()
        half = ids.shape[1]
        return [[int(t) for t in row[:half]] for row in host], [row[half:] for row in host]

    @torch.no_grad()
    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        state = context.scratch.get(self)
        if state is None or state.last is None:
            return ranked
        tokens, logps = self._rank(state.last)
        # node: (parent, token, logp given the parent, path logp, depth)
        nodes = [(-1, t, lp, lp, 1) for t, lp in zip(tokens[0], logps[0])]
        frontier = list(range(len(nodes)))
        row_of: dict[int, int] = {}  # node -> its draft row (at slot: the state's length + the row)
        outputs = []
        state = self._state(context, self.beam * (self.depth - 1))  # room for every draft row
        device = state.last.device
        for depth in range(2, self.depth + 1):
            expand = [i for i in sorted(frontier, key=lambda i: -nodes[i][3])[: self.beam] if nodes[i][3] >= self.min_logp]
            if not expand:  # every path is already too unlikely to be verified: no more passes
                break
            parents = [nodes[i][0] for i in expand]
            features = torch.stack([state.last[0] if p < 0 else outputs[row_of[p]] for p in parents])
            ids = torch.tensor([nodes[i][1] for i in expand], dtype=torch.int64, device=device)
            start = state.length + len(outputs)
            mask = torch.zeros(len(expand), state.keys.shape[2], dtype=torch.bool)
            mask[:, : state.length] = True
            for r, node in enumerate(expand):
                mask[r, start + r] = True
                ancestor = nodes[node][0]
                while ancestor >= 0:
                    mask[r, state.length + row_of[ancestor]] = True
                    ancestor = nodes[ancestor][0]
            positions = torch.full((len(expand),), state.length + depth - 2, dtype=torch.int64, device=device)
            out = self._pass(context, state, features, ids, positions, start, mask.to(device))
            for r, node in enumerate(expand):
                row_of[node] = len(outputs) + r
            outputs.extend(out.unbind(0))
            tokens, logps = self._rank(out)
            frontier = []
            for r, node in enumerate(expand):
                for t, lp in zip(tokens[r], logps[r]):
                    frontier.append(len(nodes))
                    nodes.append((node, t, lp, nodes[node][3] + lp, depth))
        cands = ranked
        cands.tree = [(parent, token, logp, self.kind) for parent, token, logp, _, _ in nodes]
        by_depth = [[] for _ in range(self.depth)]
        for _, token, _, path, depth in sorted(nodes, key=lambda node: -node[3]):
            if all(token != t for t, _ in by_depth[depth - 1]):
                by_depth[depth - 1].append((token, path))
        cands.ranked = [[t for t, _ in row] for row in by_depth if row]
        cands.logp = [[lp for _, lp in row] for row in by_depth if row]
        cands.kinds = [[self.kind] * len(row) for row in cands.ranked]
        return cands
