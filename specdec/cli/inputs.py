"""The command line's arguments, checked before any work: numbers against their bounds, ``--model``,
``--tokenizer``, ``--device``, ``--out``, and the model folder's ``config.json`` (read as JSON).

Each check raises ``ValueError`` or ``FileExistsError`` with one line that names what is wrong and
what is accepted; :func:`specdec.cli.main` prints it as ``error: ...`` and exits with status 2.
Nothing is downloaded: ``--model`` is a local Hugging Face model folder or a demo name, and a
Hub id is refused like any other name that is not a local folder (fetch the model first, e.g.
``hf download OWNER/NAME --local-dir DIR``, and pass ``DIR``).
"""

import contextlib
import json
import math
from pathlib import Path
from typing import NamedTuple

import torch

from ..demo import DEMOS, demo_paths
from ..drafts.firp.predictor import CONFIG_NAME, is_int
from ..training.train import CHECKPOINT_STATE

ACCEPTED_MODELS = f"a local Hugging Face model folder or a demo name ({', '.join(DEMOS)}); nothing is downloaded"


class Bound(NamedTuple):
    """The lowest value a numeric option accepts (see :func:`check_bounds`)."""

    flag: str
    low: float
    above: bool = False
    """The value must exceed ``low``, not just reach it."""
    note: str = ""
    """What the edge value means, e.g. ``" (0: skip)"``."""


def check_bounds(args, bounds) -> None:
    """Raise ``ValueError`` naming the first of ``bounds`` whose argument in ``args`` is below it (or
    not finite); an argument left unset (None) passes."""
    for bound in bounds:
        value = getattr(args, bound.flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if not (math.isfinite(value) and (value > bound.low if bound.above else value >= bound.low)):
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ValueError(f"{bound.flag} takes {kind} {'>' if bound.above else '>='} {bound.low}{bound.note}, got {value}")


@contextlib.contextmanager
def flag_errors(flag: str):
    """Inside: a ``ValueError`` is raised again with ``flag`` in front of its message."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def parse_positions(text: str) -> int | None:
    """``--positions``: a count >= 1 of positions sampled per sequence, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--positions takes a count >= 1 of positions sampled per sequence, or 'all'; got {text!r}")
    return count


def model_config(folder: Path) -> dict:
    """The model folder's ``config.json`` as a dict, read as JSON: no model code runs, nothing is loaded."""
    file = folder / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--model: {file} is not a JSON model config ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--model: {file} is not a JSON model config (no object at the top)")
    return config


def config_int(config: dict, key: str) -> int | None:
    """An int field of a model's ``config.json``; None when absent (the checks that need it wait for the model)."""
    value = config.get(key)
    return value if is_int(value) else None


def model_folder(name: str) -> Path:
    """The folder of ``--model``: a demo's folder, or ``name`` itself when it is a model folder."""
    if name in DEMOS:
        return demo_paths(name)[0]
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"--model {name}: no such folder and not a demo name; --model takes {ACCEPTED_MODELS} "
            "(for a Hub model run `hf download OWNER/NAME --local-dir DIR` first and pass DIR)"
        )
    if not (path / "config.json").is_file():
        raise ValueError(f"--model {name}: the folder has no config.json; --model takes {ACCEPTED_MODELS}")
    return path


def tokenizer_folder(name: str) -> Path:
    """The folder of ``--tokenizer`` (a local folder only)."""
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ValueError(f"--tokenizer {name}: no such folder; --tokenizer takes a local tokenizer folder")
    return path


def usable_devices() -> list[str]:
    """The devices this machine can run on, for error messages."""
    devices = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def checked_device(name: str) -> torch.device:
    """``--device`` as a ``torch.device`` after allocating on it (CUDA on a CPU-only machine is refused)."""
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"--device {name} is not usable here ({reason}); usable: {', '.join(usable_devices())}") from None
    return device


def check_train_output(out: Path, checkpoints: Path, resume: bool, force: bool) -> None:
    """Refuse, unless ``force``, to overwrite a predictor in ``out`` or to start a new run over a checkpoint."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; --out takes a folder for the predictor")
    if force:
        return
    if (out / CONFIG_NAME).is_file():
        raise FileExistsError(f"--out {out} already holds a predictor: pass --force to overwrite it, or choose another --out")
    if not resume and checkpoints.is_dir() and any(checkpoints.rglob(CHECKPOINT_STATE)):
        raise FileExistsError(f"{checkpoints} already holds a checkpoint: pass --resume to continue that run, or --force to start over")
