"""A JWKS (an identity provider's signing keys) fetched from a URL and cached.

Fetched in a thread (at most ``MAX_BYTES``, ``TIMEOUT`` seconds), kept for ``MAX_AGE`` and then
refreshed in the background; a token with an unknown ``kid`` triggers a refresh at most once per
``UNKNOWN_KID_EVERY`` seconds (so a flood of made-up kids cannot make the gateway hammer the IdP);
while the IdP is down the keys already fetched keep working. A key is never guessed: an unknown
``kid`` after the refresh is a failed check.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import Any

import jwt

log = logging.getLogger("edgeward.authn")

MAX_BYTES = 1 << 20
MAX_KEYS = 100
TIMEOUT = 5.0
MAX_AGE = 600.0
UNKNOWN_KID_EVERY = 30.0


class JWKSCache:
    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        self.fetched = 0.0  # monotonic time of the last good fetch
        self._last_attempt = -UNKNOWN_KID_EVERY
        self._refreshing: asyncio.Task[None] | None = None

    def _fetch(self) -> dict[str | None, tuple[jwt.PyJWK, str | None]]:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json", "User-Agent": "edgeward"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - the operator's URL
            body = response.read(MAX_BYTES + 1)
        if len(body) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        data: Any = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or len(data["keys"]) > MAX_KEYS:
            raise ValueError(f"not a JWKS of at most {MAX_KEYS} keys")
        found: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        for entry in data["keys"]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_dict(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type this library cannot use: skipped, the others still count
            alg = entry.get("alg")
            found[key.key_id] = (key, alg if isinstance(alg, str) else None)  # the algorithm the IdP pinned, if any
        return found

    async def refresh(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            keys = await asyncio.to_thread(self._fetch)
        except (OSError, ValueError) as exc:
            log.warning("authn: JWKS %s unavailable (%s); the %d key(s) fetched before stay in use", self.url, exc,
                        len(self.keys))
            return
        self.keys, self.fetched = keys, time.monotonic()

    async def key(self, kid: str | None) -> tuple[jwt.PyJWK, str | None] | None:
        if self.fetched and time.monotonic() - self.fetched > MAX_AGE and self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self.refresh())
            self._refreshing.add_done_callback(lambda _: setattr(self, "_refreshing", None))
        found = self.keys.get(kid)
        if found is None and time.monotonic() - self._last_attempt >= UNKNOWN_KID_EVERY:
            await self.refresh()
            found = self.keys.get(kid)
        return found
