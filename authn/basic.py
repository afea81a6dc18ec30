"""basic-auth: ``Authorization: Basic`` (or ``Proxy-Authorization``) against scrypt hashes.

scrypt is slow on purpose (tens of ms), so a check runs in a thread, at most ``PARALLEL`` at a
time per worker, and a success is remembered for ``REMEMBER`` seconds under a digest of the
username and password (never the password itself), so a client sending the same credentials on
every request pays once."""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time

from authn.consumers import Identity, Registry, check_password
from authn.request import INVALID, AuthRequest, Result, header_values

PARALLEL = 2
REMEMBER = 60.0
MAX_REMEMBERED = 10_000


class BasicAuth:
    def __init__(self, registry: Registry, realm: str = "edgeward") -> None:
        self.registry = registry
        self.challenge = b'Basic realm="' + realm.replace('"', "").encode() + b'", charset="UTF-8"'
        self._checks = asyncio.Semaphore(PARALLEL)
        self._good: dict[bytes, tuple[Identity, float]] = {}

    @staticmethod
    def _credentials(request: AuthRequest) -> list[tuple[str, bytes]] | None:
        found = []
        for name in (b"authorization", b"proxy-authorization"):
            for value in header_values(request, name):
                scheme, _, encoded = value.strip().partition(b" ")
                if scheme.lower() != b"basic":
                    continue
                try:
                    decoded = base64.b64decode(encoded.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return []
                user, sep, password = decoded.partition(b":")
                if not sep:
                    return []
                found.append((user.decode("utf-8", "replace"), password))
        return found or None

    async def authenticate(self, request: AuthRequest) -> Result:
        found = self._credentials(request)
        if found is None:
            return None
        if len(found) != 1:  # malformed, or two credentials
            return INVALID
        username, password = found[0]
        credential = self.registry.basic(username)
        if credential is None:
            return INVALID
        memo = hashlib.sha256(username.encode() + b"\0" + password + b"\0" + credential.scrypt.encode()).digest()
        remembered = self._good.get(memo)
        if remembered is not None and remembered[1] > time.monotonic():
            return remembered[0]
        async with self._checks:
            good = await asyncio.to_thread(check_password, password, credential.scrypt)
        if not good:
            return INVALID
        identity = Identity(credential.consumer, "basic:" + username)
        if len(self._good) >= MAX_REMEMBERED:
            self._good.clear()
        self._good[memo] = (identity, time.monotonic() + REMEMBER)
        return identity
