"""IP and CIDR lists (IPv4 and IPv6) that answer "is this address in the list" in a few steps.

Networks are kept as integer ranges per address family, merged and sorted, so a lookup is one
bisection whatever the list's length (a deny list of 100,000 networks costs what one of 10 does).
"""
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable


class IPList:
    def __init__(self, networks: Iterable[str]) -> None:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in networks:
            net = ipaddress.ip_network(text, strict=False)
            ranges[net.version].append((int(net.network_address), int(net.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, spans in ranges.items():
            merged: list[tuple[int, int]] = []
            for start, end in sorted(spans):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            self._starts[version] = [s for s, _ in merged]
            self._ends[version] = [e for _, e in merged]
        self.empty = not any(self._starts.values())

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id names a link, not a host
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        starts = self._starts[ip.version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[ip.version][i]
