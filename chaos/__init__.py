"""Reproducible failure scenarios against the real daemon, broker and receivers
(`driftwatch chaos`).
"""

__all__ = [
    "command", "hostile", "parts", "scenarios",
]
