"""Composition roots, the only code that reads a whole config: the wiring shared by the
daemon and the backtest, the daemon, the offline commands (score, backtest, reference
build, evaluate), and process hygiene (heap trimming).
"""

__all__ = [
    "backtest", "daemon", "evaluate", "heap", "reference_build", "score", "wiring",
]
