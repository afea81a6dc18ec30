"""The audit stage: a ``done`` consumer that writes one record for every request a stage blocked,
or a detect-mode policy would have blocked (and, if configured, a sample of the others).

No stage writes audit records itself; each leaves what it knows on the request context (the WAF
its matches, a verdict its reason) and this stage reads it once the response is over. Secrets never
reach the record: the values of credential headers, cookies and configured body fields are replaced
with ``[redacted]``, and so is any matched data that came from them, wherever else the same value
shows up (a rule's message or data can quote it).
"""
from __future__ import annotations

import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

from cc.geoip import CountryDB

from appliance.config.audit import ALWAYS_REDACTED_HEADERS, AuditConfig
from appliance.observe.auditsinks import sink_for
from appliance.observe.auditstore import AuditWriter, open_store, spill_dir
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Outcome
from appliance.stages.access import locate

REDACTED = "[redacted]"
_NODE = socket.gethostname()


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


class Redactor:
    """Finds the secret values of one request and hides them wherever they appear."""

    def __init__(self, cfg: AuditConfig) -> None:
        self.headers = frozenset(ALWAYS_REDACTED_HEADERS) | {h.lower() for h in cfg.redact_headers}
        self.fields = {f.lower() for f in cfg.redact_fields}
        names = "|".join(re.escape(f) for f in sorted(self.fields, key=len, reverse=True)) or "(?!)"
        self._form = re.compile(rf"(?i)(^|[&?;])((?:{names})=)([^&;#]*)")
        self._json = re.compile(rf'(?i)("(?:{names})"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\]\s]+)')
        self._multipart = re.compile(rf'(?is)(name="(?:{names})"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n)(.*?)(\r?\n--)')

    def text(self, value: str, secrets: set[str]) -> str:
        """``value`` with redacted fields hidden; the hidden values are added to ``secrets``."""
        def keep(match: re.Match[str], group: int) -> str:
            if len(match.group(group)) >= 3:
                secrets.add(match.group(group).strip('"'))
            return REDACTED

        value = self._form.sub(lambda m: m.group(1) + m.group(2) + keep(m, 3), value)
        value = self._json.sub(lambda m: m.group(1) + '"' + keep(m, 2) + '"', value)
        value = self._multipart.sub(lambda m: m.group(1) + keep(m, 2) + m.group(3), value)
        return value

    def headers_of(self, headers: list[tuple[bytes, bytes]], secrets: set[str],
                   credentials: frozenset[bytes] = frozenset()) -> list[list[str]]:
        """``credentials``: header names that carried a credential for this request (an API key)."""
        out = []
        for name, value in headers:
            key = _text(name)
            if key.lower() in self.headers or name.lower() in credentials:
                text = _text(value)
                secrets.add(text)
                for part in re.split(r"[;,]\s*|\s+", text):  # cookie values, a scheme's token
                    secrets.add(part.split("=", 1)[1] if "=" in part else part)
                out.append([key, REDACTED])
            else:
                out.append([key, _text(value)])
        return out

    def scrub(self, value: str, secrets: set[str]) -> str:
        for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
            value = value.replace(secret, REDACTED)
        return value

    def sensitive_variable(self, variable: str) -> bool:
        upper = variable.upper()
        if upper.startswith(("REQUEST_COOKIES", "RESPONSE_HEADERS:SET-COOKIE")):
            return True
        collection, _, key = variable.partition(":")
        key = key.lower()
        if collection.upper() in ("REQUEST_HEADERS", "RESPONSE_HEADERS"):
            return key in self.headers
        if collection.upper().startswith("ARGS") or collection.upper() == "FILES":
            return key.split(".")[-1] in self.fields or key in self.fields
        return False


class AuditStage(Stage):
    name: ClassVar[str] = "audit"

    def __init__(self, cfg: AuditConfig, state_dir: Path, geoip: CountryDB | None = None) -> None:
        self.cfg = cfg
        self.geoip = geoip
        self.writer = AuditWriter(lambda: open_store(cfg.store, state_dir), spill_dir(state_dir),
                                  retention_days=cfg.retention_days, max_bytes=cfg.max_size)
        self.sinks = [sink_for(f.url, f.headers) for f in cfg.forward]
        self.redactor = Redactor(cfg)

    async def start(self) -> None:
        self.writer.start()
        for sink in self.sinks:
            sink.start()

    async def close(self) -> None:
        self.writer.close()
        for sink in self.sinks:
            sink.close()

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        verdict = ctx.verdict
        if ctx.waf is not None and ctx.waf.outcome is not None:
            for name in ctx.waf.outcome.exclusions:
                self.writer.hit(name)
        blocked = verdict is not None and verdict.kind == "block"
        if not blocked and not ctx.would_block:
            if not (self.cfg.sample_allowed and random.random() < self.cfg.sample_allowed):
                return
        record = self.record(ctx, outcome)
        self.writer.put(record)
        for sink in self.sinks:
            sink.put(record)

    def record(self, ctx: RequestContext, outcome: Outcome) -> dict[str, Any]:
        verdict = ctx.verdict
        secrets: set[str] = set()
        headers = self.redactor.headers_of(list(ctx.scope.get("headers") or []), secrets, ctx.secret_headers)
        scope = ctx.scope
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string")
        uri = self.redactor.text(_text(target + b"?" + query if query else target), secrets)
        body = self.redactor.text(_text(self._excerpt(ctx)), secrets)
        if verdict is not None and verdict.kind == "block":
            reason, mode = verdict.reason, "block"
        elif ctx.would_block:
            reason, mode = (verdict.reason if verdict else "waf.would_block"), "detect"
        else:
            reason, mode = "sampled", "allow"
        route = ctx.route
        waf = ctx.waf
        record: dict[str, Any] = {
            "id": ctx.request_id, "time": time.time(), "node": _NODE, "domain": ctx.domain,
            "route": route.path if route is not None else "-",
            "client": {"ip": ctx.client_ip, "port": ctx.client_port}, "country": locate(ctx, self.geoip),
            "method": ctx.method, "uri": uri, "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            "headers": headers, "body": body, "body_bytes": ctx.body_length, "consumer": ctx.consumer,
            "stage": reason.split(".", 1)[0] if "." in reason else reason, "reason": reason,
            "status": outcome.status, "mode": mode,
            "waf": self._waf(waf.as_dict(), secrets) if waf is not None else None,
        }
        if verdict is not None:  # what the deciding stage adds (the CC rule, the ban), JSON values only
            extra = {k: v for k, v in verdict.details.items() if k != "waf" and isinstance(v, (str, int, float, type(None)))}
            if extra:
                record["details"] = extra
        return record

    def _excerpt(self, ctx: RequestContext) -> bytes:
        size = self.cfg.body_excerpt
        if ctx.spool is not None and ctx.spool.fd >= 0:
            return os.pread(ctx.spool.fd, min(size, ctx.spool.size), 0)  # at most body_excerpt bytes, page cache
        return ctx.body[:size]

    def _waf(self, waf: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
        redactor = self.redactor
        for match in waf["matches"]:
            if match["variable"] and redactor.sensitive_variable(match["variable"]):
                match["data"] = match["matched"] = REDACTED
            for key in ("message", "data", "matched"):
                match[key] = redactor.scrub(match[key], secrets)
        return waf
