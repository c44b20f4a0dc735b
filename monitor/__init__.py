"""The driftwatch service, in rooms; imports point down this list only (a test checks it):

    cli -> (chaos, dashboards) -> local -> app -> pipeline -> acting -> telemetry -> config
        -> types

`consumers` and `detectors` sit below all of it; `chaos` and `dashboards` use only
`monitor.local`, `monitor.telemetry` and `monitor.app`.
"""

__all__ = [
    "acting",
    "app",
    "cli",
    "config",
    "local",
    "pipeline",
    "telemetry",
    "types",
]
