"""Checking a printed ratio against the printed figures it was computed from.

A benchmark computes its ratio from unrounded figures and prints all of them rounded, so
the figures read back give the ratio only within a range: a tolerance fixed in advance
fails on small figures (a rate of 5.2 records/s printed to 0.1 is 1% uncertain)."""

from __future__ import annotations


def ratio_range(num: float, den: float, num_error: float, den_error: float,
                ratio_digits: int = 2) -> tuple[float, float]:
    """The lowest and highest value `num / den` printed to `ratio_digits` decimals can
    read, where each figure is known to within its error."""
    half = 0.5 * 10 ** -ratio_digits + 1e-9  # and a float's last bit
    return ((num - num_error) / (den + den_error) - half,
            (num + num_error) / (den - den_error) + half)
