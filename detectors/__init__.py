"""The statistics and models, one concept per file: embedders, toxicity, groundedness,
sanity checks, online MMD, feature drift, sequential tests, rate shifts, and their
evaluations. Knows nothing of Kafka or `monitor`.
"""

__all__ = [
    "embedder", "feature_drift", "groundedness", "groundedness_eval", "insults_corpus",
    "mmd_online", "operational", "package_data", "rate_shift", "sanity", "sequential", "toxicity",
    "toxicity_eval", "two_sample",
]
