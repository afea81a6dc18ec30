"""The request context: typed fields that stages write and read, so mypy checks every hand-off.

Secrets never go here (a credential is checked and dropped; only the consumer's name is kept).
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.pipeline.verdict import Verdict
from appliance.types import Receive, Scope

if TYPE_CHECKING:
    from waf.inspect import Inspection, Outcome as WafOutcome

    from appliance.pipeline.body import Spool

    from appliance.pipeline.route import Route


@dataclass(slots=True, eq=False)
class WafResult:
    """The WAF's work on one request, for the canary and the audit record. ``inspection`` is the
    engine transaction while response rules are still to run; ``outcome`` is set once it ends.
    ``busy`` is the engine call running in a thread, if any: the transaction is freed only after it."""

    bundle: str
    digest: str
    mode: str
    paranoia: int
    inspection: Inspection | None = None
    outcome: WafOutcome | None = None
    elapsed: float = 0.0
    busy: Future[Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "bundle": self.bundle, "digest": self.digest, "mode": self.mode, "paranoia": self.paranoia,
            "anomaly_score": o.anomaly_score if o else 0,
            "phase": o.decision.phase if o and o.decision else None,
            "matches": [
                {"rule_id": m.rule_id, "message": m.message, "severity": m.severity, "data": m.data,
                 "matched": m.matched, "phase": m.phase, "tags": list(m.tags), "disruptive": m.disruptive,
                 "variable": m.variable}
                for m in (o.matches if o else [])
            ],
        }


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request as the stages see it. ``resolve`` fills the first block of fields; ``path`` is
    the normalised path that chose the route (the raw target is in ``scope`` and is what the
    upstream and the WAF receive)."""

    scope: Scope
    receive: Receive
    websocket: bool
    started: float
    # -- written by resolve
    request_id: str = ""
    method: str = "GET"
    path: str = "/"
    client_ip: str = ""
    client_port: int = 0
    peer_trusted: bool = False
    host: str = ""
    accept: bytes | None = None
    content_length: int | None = None  # declared, when not chunked
    has_body: bool = False  # a body follows (declared, chunked, or an HTTP/2 stream without length)
    domain: str = "-"
    route: Route | None = None
    # -- written by later stages
    country: str | None = None  # ISO 3166 code, once a GeoIP lookup has been made
    consumer: str | None = None
    consumer_groups: tuple[str, ...] = ()
    credential: str | None = None  # which credential proved the consumer (an identifier, never the secret)
    secret_headers: frozenset[bytes] = frozenset()  # headers that carry a credential here: the audit record hides them
    drop_headers: frozenset[bytes] = frozenset()  # credential headers the upstream must not see
    add_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # set by stages for the upstream (claims)
    auth_pending: bool = False  # authentication waits for the body (a signature over form fields)
    response_extra: list[tuple[bytes, bytes]] = field(default_factory=list)  # added to the upstream's response (a cookie)
    body: bytes = b""  # request body read so far; the proxy sends it first, then streams the rest
    spool: Spool | None = None  # instead of ``body`` once the body read outgrew memory (body.SPOOL_OVER)
    body_complete: bool = False
    verdict: Verdict | None = None
    would_block: bool = False  # a detect-mode protection would have stopped this request
    waf: WafResult | None = None
    response_body_limit: int = 0  # response bytes a stage wants to inspect (0: stream it)

    @property
    def body_length(self) -> int:
        """Bytes of body read so far, in memory or spooled."""
        return self.spool.size if self.spool is not None else len(self.body)
