from __future__ import annotations

import pytest

from appliance.pipeline.routing import HostTable, RouteTable, normalise_host

HOSTS = HostTable([("app.example.test", "app"), ("*.example.com", "wild"), ("*.shop.example.com", "shop"),
                   ("example.com", "apex")])


@pytest.mark.parametrize(("raw", "expected"), [
    (b"app.example.test", "app"),
    (b"APP.Example.Test:8080", "app"),
    (b"app.example.test.", "app"),
    (b"a.example.com", "wild"),
    (b"a.b.example.com", "wild"),
    (b"x.shop.example.com", "shop"),   # longest wildcard wins
    (b"example.com", "apex"),          # a wildcard does not match the bare domain
    (b"evil-example.com", None),
    (b"other.test", None),
    (b"[::1]:8080", None),
])
def test_host_lookup(raw: bytes, expected: str | None) -> None:
    assert HOSTS.lookup(normalise_host(raw)) == expected


ROUTES = RouteTable([("/api", "api"), ("/api/v2", "v2"), ("/healthz", "health")], "default")


@pytest.mark.parametrize(("path", "expected"), [
    ("/", "default"), ("/api", "api"), ("/api/x", "api"), ("/api/v2/x", "v2"), ("/healthz", "health"),
    ("/other/api", "default"),
])
def test_longest_prefix_route(path: str, expected: str) -> None:
    assert ROUTES.lookup(path) == expected


@pytest.mark.parametrize(("raw", "valid"), [
    (b"app.example.test", True), (b"APP.example.test:8080", True), (b"127.0.0.1", True), (b"[::1]:80", True),
    (b"my_host.local", True), (b"localhost%00", False), (b"localhost\x1f", False), (b"a b", False),
    (b"evil.test/x", False), (b"-", False),
])
def test_valid_host(raw: bytes, valid: bool) -> None:
    from appliance.pipeline.routing import valid_host

    assert valid_host(normalise_host(raw)) is valid
