"""Host -> domain and path -> route lookup, compiled once per config.

Exact hosts win over wildcards; among wildcards the longest suffix wins (as nginx's server_name);
the catch-all ``*`` takes any host that nothing else matched (nginx's ``default_server``).
Routes match by longest path prefix; a domain without a matching route uses its default route.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def normalise_host(raw: bytes) -> str:
    """Lower-case host without the port and trailing dot; IPv6 literals keep their brackets."""
    host = raw.decode("latin-1").strip(" \t").lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.partition(":")[0].rstrip(".")


_VALID_HOST = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])$")


def valid_host(host: str) -> bool:
    """Letters, digits, dots, hyphens (and underscores, which real names carry), or an IPv6 literal."""
    return _VALID_HOST.match(host) is not None


class HostTable(Generic[T]):
    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._exact: dict[str, T] = {}
        self._any: T | None = None
        wildcards: list[tuple[str, T]] = []
        for pattern, value in entries:
            if pattern == "*":
                self._any = value
            elif pattern.startswith("*."):
                wildcards.append((pattern[1:], value))  # ".example.com"
            else:
                self._exact[pattern] = value
        self._wildcards = sorted(wildcards, key=lambda item: len(item[0]), reverse=True)

    def exact(self, host: str) -> T | None:
        return self._exact.get(host)

    def lookup(self, host: str) -> T | None:
        found = self._exact.get(host)
        if found is not None:
            return found
        for suffix, value in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return value
        return self._any


class RouteTable(Generic[T]):
    def __init__(self, routes: Sequence[tuple[str, T]], default: T) -> None:
        self._routes = sorted(routes, key=lambda item: len(item[0]), reverse=True)
        self._default = default

    def all(self) -> list[T]:
        return [value for _, value in self._routes] + [self._default]

    def lookup(self, path: str) -> T:
        for prefix, value in self._routes:
            if path.startswith(prefix):
                return value
        return self._default
