"""FIRP's learned parts: the pseudo-row source, the predictor (linear maps), richer maps, adapters, the draft vocabulary."""
