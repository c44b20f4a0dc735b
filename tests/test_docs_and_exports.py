"""Every package says what lives in it and what it exports; every public class says what it is."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "consumers", "detectors", "chaos", "dashboards")
INITS = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")
               if "tests" not in p.relative_to(ROOT).parts)


def _name(init: Path) -> str:
    return ".".join(init.parent.relative_to(ROOT).parts)


@pytest.mark.parametrize("init", INITS, ids=_name)
def test_each_package_has_a_docstring_and_all_of_its_public_names(init: Path) -> None:
    package = importlib.import_module(_name(init))
    assert (package.__doc__ or "").strip(), f"{_name(init)}: no docstring"
    exported = getattr(package, "__all__", None)
    assert exported, f"{_name(init)}: no __all__"
    for name in exported:  # a name of the package, or one of its modules
        assert hasattr(package, name) or (init.parent / f"{name}.py").exists() \
            or (init.parent / name / "__init__.py").exists(), f"{_name(init)}: {name}?"


def test_every_public_class_has_a_docstring() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))
        if "tests" not in path.relative_to(ROOT).parts
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        and not ast.get_docstring(node)
    ]
    assert missing == []
