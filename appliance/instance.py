"""One appliance per address and per state directory.

Granian binds with SO_REUSEPORT, so a second appliance started on the same address would quietly
share the port and take part of the traffic under its own policy. Before anything listens, the
supervisor checks that every address is free and takes an exclusive lock on the state directory
(held for its whole life), and records which config file it serves so ``edgeward reload -c``
with another file cannot reload it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from appliance.config.schema import Config, parse_listen
from appliance.errors import EdgewardError


class InstanceError(EdgewardError):
    """Another process holds an address or the state directory this appliance needs."""


@dataclass(frozen=True, slots=True)
class Running:
    pid: int
    config: str


def addresses(config: Config) -> list[tuple[str, str]]:
    out = [("listen", config.listen)]
    if config.tls is not None:
        out.append(("tls.listen", config.tls.listen))
    out.append(("admin.listen", config.admin.listen))
    return out


def check_free(config: Config) -> None:
    """Raise InstanceError naming the first address something already listens on."""
    for key, value in addresses(config):
        host, port = parse_listen(value)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine; a listener is not
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise InstanceError(f"{key} {value}: address already in use ({exc.strerror})") from exc


class StateLock:
    """An exclusive flock on ``state_dir/run/edgeward.lock`` plus the pid file with our config."""

    def __init__(self, config: Config, config_path: str) -> None:
        self.run_dir = config.state_dir / "run"
        self.config_path = str(Path(config_path).resolve())
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / "edgeward.lock", "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            other = running(self.run_dir)
            who = f"pid {other.pid} serving {other.config}" if other else "another process"
            raise InstanceError(f"state_dir {self.run_dir.parent} is in use by {who}") from None
        self._file = handle
        tmp = self.run_dir / "edgeward.pid.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "config": self.config_path}) + "\n")
        os.replace(tmp, self.run_dir / "edgeward.pid")

    def release(self) -> None:
        (self.run_dir / "edgeward.pid").unlink(missing_ok=True)
        if self._file is not None:
            self._file.close()
            self._file = None


def running(run_dir: Path) -> Running | None:
    """The appliance serving this state directory, if one is (its lock is held)."""
    try:
        with open(run_dir / "edgeward.lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: someone runs
            else:
                return None
        data = json.loads((run_dir / "edgeward.pid").read_text())
        return Running(int(data["pid"]), str(data["config"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
