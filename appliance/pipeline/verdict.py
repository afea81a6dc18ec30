"""What a stage decides and what finally happened to a request.

A ``Verdict`` is a value a stage returns to stop a request (APISIX's ``return 401, {...}``); only the
pipeline writes the response. An ``Outcome`` is what the ``done`` consumers (metrics, access log,
audit, bans) read once the response is over, whatever happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.types import Headers

Kind = Literal["block", "reject", "error", "challenge"]
Result = Literal["allow", "block", "reject", "error", "detect", "challenge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request stops: status, a stable dotted reason code (``waf.anomaly``, ``request.host``),
    extra response headers and details for the audit record. ``kind`` says whether a protection
    blocked it, the request itself was malformed, or something failed; ``body`` replaces the
    generic local response body when set (the unknown-host page)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    kind: Kind = "block"
    body: bytes | None = None


@dataclass(slots=True)
class Outcome:
    """What the client saw. ``status`` is the status sent (499: the client left before any
    response); ``reason`` names why it was not a plain proxied answer (``client_gone``,
    ``upstream_timeout``, a verdict's reason); ``started``: the response head went out."""

    status: int = 0
    sent: int = 0
    upstream: str = ""
    verdict: Result = "allow"
    reason: str = ""
    started: bool = False
