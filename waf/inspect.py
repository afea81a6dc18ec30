"""Map one HTTP request (and optionally its response) onto a ModSecurity transaction.

Faithful to what nginx hands ModSecurity: the raw request target as received (never decoded or
re-encoded), method, protocol, every header in order with duplicates and as the exact bytes
received, client and server address, and the body as received so ModSecurity's own processors
(urlencoded, multipart, JSON, XML) parse it.

One correction to the engine's own parsing: Debian's libmodsecurity 3.0.9 decodes the path before
it splits off the query at ``?``, so ``/a%3Fb`` hides ``b`` from path rules (CVE-2024-1019, fixed
upstream in 3.0.12). ``engine_target`` escapes the ``%`` of an encoded ``?`` in the path, so the
engine decodes it to a literal ``%3F`` inside the path: path rules see everything after it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from .compiler import CompiledRules
from .engine import RawMatch, Transaction

_SCORE = re.compile(rb"Total Score: (\d+)")
_ENCODED_QUESTION_MARK = re.compile(rb"%3[fF]")
# A part header whose quoted parameter never closes. Debian's 3.0.9 multipart parser reads past the
# end of such a value (its verdict on the same bytes changes from one request to the next; 3.0.15
# flags MULTIPART_INVALID_QUOTING), so such a body is refused before the engine parses it.
_UNTERMINATED_QUOTE = re.compile(rb'(?im)^content-(?:disposition|type):[^\r\n]*?=\s*"(?:[^"\\\r\n]|\\.)*\r?$')
UNTERMINATED_QUOTE_RULE = 200009
_UNTERMINATED_QUOTE_MATCH = RawMatch(
    UNTERMINATED_QUOTE_RULE, 2, 2, True, b"Multipart part header with an unterminated quoted value", b"", b"",
    (b"edgeward", b"multipart"), b"")


def engine_target(target: bytes) -> bytes:
    """The request target handed to the engine (CVE-2024-1019: see the module's docstring)."""
    path, mark, query = target.partition(b"?")
    if b"%" in path:
        path = _ENCODED_QUESTION_MARK.sub(b"%253F", path)
    return path + mark + query


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
    variable: str = ""  # e.g. ARGS:q, REQUEST_COOKIES:session ("" when the engine does not say)


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's intervention: ``block`` means the connector must answer ``status`` itself."""

    block: bool
    status: int
    phase: str  # request_headers | request_body | response_headers | response_body


_SCORE_RULES = (949110, 959100, 980130, 980140)


class Outcome:
    """What the engine decided and matched. The verdict path reads rule ids and the anomaly score
    only; matches are decoded into text when someone (the audit record) asks for them."""

    def __init__(self, decision: Decision | None, raw: Sequence[RawMatch],
                 tags: Mapping[int, tuple[str, ...]] | None = None, hit_rules: Mapping[int, str] | None = None) -> None:
        self.decision = decision
        self.exclusions: list[str] = []  # the named exclusions that applied to this request
        if hit_rules:
            self.exclusions = [hit_rules[m.rule_id] for m in raw if m.rule_id in hit_rules]
            if self.exclusions:
                raw = [m for m in raw if m.rule_id not in hit_rules]
        self._raw = raw
        self._tags = tags or {}
        self.rule_ids = [m.rule_id for m in raw]
        self.anomaly_score = self._score()

    def _score(self) -> int:
        score = 0
        for m in self._raw:
            if m.rule_id in _SCORE_RULES:
                found = _SCORE.search(m.message) or _SCORE.search(m.data)
                if found:
                    score = max(score, int(found.group(1)))
        if not score:
            score = sum(_SEVERITY_SCORE.get(m.severity, 0) for m in self._raw
                        if m.rule_id < 949000 or m.rule_id >= 990000)
        return score

    @property
    def log_lines(self) -> list[str]:
        """The engine's own log line for each match (only with ``compile_rules(text_log=True)``)."""
        return [text(m.text) for m in self._raw]

    @cached_property
    def matches(self) -> list[Match]:
        return [
            Match(rule_id=m.rule_id, message=text(m.message), severity=m.severity, data=text(m.data),
                  matched=text(m.match), phase=m.phase,
                  tags=tuple(text(t) for t in m.tags) or self._tags.get(m.rule_id, ()), disruptive=m.disruptive,
                  variable=_variable(text(m.match), text(m.data)))
            for m in self._raw
        ]


_AGAINST = re.compile(r"against variable `([^']*)'")
_WITHIN = re.compile(r"found within ([A-Z_]+(?::[^:\s]*)?):")


def _variable(matched: str, data: str) -> str:
    """The variable a match was on: the engine's ``Matched ...`` text names it for operator
    matches, CRS's logdata (``found within ARGS:q:``) for the others."""
    found = _AGAINST.search(matched) or _WITHIN.search(data)
    return found.group(1) if found else ""


def text(value: bytes) -> str:
    """Bytes an attacker may have chosen, as text that keeps every byte visible."""
    return value.decode("utf-8", "backslashreplace")


class Inspection:
    """One request's trip through the engine. Calls go in order: headers, body, response; each
    releases the GIL while the engine works, so a caller may run any of them in a thread."""

    __slots__ = ("_tx", "compiled", "decision", "_request", "_refused")

    def __init__(self, compiled: CompiledRules, request: RequestView, transaction_id: str) -> None:
        self.compiled = compiled
        self.decision: Decision | None = None
        self._tx = Transaction(compiled.engine, compiled.rules, transaction_id)
        self._request = request
        self._refused: list[RawMatch] = []

    def _check(self, status: int | None, phase: str) -> Decision | None:
        if status is not None and self.compiled.policy.mode == "block":
            self.decision = Decision(True, status if status >= 400 else 403, phase)
        return self.decision

    def request_headers(self) -> Decision | None:
        r = self._request
        status = self._tx.request_headers(r.client_ip, r.client_port, r.server_ip, r.server_port,
                                          engine_target(r.target), r.method, r.http_version, r.headers)
        return self._check(status, "request_headers")

    def request_body(self, body: bytes, path: Path | None = None) -> Decision | None:
        """The body from memory, or (``path``) from a file it was spooled to. A body over the
        policy's ``body_limit`` (``inspect_partial``) is cut by the engine, whose body processors
        then keep what they parsed of the first ``body_limit`` bytes; a multipart body is closed
        after its last part instead, because the multipart processor keeps nothing of a body
        without its final boundary."""
        boundary = _multipart_boundary(self._request.headers)
        if boundary is not None:
            if _unterminated_quote(body, path):
                self._refused.append(_UNTERMINATED_QUOTE_MATCH)
                return self._check(400, "request_body")
            limit = self.compiled.policy.body_limit
            if path is not None and path.stat().st_size > limit:
                with path.open("rb") as spooled:
                    body, path = spooled.read(limit + 1), None
            if len(body) > limit:
                body = close_multipart(body, boundary, limit)
        return self._check(self._tx.request_body(body, path), "request_body")

    def response_headers(self, status: int, headers: Sequence[tuple[bytes, bytes]], protocol: str) -> Decision | None:
        return self._check(self._tx.response_headers(status, protocol, headers), "response_headers")

    def response_body(self, body: bytes) -> Decision | None:
        return self._check(self._tx.response_body(body), "response_body")

    def finish(self, logging_phase: bool = False) -> Outcome:
        """Collect every match and free the transaction.

        The logging phase (5) only writes ModSecurity's own logs and runs CRS's correlation rules,
        which cannot change a verdict; Edgeward keeps its own audit record, so it is skipped
        unless asked for (the conformance runner reads those log lines)."""
        if logging_phase:
            self._tx.logging()
        outcome = Outcome(self.decision, self._tx.matches() + self._refused, self.compiled.tags, self.compiled.hit_rules)
        self._tx.close()
        return outcome


_BOUNDARY = re.compile(rb'(?i);\s*boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))')


def _multipart_boundary(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The boundary of a multipart body (b"" when a multipart type names none), else None."""
    for name, value in headers:
        if name.lower() == b"content-type":
            if value.lstrip()[:10].lower() != b"multipart/":
                return None
            found = _BOUNDARY.search(value)
            return (found.group(1) or found.group(2)) if found else b""
    return None


def close_multipart(body: bytes, boundary: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of a multipart body as a complete body: the part the limit cuts
    through ends where it is cut (its headers whole) or is left out (its headers cut)."""
    if not boundary:
        return body
    closing = b"\r\n--" + boundary + b"--\r\n"
    cut = body[: max(0, limit - len(closing))]
    last = cut.rfind(b"--" + boundary)
    if last >= 0 and cut.find(b"\r\n\r\n", last) < 0:  # the last part's headers are cut: leave it out
        cut = cut[:last]
        if cut.endswith(b"\r\n"):
            cut = cut[:-2]
    return cut + closing


def _unterminated_quote(body: bytes, path: Path | None) -> bool:
    if path is None:
        return _UNTERMINATED_QUOTE.search(body) is not None
    with path.open("rb") as spooled:  # line by line: a part header is one line
        return any(_UNTERMINATED_QUOTE.search(line) for line in spooled)


# CRS's default anomaly points per severity (crs-setup.conf: critical 5, error 4, warning 3, notice 2)
_SEVERITY_SCORE = {2: 5, 3: 4, 4: 3, 5: 2}
