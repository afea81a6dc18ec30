"""Access lists (tests/appliance/test_access.py for appliance/stages/access.py, cc/iplist.py and
cc/geoip.py): IP/CIDR and country allow and deny lists over HTTP, with MaxMind's official test
databases and with one the tests build, behind a trusted proxy that names the client."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import SHARED
from ..harness import EDGEWARD, Appliance, Upstream, appliance_config, free_port, start_appliance, stop

GEOIP = SHARED / "geoip"


def build_mmdb(path: Path, networks: dict[str, str]) -> None:
    """A country database of our own (network -> ISO code), written by a MaxMind DB writer."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="Edgeward-Test-Country", ipv4_compatible=True)
    for network, code in networks.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    tmp = path.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)  # as MaxMind's updater does: a new file, never one half written


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    if not (GEOIP / "GeoLite2-Country-Test.mmdb").is_file():
        pytest.skip(f"{GEOIP} is absent (set EDGEWARD_SHARED_DIR to the shared material)")
    tmp = tmp_path_factory.mktemp("access")
    db = tmp / "country.mmdb"
    shutil.copy(GEOIP / "GeoLite2-Country-Test.mmdb", db)
    domains = f"""\
  - hosts: [geo.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    access: {{deny_countries: [GB], deny_ips: [203.0.113.0/24, "2001:db8:bad::/48"], allow_ips: [81.2.69.160]}}
    routes:
      - path: /se-only
        access: {{allow_countries: [SE], unknown_country: deny, status: 451}}
      - path: /open
        access: {{deny_countries: [], deny_ips: []}}
  - hosts: [office.test]
    upstream: {upstream_a.url}
    waf: {{mode: off}}
    access: {{allow_ips: [192.0.2.0/28, "2001:db8:1::/64"], deny_ips: [0.0.0.0/0, "::/0"]}}
"""
    extra = f"trusted_proxies: [127.0.0.1/32]\ngeoip: {{database: {db}}}\n"
    appliance = start_appliance(tmp, domains, extra)
    yield appliance
    stop(appliance.proc)


def status(app: Appliance, host: str, client: str, path: str = "/") -> httpx.Response:
    return httpx.get(app.url + path, headers={"Host": host, "X-Forwarded-For": client}, timeout=10)


def test_ip_lists_allow_deny_and_exceptions(app: Appliance) -> None:
    assert status(app, "geo.test", "8.8.8.8").status_code == 200  # in no list, no country
    denied = status(app, "geo.test", "203.0.113.9")
    assert denied.status_code == 403 and denied.headers["x-request-id"]
    assert status(app, "geo.test", "2001:db8:bad::1").status_code == 403
    assert status(app, "geo.test", "2001:db8:bad::1%eth0").status_code == 403  # a zone id is no way around
    assert status(app, "geo.test", "81.2.69.160").status_code == 200  # GB, but on the exception list
    assert status(app, "geo.test", "203.0.113.9", "/open").status_code == 200  # the route clears the lists
    assert status(app, "office.test", "192.0.2.5").status_code == 200
    assert status(app, "office.test", "192.0.2.17").status_code == 403  # only the office's /28
    assert status(app, "office.test", "2001:db8:1::42").status_code == 200
    assert status(app, "office.test", "2001:db8:2::42").status_code == 403


def test_country_lists_use_the_database(app: Appliance) -> None:
    assert status(app, "geo.test", "81.2.69.142").status_code == 403  # GB in the official test database
    assert status(app, "geo.test", "89.160.20.130").status_code == 200  # SE
    assert status(app, "geo.test", "89.160.20.130", "/se-only").status_code == 200
    assert status(app, "geo.test", "175.16.199.1", "/se-only").status_code == 451  # CN: not on the allow list
    assert status(app, "geo.test", "8.8.8.8", "/se-only").status_code == 451  # no country: unknown_country: deny


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path, upstream_a: Upstream) -> None:
    domains = f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n    access: {{deny_ips: [127.0.0.0/8]}}\n"
    app = start_appliance(tmp_path, domains)  # no trusted proxies: the socket peer is the client
    try:
        assert status(app, "a.test", "8.8.8.8").status_code == 403
    finally:
        stop(app.proc)


def test_a_database_the_tests_build_is_read_and_replaced_while_running(tmp_path: Path, upstream_a: Upstream) -> None:
    db = tmp_path / "own.mmdb"
    build_mmdb(db, {"198.51.100.0/24": "KP", "2001:db8:7::/48": "FR"})
    domains = f"  - hosts: [b.test]\n    upstream: {upstream_a.url}\n    waf: {{mode: off}}\n    access: {{deny_countries: [KP]}}\n"
    app = start_appliance(tmp_path, domains, f"trusted_proxies: [127.0.0.1/32]\ngeoip: {{database: {db}}}\n")
    try:
        blocked = status(app, "b.test", "198.51.100.7")
        assert blocked.status_code == 403
        assert status(app, "b.test", "2001:db8:7::1").status_code == 200 and status(app, "b.test", "192.0.2.1").status_code == 200
        # the audit record says where the client is, and why it was refused
        rid = blocked.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run([EDGEWARD, "audit", "search", "--country", "KP", "--stage", "access", "--json",
                                  "-c", str(app.config)], capture_output=True, text=True, timeout=30)
            found = [json.loads(line) for line in out.stdout.splitlines()]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [r["id"] for r in found] == [rid] and found[0]["reason"] == "access.country_denied"
        # a new database (as the updater writes it) is picked up within seconds, no reload needed
        build_mmdb(db, {"192.0.2.0/24": "KP"})
        deadline = time.monotonic() + 15

        def new_answers() -> bool:  # each worker looks at the file on its own: ask enough times to reach both
            return all(status(app, "b.test", "192.0.2.1").status_code == 403
                       and status(app, "b.test", "198.51.100.7").status_code == 200 for _ in range(8))

        while not new_answers():
            assert time.monotonic() < deadline, "the new database was never used"
            time.sleep(0.3)
        # a broken file in its place is refused and the last good one kept
        db.write_bytes(b"not a maxmind db" * 100)
        deadline = time.monotonic() + 15
        while app.logs().count("not a readable MaxMind DB") < 2:  # both workers looked at it
            assert time.monotonic() < deadline, "the broken file was never noticed"
            status(app, "b.test", "192.0.2.1")
            time.sleep(0.3)
        assert all(status(app, "b.test", "192.0.2.1").status_code == 403 for _ in range(8))
    finally:
        stop(app.proc)


def test_a_missing_or_corrupt_database_is_a_config_error(tmp_path: Path, upstream_a: Upstream) -> None:
    body = f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n    access: {{deny_countries: [KP]}}\n"
    for name, content in (("missing.mmdb", None), ("corrupt.mmdb", b"\x00garbage" * 50)):
        if content is not None:
            (tmp_path / name).write_bytes(content)
        config = tmp_path / "edgeward.yaml"
        config.write_text(appliance_config(tmp_path, free_port(), free_port(), body, f"geoip: {{database: {tmp_path / name}}}\n"))
        out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "geoip.database" in out.stderr and name in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    config.write_text(appliance_config(tmp_path, free_port(), free_port(), body))
    out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "GeoIP database" in out.stderr
    config.write_text(appliance_config(tmp_path, free_port(), free_port(),
                                       f"  - hosts: [a.test]\n    upstream: {upstream_a.url}\n    access: {{deny_ips: [10.0.0.0/33]}}\n"))
    out = subprocess.run([EDGEWARD, "check", "-c", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "access.deny_ips" in out.stderr and "10.0.0.0/33" in out.stderr
