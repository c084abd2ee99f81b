"""The candidate tree of ``tree="auto"``: every step's candidates expanded best-first (EAGLE-2
style) into draft nodes ordered by path probability, parents first (see :mod:`specdec.decode.planner`)."""

import heapq
import math

from ..drafts import Candidates
from .memory import DraftingMemory

AUTO_MAX_NODES = 48
MIN_PATH_PROB = 0.005
FREE = frozenset({"exit", "head"})  # ranked kinds that need no pseudo rows

Node = tuple  # (path probability, parent row, token, acceptance key)


def expand(cands: Candidates, memory: DraftingMemory, max_depth: int, use: frozenset | None = None, realistic: bool = True) -> list[Node]:
    """Candidate nodes best-first: ``(path probability, parent row, token, key)``, parents first.

    A node's path probability is its parent's times its conditional acceptance. The ranked tokens
    at depth ``j`` hang under every depth ``j - 1`` node, the lookup chain continues under its own
    nodes (down to ``max_depth``), and a chain token that is also ranked is one node. A source's
    explicit tree (``cands.tree``, the token-aware head's) replaces the ranking by depth: its
    nodes hang under their own parents. Ranked tokens count only if their kind is in ``use``
    (None: all; :data:`FREE`: the early exit's and the head's, which a step has whatever rows it
    carries). Conditional acceptances are scaled by their kind's realism
    unless ``realistic`` is False (exploration).
    """
    acceptance = memory.acceptance

    def prob(key: tuple) -> float:
        return acceptance.prob(key) * (memory.realism(key[0]) if realistic else 1.0)

    by_depth = []  # per depth: token -> (conditional probability, key, draft probability)
    for depth, (tokens, logps) in enumerate(zip(cands.ranked, cands.logp), start=1):
        kinds = cands.kinds[depth - 1] if cands.kinds else ["firp"] * len(tokens)
        row = {}
        for token, logp, kind in zip(tokens, logps, kinds):
            if token not in row and (use is None or kind in use):
                draft = math.exp(logp)
                key = acceptance.ranked_key(kind, depth, draft)
                row[token] = (prob(key), key, draft)
        by_depth.append(row)
    tree_kids = _tree_children(cands, acceptance, prob, use)
    chain, ngram = cands.chain[:max_depth], cands.chain_ngram
    children: dict[tuple, list[tuple]] = {}

    def kids(depth: int, on_chain: bool, branch: int | None) -> list[tuple]:
        """``(conditional probability, token, key, on chain, tree node)`` of the children of a node at
        ``depth`` (``branch``: its index in ``cands.tree``, -1 for the root, None off the tree)."""
        cached = children.get((depth, on_chain, branch))
        if cached is not None:
            return cached
        if cands.tree:
            ranked = tree_kids.get(branch, {}) if branch is not None else {}
        else:
            ranked = {token: (p, key, draft, None) for token, (p, key, draft) in by_depth[depth].items()} if depth < len(by_depth) else {}
        found = {token: (p, token, key, False, index) for token, (p, key, _, index) in ranked.items()}
        if on_chain and depth < len(chain):
            token = chain[depth]
            if token in ranked:
                key = acceptance.ranked_key("both", depth + 1, ranked[token][2])
                found[token] = (prob(key), token, key, True, ranked[token][3])
            else:
                key = acceptance.chain_key(depth + 1, ngram)
                found[token] = (prob(key), token, key, True, None)
        result = list(found.values())
        total = sum(child[0] for child in result)
        if total > 1:  # siblings carry different tokens: at most one of them is accepted
            result = [(p / total, *rest) for p, *rest in result]
        children[(depth, on_chain, branch)] = result
        return result

    heap, order = [], 0
    for p, token, key, on_chain, branch in kids(0, True, -1):
        heap.append((-p, order, 0, 1, token, key, on_chain, branch))
        order += 1
    heapq.heapify(heap)
    nodes = []
    while heap and len(nodes) < AUTO_MAX_NODES:
        neg_prob, _, parent, depth, token, key, on_chain, branch = heapq.heappop(heap)
        if -neg_prob < MIN_PATH_PROB:
            break
        nodes.append((-neg_prob, parent, token, key))
        if depth < max_depth:
            row = len(nodes)
            for p, child, child_key, child_on_chain, child_branch in kids(depth, on_chain, branch):
                heapq.heappush(heap, (neg_prob * p, order, row, depth + 1, child, child_key, child_on_chain, child_branch))
                order += 1
    return nodes


def _tree_children(cands: Candidates, acceptance, prob, use) -> dict:
    """``cands.tree`` as ``parent index -> {token: (conditional probability, key, draft probability,
    index)}`` (first of equal siblings kept; nodes of kinds outside ``use`` dropped with their subtrees)."""
    depth_of, kept, children = {-1: 0}, {-1}, {}
    for index, (parent, token, logp, kind) in enumerate(cands.tree):
        if parent not in kept or (use is not None and kind not in use):
            continue
        depth_of[index] = depth = depth_of[parent] + 1
        siblings = children.setdefault(parent, {})
        if token not in siblings:
            draft = math.exp(logp)
            key = acceptance.ranked_key(kind, depth, draft)
            siblings[token] = (prob(key), key, draft, index)
            kept.add(index)
    return children


def likeliest_end(nodes: list[Node]) -> int:
    """The real row (0: the root, ``m + 1``: node ``m``) where the walk most likely ends."""
    end = [1.0] + [node[0] for node in nodes]
    for prob, parent, _, _ in nodes:
        end[parent] -= prob
    return max(range(len(end)), key=end.__getitem__)
