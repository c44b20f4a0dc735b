"""The worker's micro-batch path: a pipeline that orders small stages (operational,
models, drift, decide, audit), the model scorers, the drift stage and its reference
store, checkpoints, and the replay ledger that ties state to Kafka positions.
"""

__all__ = [
    "checkpoint", "drift", "ledger", "model_scoring", "pipeline", "reference", "stages",
]
