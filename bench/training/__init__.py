"""Training studies: the demo's build, SmolLM2's predictor, the seed methods, map variants, the draft vocabulary."""
