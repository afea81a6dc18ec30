"""The config file's schema: types, bounds, enums and defaults, then cross-field checks.

Bad values are rejected, never clamped. Loading (YAML with line numbers, ``${VAR}``) lives in
``configfile``; this module only declares what a valid config is.

Sections live in their own modules (``types``, ``upstream``, ``waf``); this one assembles them."""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from appliance.config.access import AccessConfig, GeoIPConfig
from appliance.config.audit import AuditConfig
from appliance.config.authn import AuthConfig, ConsumerConfig, IdentityHeadersConfig
from appliance.config.cc import CCConfig, RedisConfig, redis_config
from appliance.config.types import Duration, FilePath, Listen, Size, Strict, parse_listen
from appliance.config.upstream import Timeouts, Upstream, UpstreamConfig
from appliance.config.waf import ExclusionConfig, WafConfig

__all__ = ["Config", "DomainConfig", "RouteConfig", "TLSConfig", "AdminConfig", "AccessLogConfig", "UnknownHostConfig",
           "RulesConfig", "LimitsConfig", "Timeouts", "UpstreamConfig", "WafConfig", "ExclusionConfig", "parse_listen"]


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


class RouteConfig(Strict):
    path: str
    upstream: Upstream | None = None
    timeouts: Timeouts | None = None
    max_body_size: Size | None = None
    access: AccessConfig | None = None
    cc: CCConfig | None = None
    auth: AuthConfig | None = None
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
    access: AccessConfig | None = None
    cc: CCConfig | None = None
    auth: AuthConfig | None = None
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
    import_dirs: list[FilePath] = []  # server-local paths the admin API may import from (none: only https URLs)

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

    @model_validator(mode="after")
    def _signers(self) -> RulesConfig:
        if self.require_signature and not self.trusted_keys:
            raise ValueError("require_signature needs trusted_keys: without them a bundle signed by any fresh key "
                             "would be accepted")
        return self


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
    geoip: GeoIPConfig | None = None
    redis: Annotated[RedisConfig | None, BeforeValidator(redis_config)] = None  # absent: a private redis-server per node
    consumers: list[ConsumerConfig] = []
    identity_headers: IdentityHeadersConfig = IdentityHeadersConfig()
    admin: AdminConfig = AdminConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    audit: AuditConfig = AuditConfig()
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

    @model_validator(mode="after")
    def _consumers(self) -> Config:
        """Names, keys and usernames are unique; an anonymous consumer exists (allow lists are
        checked once merged, by the stage: with JWT they may name subjects no config declares)."""
        names: set[str] = set()
        keys: set[str] = set()
        users: set[str] = set()
        hmac_ids: set[str] = set()
        for consumer in self.consumers:
            if consumer.name in names:
                raise ValueError(f"consumers: {consumer.name!r} is declared twice")
            names.add(consumer.name)
            for credential in consumer.credentials:
                if credential.type == "hmac":
                    token, seen = credential.key_id, hmac_ids
                elif credential.type == "key":
                    token, seen = credential.sha256.lower(), keys
                else:
                    token, seen = credential.username, users
                if token in seen:
                    raise ValueError(f"consumers: {consumer.name!r}: a {credential.type} credential another consumer holds")
                seen.add(token)
        sections = [(f"domains[{d}]", domain.auth) for d, domain in enumerate(self.domains)]
        sections += [(f"domains[{d}].routes[{r}]", route.auth) for d, domain in enumerate(self.domains)
                     for r, route in enumerate(domain.routes)]
        for where, auth in sections:
            if auth is None:
                continue
            if auth.anonymous is not None and auth.anonymous not in names:
                raise ValueError(f"{where}.auth.anonymous: no consumer {auth.anonymous!r}")
        return self

    def needs_redis(self) -> bool:
        """CC counts, HMAC replay protection and OIDC sessions in Redis need a Redis shared by the
        node's workers."""
        sections = [d.auth for d in self.domains] + [r.auth for d in self.domains for r in d.routes]
        return self.uses_cc() or any(s is not None and ("hmac" in s.methods or (
            s.oidc is not None and s.oidc.session_store == "redis")) for s in sections)

    def uses_cc(self) -> bool:
        """Whether any domain or route throttles or bans (then the node needs Redis)."""
        sections = [d.cc for d in self.domains] + [r.cc for d in self.domains for r in d.routes]
        return any(s is not None and (s.rules or s.bad_behavior) for s in sections)


def _is_network(value: Any) -> bool:
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True


