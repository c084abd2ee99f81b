"""The command line's ``--model``, ``--tokenizer``, ``--device`` and ``--out``, checked before any work.

Each check raises ``ValueError`` or ``FileExistsError`` with one line that names what is wrong and
what is accepted; :func:`specdec.cli.main` prints it as ``error: ...`` and exits with status 2.
Nothing is downloaded: ``--model`` is a local Hugging Face model folder or a demo name, and a
Hub id is refused like any other name that is not a local folder (fetch the model first, e.g.
``hf download OWNER/NAME --local-dir DIR``, and pass ``DIR``).
"""

from pathlib import Path

import torch

from .demo import DEMOS, demo_paths
from .predictor import CONFIG_NAME
from .train import CHECKPOINT_STATE

ACCEPTED_MODELS = f"a local Hugging Face model folder or a demo name ({', '.join(DEMOS)}); nothing is downloaded"


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
