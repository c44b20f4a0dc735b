"""Settings of the HTTP port: /metrics, health, the admin endpoints, segment labels."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from consumers.settings import SECTION
from monitor.config.names import ENV_NAME, HOST
from monitor.types import SegmentLabel


class AdminTokenError(ValueError):
    """The admin token is not where metrics.admin_token_env/_file says (never shows it)."""


class MetricsSettings(BaseModel):
    """The HTTP port: address, segment labels, admin token and connection limits."""

    model_config = SECTION

    # Loopback by default: /metrics and the admin endpoints are not for the open network.
    host: str = Field(default="127.0.0.1", pattern=HOST)
    port: int = Field(default=9108, ge=0, le=65_535)
    # Segment labels on per-record metrics; a bounded set, never request ids or text.
    labels: list[SegmentLabel] = ["model", "model_version", "deployment"]
    # Distinct values kept per label; later ones are reported as "other".
    max_label_values: int = Field(default=50, ge=1, le=10_000)
    # Distinct combinations of them (segments), each with about a hundred series and its own
    # rule state; later new ones are reported with every label "other".
    max_segments: int = Field(default=500, ge=1, le=100_000)
    # Bearer token for state-changing requests (POST /admin/...), from the environment or a
    # file, never this file. Without one, only loopback clients may make them.
    admin_token_env: str | None = Field(default=None, pattern=ENV_NAME)
    admin_token_file: Path | None = None
    # Per connection: time to send each part of a request, largest body, and connections open.
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_body_bytes: int = Field(default=65_536, ge=0, le=16 * 1_048_576)
    max_connections: int = Field(default=1_024, ge=4, le=100_000)

    @model_validator(mode="after")
    def _one_token_source(self) -> MetricsSettings:
        if self.admin_token_env is not None and self.admin_token_file is not None:
            raise ValueError("set at most one of metrics.admin_token_env and "
                             "metrics.admin_token_file")
        return self

    @property
    def exposed(self) -> bool:
        """True when the port listens beyond loopback."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"  # a name: assume it resolves beyond loopback

    def admin_token(self) -> str | None:
        """The admin token, resolved now (at start): a missing one is a clear error."""
        if self.admin_token_env is not None:
            value = os.environ.get(self.admin_token_env, "").strip()
            if not value:
                raise AdminTokenError(f"metrics.admin_token_env: the environment variable "
                                      f"{self.admin_token_env} is not set")
            return value
        if self.admin_token_file is not None:
            try:
                value = self.admin_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AdminTokenError(f"metrics.admin_token_file: cannot read "
                                      f"{self.admin_token_file}: {exc.strerror}") from None
            if not value:
                raise AdminTokenError(f"metrics.admin_token_file: {self.admin_token_file} "
                                      "is empty")
            return value
        return None

    def warnings(self) -> list[str]:
        if self.exposed and self.admin_token_env is None and self.admin_token_file is None:
            return [f"metrics.host {self.host} exposes the HTTP port beyond loopback and no "
                    "admin token is set: POST /admin/... is refused to non-loopback clients; "
                    "set metrics.admin_token_env or metrics.admin_token_file to allow them"]
        return []
