"""What loading a transformers model prints: its weight-loading report, less the one entry
that old BERT checkpoints all cause, and no progress bar.

transformers 5 logs a LOAD REPORT table as a warning whenever a checkpoint's keys differ from
the model's. Checkpoints saved before transformers 4.31 hold `embeddings.position_ids`, a
buffer that newer models build themselves: the default embedder (all-MiniLM-L6-v2) is one,
and its table greeted every daemon start, backtest and CLI call with an UNEXPECTED key that
changes nothing. A report with any other entry (a missing or mismatched weight, which is
initialised at random, or another unexpected key) is logged whole, as before.

transformers 5 also draws a "Loading weights" progress bar on stderr for every load: in a
daemon's log or a backtest's output it is a line of carriage returns and block characters.
"""

from __future__ import annotations

import logging
import re

# The logger transformers' from_pretrained reports through.
_LOGGER = "transformers.modeling_utils"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _entries(report: str) -> list[tuple[str, str]]:
    """(key, status) of each row of the report's table."""
    rows = []
    for line in _ANSI.sub("", report).splitlines():  # the rule under the header has no "|"
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 2 and cells[0] not in ("", "Key"):
            rows.append((cells[0], cells[1]))
    return rows


class _PositionIdsOnly(logging.Filter):
    """Drops a LOAD REPORT whose every entry is an unexpected `position_ids` buffer."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        entries = _entries(message)
        return not entries or not all(
            status == "UNEXPECTED" and key.endswith("position_ids") for key, status in entries)


def quiet_position_ids_reports() -> None:
    """Install the filter once per process (before a model is loaded)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _PositionIdsOnly) for f in logger.filters):
        logger.addFilter(_PositionIdsOnly())


def quiet_model_loading() -> None:
    """Before a model loads: no progress bar, and no report of only position_ids buffers."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    quiet_position_ids_reports()
