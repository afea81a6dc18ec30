"""Map one HTTP request (and optionally its response) onto a ModSecurity transaction.

Faithful to what nginx hands ModSecurity: the raw request target as received (never decoded or
re-encoded), method, protocol, every header in order with duplicates, client and server address,
and the body as received so ModSecurity's own processors (urlencoded, multipart, JSON, XML) parse it.

The engine takes ``str``; bytes are decoded as UTF-8 when valid (the engine re-encodes them to the
same bytes) and as Latin-1 otherwise. The wheel raises ``UnicodeDecodeError`` when a matched rule's
message or data holds non-UTF-8 bytes (an attacker chooses them): every field is read defensively.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from libmodsecurity import Transaction

from .compiler import CompiledRules

_SCORE = re.compile(r"Total Score: (\d+)")
_UNREADABLE = "<not UTF-8>"


class RequestView(Protocol):
    """The request fields the WAF reads."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    method: str
    target: bytes  # raw path and query as received
    http_version: str  # "1.0", "1.1", "2.0"
    headers: Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Match:
    """One rule that matched, as the audit record stores it."""

    rule_id: int
    message: str
    severity: int
    data: str
    matched: str
    phase: int
    tags: tuple[str, ...]
    disruptive: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's intervention: ``block`` means the connector must answer ``status`` itself."""

    block: bool
    status: int
    phase: str  # request_headers | request_body | response_headers | response_body


_SCORE_RULES = (949110, 959100, 980130, 980140)


class Outcome:
    """What the engine decided and matched. Reading a match's text fields crosses into the engine
    for each field, so matches are decoded only when someone (the audit record) asks for them;
    the verdict path reads rule ids and the anomaly score only."""

    def __init__(self, decision: Decision | None, messages: Sequence[Any]) -> None:
        self.decision = decision
        self._messages = messages
        self.rule_ids = [int(m.rule_id) for m in messages]
        self.anomaly_score = self._score()

    def _score(self) -> int:
        score = 0
        for m, rid in zip(self._messages, self.rule_ids):
            if rid in _SCORE_RULES:
                found = _SCORE.search(_field(m, "message")) or _SCORE.search(_field(m, "data"))
                if found:
                    score = max(score, int(found.group(1)))
        if not score:
            score = sum(_SEVERITY_SCORE.get(int(m.severity), 0)
                        for m, rid in zip(self._messages, self.rule_ids) if rid < 949000 or rid >= 990000)
        return score

    @cached_property
    def matches(self) -> list[Match]:
        out = []
        for m, rid in zip(self._messages, self.rule_ids):
            try:
                tags = tuple(m.tags)
            except UnicodeDecodeError:
                tags = ()
            out.append(Match(
                rule_id=rid, message=_field(m, "message"), severity=int(m.severity), data=_field(m, "data"),
                matched=_field(m, "match"), phase=int(m.phase), tags=tags, disruptive=bool(m.disruptive),
            ))
        return out


def text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _field(message: Any, name: str) -> str:
    try:
        return str(getattr(message, name))
    except UnicodeDecodeError:
        return _UNREADABLE


class Inspection:
    """One request's trip through the engine. Calls go in order: headers, body, response."""

    __slots__ = ("_tx", "compiled", "decision")

    def __init__(self, compiled: CompiledRules, request: RequestView, transaction_id: str) -> None:
        self.compiled = compiled
        self.decision: Decision | None = None
        tx = self._tx = Transaction(compiled.engine, compiled.rules, transaction_id)
        tx.process_connection(request.client_ip, request.client_port, request.server_ip, request.server_port)
        tx.process_uri(text(request.target), request.method, request.http_version)
        for name, value in request.headers:
            tx.add_request_header(text(name), text(value))

    def _check(self, phase: str) -> Decision | None:
        it = self._tx.intervention()
        if it is not None and it.disruptive and self.compiled.policy.mode == "block":
            self.decision = Decision(True, it.status if it.status >= 400 else 403, phase)
        return self.decision

    def request_headers(self) -> Decision | None:
        self._tx.process_request_headers()
        return self._check("request_headers")

    def request_body(self, body: bytes) -> Decision | None:
        if body:
            self._tx.append_request_body(body)
            if self._check("request_body"):  # body over the limit with Reject: 413 from the engine
                return self.decision
        self._tx.process_request_body()
        return self._check("request_body")

    def response_headers(self, status: int, headers: Sequence[tuple[bytes, bytes]], protocol: str) -> Decision | None:
        for name, value in headers:
            self._tx.add_response_header(text(name), text(value))
        self._tx.process_response_headers(status, protocol)
        return self._check("response_headers")

    def response_body(self, body: bytes) -> Decision | None:
        if body:
            self._tx.append_response_body(body)
        self._tx.process_response_body()
        return self._check("response_body")

    def finish(self, logging_phase: bool = False) -> Outcome:
        """Collect every match; never raises for odd bytes.

        The logging phase (5) only writes ModSecurity's own logs and runs CRS's correlation rules,
        which cannot change a verdict; Edgeward keeps its own audit record, so it is skipped
        unless asked for (the conformance runner reads those log lines)."""
        if logging_phase:
            self._tx.process_logging()
        return Outcome(self.decision, self._tx.get_rule_messages())


# CRS's default anomaly points per severity (crs-setup.conf: critical 5, error 4, warning 3, notice 2)
_SEVERITY_SCORE = {2: 5, 3: 4, 4: 3, 5: 2}
