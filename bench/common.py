"""What every benchmark records (the device, library versions, the date, CSV rows), and a guard
that keeps other processes' work out of CPU timings."""

import csv
import datetime
import os
import re
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

RESULTS = Path(__file__).resolve().parent / "results"


def device_names(device: torch.device) -> tuple[str, str]:
    """``(name, slug)`` of a device, e.g. ``("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3")`` or ``("CPU", "cpu")``."""
    if device.type != "cuda":
        return f"CPU ({cpu_model()})", "cpu"
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``"unknown"``."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def others_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy, minus this process's own (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy - own.ru_utime - own.ru_stime


QUIET_SHARE = 0.05  # other processes may use at most this share of one core during a timed call
QUIET_TRIES = 20


def timed_quietly(fn: Callable[[], object]) -> tuple[object, float]:
    """``(result, seconds)`` of ``fn()``, timed when no other process was busy.

    On a CPU a benchmark's threads share the cores with everything else, so a call during which
    other processes used more than :data:`QUIET_SHARE` of a core is run again (after waiting for the
    machine to settle), up to :data:`QUIET_TRIES` times; then the last timing is kept, with a warning.
    Where ``/proc/stat`` is missing, ``fn`` is simply timed.
    """
    if not os.path.exists("/proc/stat"):
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start
    for attempt in range(QUIET_TRIES):
        others, start = others_cpu_seconds(), time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        if others_cpu_seconds() - others <= QUIET_SHARE * seconds:
            return result, seconds
        settle()
    print(f"warning: other processes were busy during all {QUIET_TRIES} tries of a timed call")
    return result, seconds


def settle(window: float = 1.0, timeout: float = 600.0) -> None:
    """Wait until other processes used under :data:`QUIET_SHARE` of a core for ``window`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        others = others_cpu_seconds()
        time.sleep(window)
        if others_cpu_seconds() - others <= QUIET_SHARE * window:
            return
