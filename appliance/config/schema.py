"""The config file's schema: types, bounds, enums and defaults, then cross-field checks.

Bad values are rejected, never clamped. Loading (YAML with line numbers, ``${VAR}``) lives in
``configfile``; this module only declares what a valid config is.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _duration(value: Any) -> float:
    """Accept ``5``, ``2.5``, ``500ms``, ``10s``, ``5m``, ``1h``; return seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms or 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 10s, 500ms, 5m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _size(value: Any) -> int:
    """Accept ``1048576``, ``512k``, ``10m``, ``1g`` (binary units); return bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10m")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size (use e.g. 64k, 10m, 1g)")
        unit = (match.group(2) or "b")[0].lower()
        size = int(match.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    if size < 0:
        raise ValueError("must not be negative")
    return size


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file, so the appliance's CWD never matters."""
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


Duration = Annotated[float, BeforeValidator(_duration)]
FilePath = Annotated[Path, AfterValidator(_relative_to_config)]
Size = Annotated[int, BeforeValidator(_size)]


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raise ValueError with a plain message."""
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{value!r} is not host:port")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is out of range")
    return host, int(port)


def _listen(value: Any) -> str:
    parse_listen(value)
    return str(value)


Listen = Annotated[str, BeforeValidator(_listen)]


class Strict(BaseModel):
    """Every config section forbids unknown keys so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(Strict):
    listen: Listen = "0.0.0.0:8443"
    cert: FilePath
    key: FilePath

    @field_validator("cert", "key")
    @classmethod
    def _readable(cls, path: Path) -> Path:
        if not os.access(path, os.R_OK) or not path.is_file():
            raise ValueError(f"cannot read file {str(path)!r}")
        return path


class AdminConfig(Strict):
    listen: Listen = "127.0.0.1:8001"
    token_env: str = "EDGEWARD_ADMIN_TOKEN"


class AccessLogConfig(Strict):
    enabled: bool = True
    path: str = "-"  # "-" is standard output


class UnknownHostConfig(Strict):
    status: Literal[404, 421] = 421
    body: str = "Unknown host\n"


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


def _off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false; operators mean the word."""
    return "off" if value is False else value


_TARGET = re.compile(r"^[A-Z_]+(:[^\s\"',|;]+)?$")
_SAFE = re.compile(r"^[^\s\"',]+$")


class ExclusionConfig(Strict):
    """Remove rules or one target from them; optionally only under ``path`` and for ``methods``."""

    rules: list[int] = []
    tags: list[str] = []
    target: str | None = None
    path: str | None = None
    methods: list[str] = []
    reason: str = ""

    @field_validator("target")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.match(value):
            raise ValueError(f"{value!r} is not a ModSecurity target such as ARGS:q or REQUEST_COOKIES:sid")
        return value

    @field_validator("path")
    @classmethod
    def _exclusion_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or not _SAFE.match(value)):
            raise ValueError("a path starts with / and has no spaces, quotes or commas")
        return value

    @field_validator("tags", "methods")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _SAFE.match(value):
                raise ValueError(f"{value!r} has spaces, quotes or commas")
        return values

    @model_validator(mode="after")
    def _something(self) -> ExclusionConfig:
        if not self.rules and not self.tags:
            raise ValueError("an exclusion names rules or tags")
        return self


class WafConfig(Strict):
    """Per domain, and per route over its domain's (keys set on the route win)."""

    mode: Annotated[Literal["block", "detect", "off"], BeforeValidator(_off)] = "off"
    bundle: str | None = None
    paranoia: int = Field(default=1, ge=1, le=4)
    detection_paranoia: int | None = Field(default=None, ge=1, le=4)
    inbound_threshold: int = Field(default=5, ge=1)
    outbound_threshold: int = Field(default=4, ge=1)
    allowed_methods: list[str] | None = None
    allowed_content_types: list[str] | None = None
    body_limit: Size = 13107200
    body_limit_action: Literal["reject", "inspect_partial"] = "reject"
    inspect_response: bool = False
    response_body_limit: Size = 524288
    pcre_match_limit: int = Field(default=100000, ge=1000, le=1_000_000_000)
    exclusions: list[ExclusionConfig] = []
    directives: str = ""

    @field_validator("allowed_methods", "allowed_content_types")
    @classmethod
    def _tokens(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            if not _SAFE.match(value) or "|" in value:
                raise ValueError(f"{value!r} has spaces, quotes, commas or |")
        return values

    @model_validator(mode="after")
    def _levels(self) -> WafConfig:
        if self.detection_paranoia is not None and self.detection_paranoia < self.paranoia:
            raise ValueError("detection_paranoia must be at least paranoia")
        return self


class RouteConfig(Strict):
    path: str
    upstream: Upstream | None = None
    timeouts: Timeouts | None = None
    max_body_size: Size | None = None
    waf: WafConfig | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("a route path starts with /")
        return path


_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class DomainConfig(Strict):
    hosts: list[str] = Field(min_length=1)
    upstream: Upstream
    preserve_host: bool = True
    timeouts: Timeouts | None = None
    max_body_size: Size | None = None
    waf: WafConfig = WafConfig()
    routes: list[RouteConfig] = []

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        out = []
        for host in hosts:
            name = host.strip().lower().rstrip(".")
            if name != "*" and not _HOST.match(name):
                raise ValueError(f"{host!r} is not a host name, *.wildcard or the catch-all *")
            out.append(name)
        return out


class RulesConfig(Strict):
    """Rule bundle policy: which signatures are required before a bundle may run."""

    require_signature: bool = False
    trusted_keys: list[str] = []  # PEM public key files (relative to the config) or base64 raw keys

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str], info: ValidationInfo) -> list[str]:
        from rules.signing import BundleSignatureError, load_public_key

        base = (info.context or {}).get("base_dir")
        out = []
        for key in keys:
            path = Path(key) if Path(key).is_absolute() or base is None else Path(base) / key
            value = str(path) if path.is_file() else key
            try:
                load_public_key(value)
            except BundleSignatureError as exc:
                raise ValueError(str(exc)) from None
            out.append(value)
        return out


class LimitsConfig(Strict):
    max_header_size: Size = 32 * 1024
    max_body_size: Size = 0  # 0: no limit
    worker_stall_timeout: Duration = 30.0  # a worker whose event loop is stuck this long is replaced


class Config(Strict):
    listen: Listen = "127.0.0.1:8080"
    tls: TLSConfig | None = None
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    state_dir: FilePath = Field(default=Path("./var"), validate_default=True)
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    admin: AdminConfig = AdminConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    unknown_host: UnknownHostConfig = UnknownHostConfig()
    timeouts: Timeouts = Timeouts()
    limits: LimitsConfig = LimitsConfig()
    rules: RulesConfig = RulesConfig()
    domains: list[DomainConfig] = Field(min_length=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ipaddress.ip_network(str(v), strict=False) if _is_network(v) else v for v in value]
        return value


def _is_network(value: Any) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True
