"""Errors raised by the appliance package.

Hierarchy::

    EdgewardError
    ├── ConfigError          the config file cannot be used (holds every problem found)
    └── UpstreamError        the upstream could not serve a request
        ├── UpstreamConnectError   connecting failed (refused, reset, DNS, TLS)  -> 502
        ├── UpstreamTimeout        connect, read or total timeout                -> 504
        ├── UpstreamProtocolError  the upstream broke HTTP mid-response          -> 502
        └── UpstreamRefused        the upstream answered a WebSocket handshake
                                   with an error status                          -> that status

Third-party errors (aiohttp, yaml, pydantic) are translated at the boundary with ``raise ... from``.
"""
from __future__ import annotations

from dataclasses import dataclass


class EdgewardError(Exception):
    """Base class of every error the appliance raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file, printed as ``FILE:LINE: key: problem``."""

    file: str
    line: int
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.problem}"


class ConfigError(EdgewardError):
    """The config file cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UpstreamError(EdgewardError):
    """The upstream could not serve the request."""

    status = 502
    reason = "upstream.error"


class UpstreamConnectError(UpstreamError):
    """Connecting to the upstream failed."""

    status = 502
    reason = "upstream.connect"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeout."""

    status = 504
    reason = "upstream.timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream broke the connection or the protocol mid-request."""

    status = 502
    reason = "upstream.protocol"


class UpstreamRefused(UpstreamError):
    """The upstream refused a WebSocket handshake; the client gets the same status."""

    reason = "upstream.refused"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status if 400 <= status <= 599 else 502
