"""Acting on findings: rules, the canary gate (and its plan), the durable outbox, and
its deliveries as signed webhooks and Alertmanager alerts.
"""

__all__ = [
    "alertmanager", "canary", "canary_plan", "delivery", "outbox", "rules", "webhook",
]
