"""Challenges for clients over a CC limit: a cookie a real browser carries back, or a JavaScript
proof of work; passing either earns a pass cookie.

Every token is ``kind.expiry[.fields].signature`` with an HMAC-SHA256 over the rest and over what it
is bound to (the domain, the client's address and its User-Agent), so a token is worthless from
another address, browser or site, and after its expiry. Tokens hold no state: any worker or node
with the same key checks them. A proof of work is a nonce the client must extend with a counter
until SHA-256 of the two has ``difficulty`` leading zero bits (about 2^difficulty hashes).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

PASS_COOKIE = "ew_pass"
COOKIE_CHALLENGE = "ew_challenge"
POW_COOKIE = "ew_pow"
COOKIE_TTL = 60  # seconds a cookie challenge or a proof-of-work challenge stays valid


def load_key(path: Path) -> bytes:
    """The node's challenge key, made on first use (0600). Nodes that serve one domain need the
    same file, or a client that passed on one node is challenged again on the next."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker made it first
        for _ in range(100):
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.01)
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + 8 - byte.bit_length()
    return bits


class Challenges:
    def __init__(self, key: bytes, pass_for: float, difficulty: int) -> None:
        self.key = key
        self.pass_for = pass_for
        self.difficulty = difficulty

    def _sign(self, body: str, domain: str, ip: str, agent: bytes) -> str:
        mac = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in (body.encode(), domain.encode(), ip.encode(), agent):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.hexdigest()[:32]

    def _make(self, kind: str, ttl: float, fields: list[str], domain: str, ip: str, agent: bytes) -> str:
        body = ".".join([kind, str(int(time.time() + ttl)), *fields])
        return f"{body}.{self._sign(body, domain, ip, agent)}"

    def _check(self, token: str, kind: str, domain: str, ip: str, agent: bytes) -> list[str] | None:
        """The token's fields when it is this kind, signed for this client and not expired."""
        body, _, signature = token.rpartition(".")
        parts = body.split(".")
        if len(parts) < 2 or parts[0] != kind or not parts[1].isdigit() or int(parts[1]) < time.time():
            return None
        if not hmac.compare_digest(signature, self._sign(body, domain, ip, agent)):
            return None
        return parts[2:]

    def pass_token(self, domain: str, ip: str, agent: bytes) -> str:
        return self._make("p1", self.pass_for, [], domain, ip, agent)

    def passed(self, token: str, domain: str, ip: str, agent: bytes) -> bool:
        return self._check(token, "p1", domain, ip, agent) is not None

    def cookie_token(self, domain: str, ip: str, agent: bytes) -> str:
        return self._make("c1", COOKIE_TTL, [], domain, ip, agent)

    def cookie_answered(self, token: str, domain: str, ip: str, agent: bytes) -> bool:
        return self._check(token, "c1", domain, ip, agent) is not None

    def pow_token(self, domain: str, ip: str, agent: bytes) -> str:
        return self._make("w1", COOKIE_TTL, [str(self.difficulty), secrets.token_hex(8)], domain, ip, agent)

    def pow_answered(self, answer: str, domain: str, ip: str, agent: bytes) -> bool:
        """``answer`` is ``TOKEN~COUNTER`` as the challenge page sets it."""
        token, _, counter = answer.rpartition("~")
        fields = self._check(token, "w1", domain, ip, agent)
        if fields is None or len(fields) != 2 or not counter.isdigit() or len(counter) > 12:
            return False
        digest = hashlib.sha256(f"{token}~{counter}".encode()).digest()
        return leading_zero_bits(digest) >= int(fields[0])
