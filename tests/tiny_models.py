"""Tiny random models of every supported architecture, built in milliseconds.

Sizes are deliberately odd: vocabularies that are not multiples of anything,
MHA and GQA, head dims other than 64, q/k/v biases (Qwen2), q/k norms (Qwen3),
and sliding windows short enough to matter within a test (Mistral, Qwen2).
"""

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

NUM_LAYERS = 4

SPECS = {
    "llama-gqa": (LlamaConfig, LlamaForCausalLM, dict(vocab_size=101, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)),
    "llama-mha": (LlamaConfig, LlamaForCausalLM, dict(vocab_size=263, hidden_size=48, num_attention_heads=4, num_key_value_heads=4)),
    "mistral-window": (
        MistralConfig,
        MistralForCausalLM,
        dict(vocab_size=131, hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=8, sliding_window=7),
    ),
    "qwen2-bias": (
        Qwen2Config,
        Qwen2ForCausalLM,
        dict(vocab_size=151, hidden_size=40, num_attention_heads=5, num_key_value_heads=1, use_sliding_window=True, sliding_window=9, max_window_layers=2),
    ),
    "qwen3-norm": (
        Qwen3Config,
        Qwen3ForCausalLM,
        dict(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    ),
}
ARCHS = tuple(SPECS)


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A randomly initialised ``*ForCausalLM`` in eval mode (``arch`` is a key of ``SPECS``)."""
    config_cls, model_cls, kwargs = SPECS[arch]
    settings = {**kwargs, **overrides}
    defaults = dict(num_hidden_layers=NUM_LAYERS, intermediate_size=2 * settings["hidden_size"] + 6)
    config = config_cls(max_position_embeddings=512, tie_word_embeddings=False, **{**defaults, **settings})
    torch.manual_seed(seed)
    model = model_cls(config)
    # Sharper weights than the default init give peaked, less tie-prone logits.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(2.5)
    return model.to(dtype).eval()


def prompt(model, length: int, seed: int) -> torch.Tensor:
    """Random prompt ``[1, length]`` of token ids."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (1, length), generator=gen)


def tiny_tokenizer(vocab_size: int = 90):
    """A byte-level BPE tokenizer trained in memory on a few lines of code (eos ``<eos>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(SAMPLE_CODE, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")


SAMPLE_CODE = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nprint(os.path.join('a', 'b'))\n",
] * 8
