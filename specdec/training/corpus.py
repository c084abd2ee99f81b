"""Offline text corpus for the bundled demo model: the running Python's standard library.

Every machine with Python has this text, so the demo model can be trained and
benchmarked without any download. Files are split into a train and a held-out
set by a hash of their path relative to the stdlib root, so the split is the
same on every machine that has the same files.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages"})
"""Path components whose files are left out (test suites and installed packages)."""

HELDOUT_THRESHOLD = 13
"""A file is held out when the first byte of its path hash is below this (about 5%)."""

SPLITS = ("train", "heldout", "all")


def stdlib_root() -> Path:
    """Return the directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(relpath: str) -> bool:
    """Return True when the file at ``relpath`` (POSIX, relative to the root) is held out."""
    return hashlib.sha256(relpath.encode()).digest()[0] < HELDOUT_THRESHOLD


def _is_utf8(path: Path) -> bool:
    """Return True when the file's bytes decode as UTF-8."""
    try:
        path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return False
    return True


def _candidate_files(root: Path) -> list[tuple[str, Path]]:
    """Return ``(relpath, path)`` for every non-test ``.py`` file under ``root``, sorted."""
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(rel.parts[:-1]) or not path.is_file():
            continue
        found.append((rel.as_posix(), path))
    return sorted(found)


def stdlib_files(split: str = "train", root: Path | None = None) -> list[Path]:
    """Return the stdlib ``.py`` files of ``split`` ("train", "heldout" or "all"), sorted by relative path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = stdlib_root() if root is None else Path(root)
    files = []
    for rel, path in _candidate_files(root):
        if split != "all" and is_heldout(rel) != (split == "heldout"):
            continue
        if _is_utf8(path):
            files.append(path)
    return files


def read_texts(files: list[Path]) -> list[str]:
    """Return the UTF-8 text of each file, in order."""
    return [Path(f).read_text(encoding="utf-8") for f in files]
