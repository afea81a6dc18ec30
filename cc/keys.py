"""Throttle keys: what identifies "one client" for a rule, taken from a request.

A key is one part or several (``[ip, "header:User-Agent"]``): ``ip``, ``ip_prefix`` (the client's
/24 or /64 by default), ``cookie:NAME``, ``header:NAME``, ``query:NAME`` and ``consumer``. Values a
client chooses (cookies, headers, query arguments) are hashed, so a key is bounded in length and
never holds a session token in Redis; a value that looks like a Redis command is only bytes to hash.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

KINDS = ("ip", "ip_prefix", "cookie", "header", "query", "consumer")
_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")  # an HTTP token: a header, cookie or argument name
MAX_VALUE = 8192  # bytes of a value that are hashed; the rest is ignored


class KeyRequest(Protocol):
    """What a key reads of a request."""

    client_ip: str
    consumer: str | None

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    @property
    def query(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class KeyPart:
    kind: str
    name: str = ""  # the cookie, header or argument name

    @classmethod
    def parse(cls, text: str) -> KeyPart:
        kind, _, name = text.partition(":")
        if kind not in KINDS:
            raise ValueError(f"{text!r}: a key is one of ip, ip_prefix, cookie:NAME, header:NAME, query:NAME, consumer")
        needs_name = kind in ("cookie", "header", "query")
        if needs_name and not _NAME.match(name):
            raise ValueError(f"{text!r}: {kind} needs a name, such as {kind}:session")
        if not needs_name and name:
            raise ValueError(f"{text!r}: {kind} takes no name")
        return cls(kind, name.lower() if kind == "header" else name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


def _digest(value: bytes) -> str:
    if len(value) <= 256:
        return _short_digest(value)
    return hashlib.sha256(value[:MAX_VALUE]).hexdigest()[:32]


@functools.lru_cache(maxsize=16384)  # the same User-Agents, cookies and consumers come back
def _short_digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:32]


def _cookie(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for header, value in headers:
        if header == b"cookie":
            for pair in value.split(b";"):
                key, sep, found = pair.strip().partition(b"=")
                if sep and key == name:
                    return found
    return None


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for header, value in headers:
        if header == name:
            return value
    return None


def _query(query: bytes, name: bytes) -> bytes | None:
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == name:
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


@dataclass(frozen=True, slots=True)
class KeySpec:
    parts: tuple[KeyPart, ...]
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64

    @property
    def uses_consumer(self) -> bool:
        return any(p.kind == "consumer" for p in self.parts)

    def value(self, request: KeyRequest) -> str | None:
        """The key's value for ``request`` (safe for a Redis key name), or None when a part is
        missing (no such cookie): the rule's fallback key is used then."""
        out: list[str] = []
        for part in self.parts:
            if part.kind == "ip":
                out.append(address_value(request.client_ip))
            elif part.kind == "ip_prefix":
                out.append(_network(request.client_ip, self.ipv4_prefix, self.ipv6_prefix))
            elif part.kind == "consumer":
                if not request.consumer:
                    return None
                out.append("consumer=" + _digest(request.consumer.encode()))
            else:
                if part.kind == "cookie":
                    found = _cookie(request.headers, part.name.encode())
                elif part.kind == "header":
                    found = _header(request.headers, part.name.encode())
                else:
                    found = _query(request.query, part.name.encode())
                if found is None:
                    return None
                out.append(f"{part}={_digest(found)}")
        return out[0] if len(out) == 1 else "|".join(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address without an IPv6 zone id, IPv4-mapped IPv6 as IPv4; None for junk."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=65536)  # the same clients come back: parse each address once
def address_value(text: str) -> str:
    """The key value of a client address (also the key an address ban is stored under)."""
    ip = _ip(text)
    return str(ip) if ip is not None else "ip=" + _digest(text.encode())


@functools.lru_cache(maxsize=65536)
def _network(text: str, v4: int, v6: int) -> str:
    ip = _ip(text)
    if ip is None:
        return "ip=" + _digest(text.encode())
    return str(ipaddress.ip_network(f"{ip}/{v4 if ip.version == 4 else v6}", strict=False))


def ban_value(key: str) -> str:
    """A key an operator typed, as bans are stored: an address as ``address_value`` writes it
    (IPv4-mapped IPv6 as IPv4), any other key as ``edgeward cc bans`` lists it."""
    return address_value(key) if _ip(key) is not None else key
