"""What driftwatch shows: Grafana dashboards and Prometheus rules, defined as typed Python.
`driftwatch dashboards build` writes them out as the JSON and YAML files committed here."""

__all__ = ["alert_rules", "boards", "build", "command", "grafana_json", "push", "render"]
