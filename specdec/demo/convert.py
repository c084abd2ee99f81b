"""GGUF checkpoint -> plain Hugging Face safetensors folder (dequantized, fp32).

transformers dequantizes a GGUF file on load, but refuses to ``save_pretrained``
the result (it is marked "quantized with gguf"). :func:`plain_copy` rebuilds the
same architecture from its config without ``quantization_config`` and loads the
state dict into it, which saves normally. :func:`convert_gguf` does the whole
conversion into a temporary folder next to the target and renames it at the end,
so an interrupted conversion never leaves a half-written model behind.
"""

import shutil
import tempfile
from pathlib import Path

import torch


def plain_copy(model):
    """A fresh, unquantized ``*ForCausalLM`` of ``model``'s class with the same weights (and tied weights).

    Args:
        model: a model loaded from GGUF (its config carries ``quantization_config``), or any
            ``PreTrainedModel``.
    Returns:
        The copy, in eval mode, with ``model``'s dtype and generation config.
    """
    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = model.dtype
    with torch.device("meta"):
        copy = model.__class__(config)
    copy.load_state_dict(model.state_dict(), assign=True)
    copy.tie_weights()
    copy.generation_config = model.generation_config
    return copy.eval()


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantize ``gguf_path`` into ``out_dir``: fp32 ``model.safetensors``, config, tokenizer.

    Returns ``out_dir``. Raises ``FileNotFoundError`` when the GGUF file is missing and
    ``FileExistsError`` when ``out_dir`` already exists.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; delete it to convert again")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        source = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        plain_copy(source).save_pretrained(work)
        tokenizer.save_pretrained(work)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir
