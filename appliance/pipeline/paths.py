"""The path a route is chosen by: percent-decoded, dot segments removed, slashes merged.

Routes are matched the way nginx picks a location, on the normalised path, so ``/x/../admin``,
``//admin``, ``/./admin`` and ``/static/%2e%2e/admin`` all reach the ``/admin`` route and its
policy. A path whose dot segments climb above the root is refused (nginx answers 400 too): without
such paths, the raw target forwarded below an upstream's base path cannot leave it either.
"""
from __future__ import annotations

from urllib.parse import unquote_to_bytes


class PathEscapesRoot(ValueError):
    """The path's ``..`` segments climb above ``/``."""


def normalise_path(raw: bytes) -> str:
    """The normalised form of a raw request path (no query); raise PathEscapesRoot."""
    if b"%" not in raw and b"/." not in raw and b"//" not in raw:
        return raw.decode("utf-8", "surrogateescape")  # the common case: nothing to do
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    out: list[bytes] = []
    segments = decoded.split(b"/")
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == b"..":
            if not out:
                raise PathEscapesRoot(raw.decode("latin-1"))
            out.pop()
            if i == last:
                out.append(b"")
        elif segment == b".":
            if i == last:
                out.append(b"")
        elif segment or i == last:
            out.append(segment)
    return ("/" + "/".join(s.decode("utf-8", "surrogateescape") for s in out)) if out else "/"
