"""The ``audit`` section: what the audit record keeps and for how long (the audit stage's schema)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from appliance.config.types import Size, Strict

# Always redacted in the record: credentials and session state (the values, never the names).
ALWAYS_REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
DEFAULT_REDACTED_FIELDS = ("password", "passwd", "pass", "pwd", "secret", "token", "access_token",
                           "refresh_token", "client_secret", "api_key", "apikey")


class AuditConfig(Strict):
    enabled: bool = True
    store: Literal["sqlite"] = "sqlite"  # the database is state_dir/audit/audit.db
    retention_days: int = Field(default=30, ge=1, le=3650)
    max_size: Size = 0  # 0: no limit
    body_excerpt: Size = 8192
    redact_headers: list[str] = []
    redact_fields: list[str] = list(DEFAULT_REDACTED_FIELDS)
    sample_allowed: float = Field(default=0.0, ge=0.0, le=1.0)
