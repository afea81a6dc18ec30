"""A real PostgreSQL server from Debian's packages, started by the tests on a free loopback port.

``initdb`` refuses to run as root, so under root (CI) the cluster belongs to the ``postgres`` user
that Debian's package creates. The role the appliance uses logs in with a password over TCP
(scram-sha-256), as it would in production.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..harness import free_port

PASSWORD = "pg-test-Secret-7f3a"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    port: int
    data: Path
    bin: Path
    user: str | None  # who runs the server (None: this process's user)

    def url(self, database: str = "edgeward", password: str = PASSWORD) -> str:
        return f"postgresql://edgeward:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [*(["runuser", "-u", self.user, "--"] if self.user else []), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(str(self.bin / "psql"), "-h", str(self.data), "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-At", "-c", sql).stdout

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name} OWNER edgeward")
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (what the tests that restart it use); ``immediate`` at the end."""
        subprocess.run([*(["runuser", "-u", self.user, "--"] if self.user else []), str(self.bin / "pg_ctl"),
                        "-D", str(self.data), "-m", mode, "stop"], capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-l", str(self.data / "log"), "start")


def start_postgres() -> Postgres:
    """initdb, start, and create the role and database ``edgeward``; the caller stops it."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (/usr/lib/postgresql/*/bin; Debian package postgresql)")
    user = "postgres" if os.geteuid() == 0 else None
    data = Path(tempfile.mkdtemp(prefix="edgeward-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    pg = Postgres(free_port(), data, bin_dir, user)
    pg._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {pg.port}\nunix_socket_directories = '{data}'\n"
                   "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
    pg.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            pg.psql(f"CREATE ROLE edgeward LOGIN PASSWORD '{PASSWORD}'")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    pg.create_database("edgeward")
    return pg


def remove(pg: Postgres) -> None:
    pg.stop("immediate")
    shutil.rmtree(pg.data, ignore_errors=True)
