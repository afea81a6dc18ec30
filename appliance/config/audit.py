"""The ``audit`` section: what the audit record keeps and for how long (the audit stage's schema)."""
from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from appliance.config.types import Size, Strict

# Always redacted in the record: credentials and session state (the values, never the names).
ALWAYS_REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
DEFAULT_REDACTED_FIELDS = ("password", "passwd", "pass", "pwd", "secret", "token", "access_token",
                           "refresh_token", "client_secret", "api_key", "apikey")


class ForwardConfig(Strict):
    """Where records are also sent as they happen."""

    url: str  # syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, http(s)://... (a webhook)
    headers: dict[str, str] = {}  # for a webhook, e.g. Authorization: "Bearer ${SIEM_TOKEN}"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("syslog+udp", "syslog+tcp", "http", "https") or not parts.hostname:
            raise ValueError("must be syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT or an http(s):// URL")
        return value


class AuditConfig(Strict):
    enabled: bool = True
    store: str = "sqlite"  # sqlite: state_dir/audit/audit.db; or postgresql://USER:PASSWORD@HOST:PORT/DB
    retention_days: int = Field(default=30, ge=1, le=3650)
    max_size: Size = 0  # 0: no limit
    body_excerpt: Size = 8192
    redact_headers: list[str] = []
    redact_fields: list[str] = list(DEFAULT_REDACTED_FIELDS)
    sample_allowed: float = Field(default=0.0, ge=0.0, le=1.0)
    forward: list[ForwardConfig] = []

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if value == "sqlite":
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
            raise ValueError("must be sqlite or a URL postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        return value
