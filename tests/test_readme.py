"""Every python block of README.md runs as written (training shortened to a few steps)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.S | re.M)
TRAIN_STEPS = "steps=300"
SHORT_STEPS = "steps=2"


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_block_runs(index, tmp_path, monkeypatch, one_thread):
    """The block runs in a fresh namespace in an empty folder; only ``steps=300`` becomes ``steps=2``."""
    code = BLOCKS[index]
    assert code.count("train_predictor(") == code.count(TRAIN_STEPS), f"each train_predictor call in the block should pass {TRAIN_STEPS}"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(TRAIN_STEPS, SHORT_STEPS), f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
