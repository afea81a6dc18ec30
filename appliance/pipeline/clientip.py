"""Who the client is: the socket peer, or the right-most untrusted X-Forwarded-For hop."""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIPResolver:
    """Resolves the client address; X-Forwarded-For is believed only when the peer is trusted."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)

    def is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def resolve(self, peer: str, forwarded_for: bytes | None) -> tuple[str, bool]:
        """Return (client ip, whether the peer is a trusted proxy)."""
        if not self.is_trusted(peer):
            return peer, False
        if not forwarded_for:
            return peer, True
        client = peer
        for hop in reversed(forwarded_for.decode("latin-1").split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # a forged or broken hop: stop at the last one we could verify
            client = hop
            if not self.is_trusted(hop):
                break
        return client, True
