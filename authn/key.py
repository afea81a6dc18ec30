"""key-auth: an API key in a header (default ``apikey``), a query argument, or ``Authorization:
Bearer`` (when enabled), as Kong's and APISIX's key-auth read it. A request carrying two different
keys is refused: which one would count is a guess an attacker could exploit."""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

from authn.consumers import Identity, Registry
from authn.request import INVALID, AuthRequest, Result, header_values


class KeyAuth:
    challenge = b'Key realm="edgeward"'

    def __init__(self, registry: Registry, header: str | None = "apikey", query: str | None = None,
                 bearer: bool = False) -> None:
        self.registry = registry
        self.header = header.lower().encode() if header else None
        self.query = query.encode() if query else None
        self.bearer = bearer

    def presented(self, request: AuthRequest) -> set[bytes]:
        found: set[bytes] = set()
        if self.header is not None:
            found.update(v.strip() for v in header_values(request, self.header))
        if self.query is not None and request.query:
            for pair in request.query.split(b"&"):
                name, _, value = pair.partition(b"=")
                if unquote_to_bytes(name.replace(b"+", b" ")) == self.query:
                    found.add(unquote_to_bytes(value.replace(b"+", b" ")))
        if self.bearer:
            for value in header_values(request, b"authorization"):
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    found.add(token.strip())
        return found

    def authenticate(self, request: AuthRequest) -> Result:
        keys = self.presented(request)
        if not keys:
            return None
        if len(keys) > 1:
            return INVALID
        credential = self.registry.by_key(next(iter(keys)))
        if credential is None:
            return INVALID
        return Identity(credential.consumer, credential.identifier)
