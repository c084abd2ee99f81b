"""Training draft sources: training loop, corpus reading, self-distillation, layer sweep, the demo corpus."""
