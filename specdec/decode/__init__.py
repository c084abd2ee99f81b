"""The decode runtime a patched ``generate`` runs: the loop, verification, planners, cost, acceptance, tree layouts, cache, attention, stopping rules, statistics."""
