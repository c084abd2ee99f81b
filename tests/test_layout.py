"""The package imports in one direction: no module imports another that imports it back, at
module level or inside a function (a lazy import hides a circle, it does not remove it)."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "specdec"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, whether it is a package's ``__init__``) of every module of specdec."""
    found = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (file, is_package)
    return found


def imports(name: str, file: Path, is_package: bool, known: dict) -> set[str]:
    """The specdec modules ``name`` imports anywhere in its file (``from .x import y`` counts as
    ``x.y`` where that is a module, else as ``x``)."""
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module if not node.level else ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in known and module != name}


def related(a: str, b: str) -> bool:
    """A package and a module inside it (a package's ``__init__`` re-exports its children)."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_circles():
    known = modules()
    graph = {name: {d for d in imports(name, *where, known) if not related(name, d)} for name, where in known.items()}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    circles.append(" -> ".join(path + [start]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, path + [dep]))
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def test_the_check_finds_a_lazy_circle(tmp_path, monkeypatch):
    """The check sees imports inside functions (how predictor and maps once imported each other)."""
    pkg = tmp_path / "specdec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from .a import other\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    with pytest.raises(AssertionError, match="specdec.a -> specdec.b -> specdec.a"):
        test_no_import_circles()
