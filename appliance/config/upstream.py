"""Upstreams and timeouts: the proxy's section of domains and routes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
)

from appliance.config.types import Duration, FilePath, Strict


class Timeouts(Strict):
    connect: Duration = 5.0
    read: Duration = 60.0
    total: Duration = 300.0


def _upstream_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"urls": [value]}
    if isinstance(value, list):
        return {"urls": value}
    return value


class UpstreamConfig(Strict):
    """One upstream: URLs served round robin; a failing one is skipped for ``fail_timeout``."""

    urls: list[str] = Field(min_length=1)
    tls_verify: bool = True
    ca_file: FilePath | None = None
    max_fails: int = Field(default=1, ge=1)
    fail_timeout: Duration = 10.0

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
            if parts.query or parts.fragment:
                raise ValueError(f"{url!r}: an upstream URL takes no query or fragment")
            try:
                parts.port
            except ValueError:
                raise ValueError(f"{url!r} has an invalid port") from None
        return urls

    @field_validator("ca_file")
    @classmethod
    def _ca_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read file {str(path)!r}")
        return path


Upstream = Annotated[UpstreamConfig, BeforeValidator(_upstream_shorthand)]


