"""Kafka in: the wire format, decoding and validation, dead letters, the request/response
join, micro-batching, offsets committed only once processed, and the stream processor
that runs it all. Knows nothing of models, metrics or `monitor`.
"""

__all__ = [
    "batcher", "dead_letter", "decode", "join", "offsets", "processor", "settings", "source",
    "wire",
]
