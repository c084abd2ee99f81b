"""What every benchmark records: the device, library versions, the date, and CSV rows."""

import csv
import datetime
import re
from pathlib import Path

import torch
import transformers

RESULTS = Path(__file__).resolve().parent / "results"


def device_names(device: torch.device) -> tuple[str, str]:
    """``(name, slug)`` of a device, e.g. ``("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3")`` or ``("CPU", "cpu")``."""
    if device.type != "cuda":
        return "CPU", "cpu"
    name = torch.cuda.get_device_name(device)
    return name, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment() -> dict:
    """Library versions and the UTC date of the run."""
    import triton

    return {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
