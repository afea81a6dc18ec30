"""A private redis-server per node, for CC without a configured ``redis:``.

Throttles must be exact across the workers of a node even without a shared Redis (a limit of N
admits N, not N x workers). Rather than a second counting engine, the supervisor runs Debian's
redis-server on a Unix socket in ``state_dir/run`` (no TCP port, no persistence) and the workers
use it exactly as they would a shared one.
"""
from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from appliance.config.cc import LEASE
from appliance.config.schema import Config

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class LocalRedisError(Exception):
    """redis-server is missing or did not start."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / "run" / "cc-redis.sock"


def redis_url(config: Config) -> str | None:
    """The Redis the CC stage uses: the configured one, the node's private one, or none."""
    if config.redis is not None and config.redis.url is not None:
        return config.redis.url
    return f"unix://{socket_path(config.state_dir)}" if config.needs_redis() else None


def limiter_settings(config: Config) -> dict[str, Any] | None:
    """The ``cc.store.Limiter`` arguments of the config (None: no Redis), for the workers, the
    CLI and the admin API alike: they must agree on the lease, which a ban waits out."""
    url = redis_url(config)
    if url is None:
        return None
    redis = config.redis
    return {"url": url, "timeout": redis.timeout if redis else 0.05, "cluster": bool(redis and redis.url and redis.cluster),
            "lease": redis.lease if redis else LEASE, "workers": config.workers}


def start(config: Config) -> subprocess.Popen[bytes] | None:
    """Start the private server when the config throttles without ``redis:``."""
    if (config.redis is not None and config.redis.url is not None) or not config.needs_redis():
        return None
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalRedisError("cc rules without redis: need redis-server (Debian package redis-server) "
                              "or a redis: URL")
    path = socket_path(config.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    proc = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(path.parent), "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 10
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise LocalRedisError(f"redis-server did not start on {path}")
        time.sleep(0.02)
    return proc


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the supervisor dies, even by
    SIGKILL, so no private server outlives the node that owned it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
