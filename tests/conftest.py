from __future__ import annotations

import datetime
import os
import shutil
from typing import TYPE_CHECKING
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Upstream, start_upstream, stop

if TYPE_CHECKING:
    from .servers.postgres import Postgres
    from .servers.redis import RedisServer

SHARED = Path(os.environ.get("EDGEWARD_SHARED_DIR", Path(__file__).resolve().parent.parent.parent / "shared"))
CRS_DIR = Path(os.environ.get("EDGEWARD_CRS_DIR", "/usr/share/modsecurity-crs"))


@pytest.fixture(scope="session")
def crs_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory with Debian's CRS 3.3.4 imported and globally active."""
    if not CRS_DIR.is_dir():
        pytest.skip(f"{CRS_DIR} is absent (Debian package modsecurity-crs; make test installs it)")
    from appliance.bundles import activations_for, import_bundle

    state = tmp_path_factory.mktemp("crs-state")
    result = import_bundle(state, CRS_DIR)
    activations_for(state).activate(result.manifest.digest, result.manifest.ref, reason="tests")
    return state


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, made with cryptography."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName("app.example.test"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def upstream_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = start_upstream(tmp_path_factory.mktemp("upA"), "A")
    yield up
    stop(up.proc)


@pytest.fixture(scope="module")
def upstream_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = start_upstream(tmp_path_factory.mktemp("upB"), "B")
    yield up
    stop(up.proc)


@pytest.fixture(scope="session")
def postgres() -> Iterator["Postgres"]:
    """A real PostgreSQL server (Debian's package) on a free loopback port, for the whole run."""
    from .servers.postgres import Postgres, binaries, remove, start_postgres

    if binaries() is None:
        pytest.skip("PostgreSQL server binaries are absent (Debian package postgresql; make test installs it)")
    server: Postgres = start_postgres()
    yield server
    remove(server)


@pytest.fixture
def redis_server() -> Iterator["RedisServer"]:
    """A real redis-server on a free loopback port, for one test."""
    from .servers.redis import RedisServer, remove, start_redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is absent (Debian package redis-server; make test installs it)")
    server: RedisServer = start_redis()
    yield server
    remove(server)
