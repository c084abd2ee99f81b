"""Every python block of README.md and docs/*.md runs as written (training shortened to a few steps)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
TRAIN_STEPS = "steps=300"
SHORT_STEPS = "steps=2"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


BLOCKS = python_blocks(README)
CASES = [(page, index, code) for page in PAGES for index, code in enumerate(python_blocks(page))]


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


def test_docs_pages_exist():
    names = {page.name for page in PAGES if page.parent.name == "docs"}
    assert {"README.md", "method.md", "auto-tree.md", "training.md", "kernels.md", "exactness.md",
            "results.md", "demo-models.md", "layout.md"} <= names


@pytest.mark.parametrize(
    "page, index, code",
    CASES,
    ids=[f"{page.relative_to(ROOT).as_posix()}-block{index}" for page, index, _ in CASES],
)
def test_python_block_runs(page, index, code, tmp_path, monkeypatch, one_thread):
    """The block runs in a fresh namespace in an empty folder; only ``steps=300`` becomes ``steps=2``."""
    name = page.relative_to(ROOT).as_posix()
    assert code.count("train_predictor(") == code.count(TRAIN_STEPS), f"each train_predictor call in {name} block {index} should pass {TRAIN_STEPS}"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(TRAIN_STEPS, SHORT_STEPS), f"{name} python block {index}", "exec"), {"__name__": "__readme__"})
