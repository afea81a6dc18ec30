"""Edgeward's binding of libmodsecurity (Debian's ``libmodsecurity3``), through cffi.

Why our own binding: every engine call releases the GIL (cffi does so for each call), so a long
evaluation can run in a thread while the event loop serves other requests; requests go in as the
exact bytes received (``msc_add_n_request_header``), and matched rules come out as separate byte
fields copied from the transaction's rule messages by ``engine_shim.cpp``, never parsed back out of
log lines that carry attacker-chosen text. Why Debian's library: docs/waf.md, "The engine".

The compiled module ``waf._engine`` is built at install by ``waf/engine_build.py``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from waf._engine import ffi, lib  # built at install: waf/engine_build.py

from .errors import WafCompileError

CONNECTOR = b"Edgeward"


@dataclass(frozen=True, slots=True)
class RawMatch:
    """One rule message as the engine produced it (byte fields, undecoded)."""

    rule_id: int
    severity: int
    phase: int
    disruptive: bool
    message: bytes
    data: bytes
    match: bytes
    tags: tuple[bytes, ...]
    text: bytes  # the engine's own log line; empty unless the engine was created with text=True


class Engine:
    """One ModSecurity instance. ``text`` also keeps each match's formatted log line (what nginx
    writes to its error log), which only the conformance runner reads."""

    def __init__(self, text: bool = False) -> None:
        handle = lib.ew_engine_new(CONNECTOR, int(text))
        if handle == ffi.NULL:
            raise MemoryError("cannot create a ModSecurity instance")
        self._handle = ffi.gc(handle, lib.ew_engine_free)

    @property
    def handle(self) -> object:
        return self._handle

    def version(self) -> str:
        return str(ffi.string(lib.ew_engine_version(self._handle)).decode("ascii", "replace"))


class RuleSet:
    """A rule set being compiled; each ``add`` returns the number of rules it added."""

    def __init__(self) -> None:
        self._handle = ffi.gc(lib.ew_rules_new(), lib.ew_rules_free)

    @property
    def handle(self) -> object:
        return self._handle

    def add(self, text: str, what: str) -> int:
        return self._add(text.encode("utf-8"), False, what, None)

    def add_file(self, path: Path, label: str) -> int:
        return self._add(str(path).encode(), True, label, str(path.parent) + "/")

    def _add(self, source: bytes, is_file: bool, what: str, strip: str | None) -> int:
        error = ffi.new("char **")
        count = int(lib.ew_rules_add(self._handle, source, int(is_file), error))
        if count < 0:
            message = "unknown parser error"
            if error[0] != ffi.NULL:
                message = ffi.string(error[0]).decode("utf-8", "replace").strip()
                lib.free(error[0])
            if strip:
                message = message.replace(strip, "")
            raise WafCompileError(f"{what}: {message}")
        return count


def _flatten(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, object, int]:
    """All header names and values in one buffer with their lengths: one engine call, not 2n."""
    lengths = [n for name, value in headers for n in (len(name), len(value))]
    return b"".join(part for pair in headers for part in pair), ffi.new("size_t[]", lengths), len(headers)


def _bytes(pointer: object, size: int) -> bytes:
    return bytes(ffi.unpack(pointer, size)) if size else b""


class Transaction:
    """One request's transaction. Not thread-safe; it may move between threads between calls.
    The phase methods return the intervention status when the engine asks to interrupt, else None."""

    __slots__ = ("_tx", "_rules", "_status")

    def __init__(self, engine: Engine, rules: RuleSet, transaction_id: str) -> None:
        self._rules = rules  # the transaction borrows the rule set: keep it alive
        tx = lib.ew_tx_new(engine.handle, rules.handle, transaction_id.encode("ascii", "replace"))
        if tx == ffi.NULL:
            raise MemoryError("cannot create a ModSecurity transaction")
        self._tx = ffi.gc(tx, lib.ew_tx_free)
        self._status = ffi.new("int *")

    def request_headers(self, client_ip: str, client_port: int, server_ip: str, server_port: int,
                        target: bytes, method: str, http_version: str,
                        headers: Sequence[tuple[bytes, bytes]]) -> int | None:
        buffer, lengths, count = _flatten(headers)
        lib.ew_tx_request_headers(self._tx, client_ip.encode(), client_port, server_ip.encode(), server_port,
                                  target, method.encode("latin-1"), http_version.encode(), buffer, lengths, count)
        return self.intervention()

    def request_body(self, body: bytes | None = None, path: Path | None = None) -> int | None:
        """The body from memory, or from a file the engine reads itself (a spooled large body)."""
        if path is not None:
            lib.ew_tx_request_body(self._tx, ffi.NULL, 0, str(path).encode())
        else:
            data = body or b""
            lib.ew_tx_request_body(self._tx, data, len(data), ffi.NULL)
        return self.intervention()

    def response_headers(self, status: int, protocol: str, headers: Sequence[tuple[bytes, bytes]]) -> int | None:
        buffer, lengths, count = _flatten(headers)
        lib.ew_tx_response_headers(self._tx, status, protocol.encode(), buffer, lengths, count)
        return self.intervention()

    def response_body(self, body: bytes) -> int | None:
        lib.ew_tx_response_body(self._tx, body, len(body))
        return self.intervention()

    def logging(self) -> None:
        lib.ew_tx_logging(self._tx)

    def intervention(self) -> int | None:
        if lib.ew_tx_intervention(self._tx, self._status):
            return int(self._status[0])
        return None

    def matches(self) -> list[RawMatch]:
        out: list[RawMatch] = []
        m = ffi.new("ew_match *")
        for i in range(lib.ew_tx_collect(self._tx)):
            lib.ew_tx_match(self._tx, i, m)
            tags = _bytes(m.tags, m.tags_len)
            out.append(RawMatch(
                int(m.rule_id), int(m.severity), int(m.phase), bool(m.disruptive), _bytes(m.message, m.message_len),
                _bytes(m.data, m.data_len), _bytes(m.match, m.match_len), tuple(tags.split(b"\n")) if tags else (),
                _bytes(m.text, m.text_len),
            ))
        return out

    def close(self) -> None:
        """Free the engine's transaction now rather than at garbage collection."""
        if self._tx is not None:
            ffi.release(self._tx)
            self._tx = None


@dataclass(frozen=True, slots=True)
class Pcre2:
    """What the engine's regular expressions run on (the system libpcre2-8 both link)."""

    version: str
    jit: bool  # JIT built in *and* a pattern compiled with it in this process


def pcre2() -> Pcre2:
    buffer = ffi.new("char[64]")
    jit = bool(lib.ew_pcre2_jit(buffer, 64))
    return Pcre2(ffi.string(buffer).decode("ascii", "replace"), jit)
