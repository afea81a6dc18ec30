"""Cross-field checks, run on the raw config data so they report alongside type errors.

An operator fixes every problem in one pass: a duplicate host or a listener clash is reported even
when another key elsewhere has the wrong type (the schema alone would stop at the type errors).
"""
from __future__ import annotations

from typing import Any

from appliance.config.types import parse_listen

Loc = tuple[Any, ...]
_WILDCARDS = {"0.0.0.0", "::"}


def cross_checks(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    return duplicate_hosts(data) + duplicate_routes(data) + listener_clashes(data)


def _domains(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    domains = data.get("domains")
    return [(i, d) for i, d in enumerate(domains) if isinstance(d, dict)] if isinstance(domains, list) else []


def duplicate_hosts(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """A host may belong to one domain only (the catch-all ``*`` too)."""
    owner: dict[str, int] = {}
    problems = []
    for d, domain in _domains(data):
        hosts = domain.get("hosts")
        for h, host in enumerate(hosts if isinstance(hosts, list) else []):
            if not isinstance(host, str):
                continue
            name = host.strip().lower().rstrip(".")
            if name in owner:
                problems.append((("domains", d, "hosts", h), f"duplicate host {name!r} (also in domains[{owner[name]}])"))
            else:
                owner[name] = d
    return problems


def duplicate_routes(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    problems = []
    for d, domain in _domains(data):
        routes = domain.get("routes")
        seen: dict[str, int] = {}
        for r, route in enumerate(routes if isinstance(routes, list) else []):
            path = route.get("path") if isinstance(route, dict) else None
            if isinstance(path, str):
                if path in seen:
                    problems.append((("domains", d, "routes", r, "path"),
                                     f"route path {path!r} appears twice (also routes[{seen[path]}])"))
                else:
                    seen[path] = r
    return problems


def _overlap(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two listeners clash on the same port when either is a wildcard of the other's family."""
    if a[1] != b[1]:
        return False
    if a[0] == b[0]:
        return True
    if "::" in (a[0], b[0]):
        return True  # a dual-stack wildcard takes every address on the port
    return (a[0] in _WILDCARDS or b[0] in _WILDCARDS) and ":" not in a[0] + b[0]


def listener_clashes(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """The public, TLS and admin listeners need distinct addresses; a wildcard covers every
    address of its port (``0.0.0.0:8001`` clashes with ``127.0.0.1:8001``)."""
    candidates: list[tuple[Loc, Any]] = [(("listen",), data.get("listen", "127.0.0.1:8080"))]
    tls = data.get("tls")
    if isinstance(tls, dict):
        candidates.append((("tls", "listen"), tls.get("listen", "0.0.0.0:8443")))
    admin = data.get("admin")
    candidates.append((("admin", "listen"), admin.get("listen", "127.0.0.1:8001") if isinstance(admin, dict)
                       else "127.0.0.1:8001"))
    seen: list[tuple[Loc, str, tuple[str, int]]] = []
    problems = []
    for loc, value in candidates:
        try:
            addr = parse_listen(value)
        except (ValueError, TypeError):
            continue  # the schema reports it
        addr = ("localhost" if addr[0] == "localhost" else addr[0], addr[1])
        host = "127.0.0.1" if addr[0] == "localhost" else addr[0]
        for other_loc, other_value, other in seen:
            if _overlap((host, addr[1]), other):
                problems.append((loc, f"{value} is already used by {'.'.join(other_loc)} ({other_value})"))
                break
        seen.append((loc, str(value), (host, addr[1])))
    return problems
