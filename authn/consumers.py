"""Consumers (named identities with groups) and the credentials that name them.

Stored secrets are never plain: an API key is kept as its SHA-256 digest and found by the digest
of the key presented (so a lookup compares digests, never keys), a basic-auth password as an
scrypt hash. Credentials may expire; a consumer may hold several keys at once (rotation).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 16 MiB and 30-60 ms per check


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: the consumer, and which of its credentials proved it."""

    consumer: Consumer
    credential: str  # an identifier safe to show (never the secret)


@dataclass(frozen=True, slots=True)
class KeyCredential:
    consumer: Consumer
    sha256: bytes
    expires: float | None = None

    @property
    def identifier(self) -> str:
        return "key:" + self.sha256.hex()[:12]


@dataclass(frozen=True, slots=True)
class BasicCredential:
    consumer: Consumer
    username: str
    scrypt: str
    expires: float | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (base64), for ``edgeward consumer hash-password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def parse_scrypt(text: str) -> tuple[int, int, int, bytes, bytes]:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError("not an scrypt hash (scrypt$N$r$p$SALT$HASH, from edgeward consumer hash-password)")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2**10 or n & (n - 1) or r < 1 or p < 1 or n * r > 2**22:
        raise ValueError("scrypt parameters out of range")
    return n, r, p, base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)


def check_password(password: bytes, stored: str) -> bool:
    """Slow on purpose (scrypt): callers run it in a thread."""
    n, r, p, salt, expected = parse_scrypt(stored)
    digest = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=2**26)
    return hmac.compare_digest(digest, expected)


class Registry:
    def __init__(self, consumers: Iterable[Consumer], keys: Iterable[KeyCredential],
                 basics: Iterable[BasicCredential], hmac_secrets: dict[str, tuple[Consumer, bytes]] | None = None) -> None:
        self.consumers = {c.name: c for c in consumers}
        self.hmac = hmac_secrets or {}  # key id -> (consumer, secret): recoverable by necessity, from env or file
        self._keys = {k.sha256: k for k in keys}
        self._basic = {b.username: b for b in basics}

    def by_key(self, presented: bytes) -> KeyCredential | None:
        found = self._keys.get(hashlib.sha256(presented).digest())
        if found is None or (found.expires is not None and found.expires <= time.time()):
            return None
        return found

    def basic(self, username: str) -> BasicCredential | None:
        found = self._basic.get(username)
        if found is None or (found.expires is not None and found.expires <= time.time()):
            return None
        return found
