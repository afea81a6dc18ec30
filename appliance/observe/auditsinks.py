"""Forwarding audit records as they happen: syslog (RFC 5424 over UDP, or TCP with octet counting,
RFC 6587) and an HTTP webhook (JSON batches, retried with backoff).

Each sink has its own thread and a bounded queue. A sink that is down or slow never slows a
request: when its queue is full, records for that sink are dropped and counted (the database keeps
every record regardless), and the count is logged.
"""
from __future__ import annotations

import http.client
import json
import logging
import queue
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from appliance.observe.auditstore import take_batch

log = logging.getLogger("edgeward.audit")

_FACILITY_LOCAL0 = 16
_SEVERITY_WARNING = 4


class Sink:
    """A thread that sends what ``put`` queues; subclasses implement ``send(batch)``."""

    BATCH = 100
    RETRIES = 5

    def __init__(self, url: str, maxsize: int = 10000) -> None:
        self.url = url
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgeward-audit-sink", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10000 == 0:
                log.warning("audit: %s is not keeping up; %d record(s) not forwarded (all are in the database)",
                            self.safe_url, self.dropped)

    def close(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None

    @property
    def safe_url(self) -> str:
        """The URL without credentials, for logs."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"

    def send(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = take_batch(self._queue, self.BATCH, batch)
            for attempt in range(self.RETRIES):
                try:
                    self.send(batch)
                    self.sent += len(batch)
                    break
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    if attempt + 1 == self.RETRIES:
                        self.dropped += len(batch)
                        log.warning("audit: %s failed %d times (%s); %d record(s) not forwarded", self.safe_url,
                                    self.RETRIES, exc, len(batch))
                    else:
                        time.sleep(min(0.2 * 2 ** attempt, 5.0))


class SyslogSink(Sink):
    """``syslog+udp://host:port`` or ``syslog+tcp://host:port``; one RFC 5424 message per record,
    its structured data a JSON object of the record's summary fields."""

    def __init__(self, url: str, maxsize: int = 10000) -> None:
        super().__init__(url, maxsize)
        parts = urlsplit(url)
        self.tcp = parts.scheme == "syslog+tcp"
        self.address = (parts.hostname or "127.0.0.1", parts.port or 514)
        self._sock: socket.socket | None = None

    @staticmethod
    def message(record: dict[str, Any]) -> bytes:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record["time"])) + f".{int(record['time'] * 1000) % 1000:03d}Z"
        summary = {k: record.get(k) for k in ("id", "domain", "route", "method", "uri", "status", "stage", "reason", "mode")}
        summary["client_ip"] = record["client"]["ip"]
        waf = record.get("waf") or {}
        summary["rules"] = [m["rule_id"] for m in waf.get("matches", [])]
        summary["anomaly_score"] = waf.get("anomaly_score")
        pri = _FACILITY_LOCAL0 * 8 + _SEVERITY_WARNING
        host = (record.get("node") or "-").replace(" ", "_")
        return f"<{pri}>1 {stamp} {host} edgeward - audit - {json.dumps(summary, separators=(',', ':'))}".encode()

    def send(self, batch: list[dict[str, Any]]) -> None:
        if self._sock is None:
            if self.tcp:
                self._sock = socket.create_connection(self.address, timeout=5)
            else:
                self._sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for record in batch:
                data = self.message(record)
                if self.tcp:
                    self._sock.sendall(str(len(data)).encode() + b" " + data)
                else:
                    self._sock.sendto(data, self.address)
        except OSError:
            self._sock.close()
            self._sock = None
            raise


class WebhookSink(Sink):
    """``http://`` or ``https://``: each batch is POSTed as a JSON array; a non-2xx answer is a
    failure, retried with backoff."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, maxsize: int = 10000) -> None:
        super().__init__(url, maxsize)
        self.headers = dict(headers or {})

    def send(self, batch: list[dict[str, Any]]) -> None:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(parts.hostname or "", port, timeout=5, context=ssl.create_default_context())
            if parts.scheme == "https" else http.client.HTTPConnection(parts.hostname or "", port, timeout=5))
        try:
            body = json.dumps(batch, separators=(",", ":")).encode()
            conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body,
                         {"Content-Type": "application/json", **self.headers})
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                raise ValueError(f"answered {response.status}")
        finally:
            conn.close()


def sink_for(url: str, headers: dict[str, str] | None = None) -> Sink:
    scheme = urlsplit(url).scheme
    if scheme in ("syslog+udp", "syslog+tcp"):
        return SyslogSink(url)
    if scheme in ("http", "https"):
        return WebhookSink(url, headers)
    raise ValueError(f"{url}: a forward URL is syslog+udp://, syslog+tcp://, http:// or https://")
