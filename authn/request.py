"""What the methods read of a request, and what they answer."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from authn.consumers import Identity

INVALID: Literal["invalid"] = "invalid"  # a credential was presented and is wrong (or expired, or two disagree)
Result = Identity | Literal["invalid"] | None  # None: this method's credential is absent


class AuthRequest(Protocol):
    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    @property
    def query(self) -> bytes: ...


def header_values(request: AuthRequest, name: bytes) -> list[bytes]:
    return [value for header, value in request.headers if header == name]
