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

    def start(self, *options: str) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning", *options],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait()

    def wait(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
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


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url.rsplit("/", 1)[0]  # a cluster has database 0 only

    def keys(self) -> list[str]:
        return [k for node in self.nodes for k in node.cli("--scan").split()]


def start_cluster(count: int = 3) -> RedisCluster:
    """``count`` masters made into one cluster by ``redis-cli --cluster create``."""
    if shutil.which("redis-server") is None:
        raise FileNotFoundError("redis-server (Debian package redis-server)")
    nodes = []
    for _ in range(count):
        node = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="edgeward-redis-cluster-")))
        node.start("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                   "--cluster-config-file", str(node.dir / "nodes.conf"))
        nodes.append(node)
    subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                    "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, timeout=60, check=True)
    deadline = time.monotonic() + 30
    while not all("cluster_state:ok" in n.cli("cluster", "info") for n in nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster never reached cluster_state:ok")
        time.sleep(0.1)
    return RedisCluster(nodes)


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisServer

    def url(self, name: str = "edgeward") -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{name}"

    def master_port(self, name: str = "edgeward") -> int:
        return int(self.sentinel.cli("sentinel", "get-master-addr-by-name", name).split()[1])


def start_sentinel() -> SentinelSet:
    """A master, its replica and one sentinel (quorum 1) that fails over within seconds."""
    master = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="edgeward-redis-master-")))
    master.start()
    master.cli("config", "set", "repl-diskless-sync-delay", "0")  # else the first sync waits 5 s
    replica = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="edgeward-redis-replica-")))
    replica.start("--replicaof", "127.0.0.1", str(master.port))
    sentinel = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="edgeward-redis-sentinel-")))
    conf = sentinel.dir / "sentinel.conf"
    conf.write_text(f"port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.dir}\n"
                    f"sentinel monitor edgeward 127.0.0.1 {master.port} 1\n"
                    "sentinel down-after-milliseconds edgeward 1000\nsentinel failover-timeout edgeward 5000\n")
    sentinel.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    sentinel.wait()
    deadline = time.monotonic() + 20
    while "slaves=1" not in sentinel.cli("info", "sentinel") or \
            "master_link_status:up" not in replica.cli("info", "replication"):  # found and in sync
        if time.monotonic() > deadline:
            raise RuntimeError("the replica never synced, or the sentinel never saw it")
        time.sleep(0.1)
    return SentinelSet(master, replica, sentinel)
