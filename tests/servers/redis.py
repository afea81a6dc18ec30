"""A real redis-server (Debian's package) on a free loopback port, started and stopped by the tests."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..harness import free_port


@dataclass
class RedisServer:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on {self.port}")
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout


def start_redis() -> RedisServer:
    if shutil.which("redis-server") is None:
        raise FileNotFoundError("redis-server (Debian package redis-server)")
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="edgeward-redis-")))
    server.start()
    return server


def remove(server: RedisServer) -> None:
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)
