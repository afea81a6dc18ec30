"""Upstream targets: round robin with passive health (a failing target sits out ``fail_timeout``)."""
from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from appliance.config.upstream import UpstreamConfig


@dataclass(slots=True)
class Target:
    """One upstream URL; ``address`` is what the access log shows."""

    scheme: str
    host: str
    port: int
    base_path: bytes  # prefix joined before the request path (b"" for none)
    address: str  # host:port, as the access log shows it
    host_header: bytes  # Host sent upstream when the domain does not preserve the client's
    fails: int = 0
    down_until: float = 0.0


@dataclass(slots=True)
class UpstreamPool:
    targets: list[Target]
    max_fails: int
    fail_timeout: float
    ssl: ssl.SSLContext | bool | None
    _next: int = field(default=0)

    @classmethod
    def from_config(cls, cfg: UpstreamConfig) -> UpstreamPool:
        targets = []
        for url in cfg.urls:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.hostname or ""
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            default_port = port == (443 if parts.scheme == "https" else 80)
            host_header = (f"[{host}]" if ":" in host else host) if default_port else netloc
            targets.append(Target(parts.scheme, host, port, parts.path.rstrip("/").encode(), netloc, host_header.encode()))
        return cls(targets, cfg.max_fails, cfg.fail_timeout, _ssl_for(cfg))

    def pick(self, exclude: Target | None = None) -> Target:
        """Next live target in turn; when all are down, the one that comes back soonest."""
        now = time.monotonic()
        count = len(self.targets)
        for _ in range(count):
            target = self.targets[self._next % count]
            self._next += 1
            if target.down_until <= now and target is not exclude:
                return target
        return min(self.targets, key=lambda t: (t is exclude, t.down_until))

    def failed(self, target: Target) -> None:
        target.fails += 1
        if target.fails >= self.max_fails:
            target.down_until = time.monotonic() + self.fail_timeout
            target.fails = 0

    def succeeded(self, target: Target) -> None:
        if target.fails:
            target.fails = 0


def _ssl_for(cfg: UpstreamConfig) -> ssl.SSLContext | bool | None:
    """None: aiohttp's default verifying context; False: verification off (opt-out)."""
    if not cfg.tls_verify:
        return False
    if cfg.ca_file is not None:
        return ssl.create_default_context(cafile=str(cfg.ca_file))
    return None
