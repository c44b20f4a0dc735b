"""How the benches print a repeated figure."""

from __future__ import annotations

import statistics


def summary(values: list[float], digits: int = 1) -> str:
    """Median (min-max) of a figure's rounds."""
    return (f"{statistics.median(values):,.{digits}f} "
            f"({min(values):,.{digits}f}-{max(values):,.{digits}f})")
