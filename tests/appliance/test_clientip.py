from __future__ import annotations

import ipaddress

import pytest

from appliance.pipeline.clientip import ClientIPResolver

R = ClientIPResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.2/32")])


@pytest.mark.parametrize(("peer", "xff", "client", "trusted"), [
    ("203.0.113.9", b"1.2.3.4", "203.0.113.9", False),          # untrusted peer: XFF ignored
    ("10.0.0.1", None, "10.0.0.1", True),
    ("10.0.0.1", b"1.2.3.4", "1.2.3.4", True),
    ("10.0.0.1", b"6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4", True),  # right-most untrusted hop
    ("10.0.0.1", b"10.0.0.9, 10.0.0.7", "10.0.0.9", True),        # all trusted: left-most
    ("10.0.0.1", b"1.2.3.4, garbage", "10.0.0.1", True),          # a broken hop stops the walk
    ("127.0.0.2", b"2001:db8::1", "2001:db8::1", True),
])
def test_resolve(peer: str, xff: bytes | None, client: str, trusted: bool) -> None:
    assert R.resolve(peer, xff) == (client, trusted)
