"""The one vocabulary of the config: scorer, signal and gate names, and the name patterns."""

from __future__ import annotations

from typing import Literal

ScorerName = Literal[
    "latency", "tokens", "cost", "status", "length", "toxicity", "groundedness", "sanity",
    "tokenization",
]
SCORERS: tuple[str, ...] = ScorerName.__args__  # type: ignore[attr-defined]
# Scorers that need a model (and give the drift stage its embeddings).
MODEL_SCORERS = frozenset({"toxicity", "groundedness", "sanity"})
# Scorers that keep per-segment state (they run with drift and the rules, not in the score
# stage): reported token counts checked against a local tokenizer's.
STATEFUL_SCORERS = frozenset({"tokenization"})
# Record-level signals a rate rule can watch (1 hit, 0 miss, NaN not applicable), with the
# scorer each comes from; "error" needs none.
SIGNAL_SCORERS = {
    "toxic": "toxicity", "ungrounded": "groundedness", "refusal": "sanity",
    "empty_response": "sanity", "truncated": "sanity", "charset_anomaly": "sanity",
    "token_mismatch": "tokenization",
}
GateName = Literal["toxic", "ungrounded", "refusal", "error", "latency_p95", "embedding_drift"]
# Canary gates that compare the two arms' rates of a record-level signal.
RATE_GATES = ("toxic", "ungrounded", "refusal", "error")

# Names of rules, actions and references: they appear in metrics labels, URLs and file names.
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # an environment variable's name
# A host to listen on: a name, an IPv4 or an IPv6 address; no scheme, port or brackets.
HOST = r"^(?:[A-Za-z0-9._-]+|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9_.-]+)?)$"
