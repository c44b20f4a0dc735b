"""What driftwatch exports: every Prometheus metric, the batch histogram, label capping,
the consumer observer, and the HTTP endpoints (/metrics, health, canary, admin).
"""

__all__ = [
    "batch_histogram", "endpoints", "labels", "metrics", "observer",
]
