"""The real parts tests drive live in `chaos.parts`, shared with `driftwatch chaos`."""

from chaos.parts import *  # noqa: F403 (re-exported as they are)
from chaos.parts import __all__  # noqa: F401
