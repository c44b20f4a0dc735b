"""The one-machine stack: a local Kafka broker (Tansu), a local Prometheus, replayed
traffic, the webhook receiver, the demo, and the benchmarks.
"""

__all__ = [
    "bench", "bench_drift", "bench_drift_alibi", "bench_rules", "broker", "demo", "prometheus",
    "receiver", "traffic",
]
