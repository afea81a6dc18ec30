"""The supervisor: one process that owns signals and runs a granian server per listener.

Listeners: the public HTTP address, the TLS address (if configured) and the admin address, each a
granian server in a child process with its own workers. Granian respawns a worker that dies; the
supervisor stops everything if a whole listener dies. SIGHUP asks the workers to reload.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from appliance.config.schema import Config, parse_listen
from appliance.config.loader import load_config
from appliance.errors import ConfigError
from appliance.instance import StateLock, check_free
from appliance.reloader import GOOD_ENV, remember_good, request_reload

log = logging.getLogger("edgeward.server")


def _run_listener(target: str, address: str, port: int, workers: int, tls: tuple[str, str] | None) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    kwargs: dict[str, Any] = {}
    if tls:
        from granian.constants import SSLProtocols

        kwargs.update(ssl_cert=Path(tls[0]), ssl_key=Path(tls[1]), ssl_protocol_min=SSLProtocols.tls12)
    Granian(
        target,
        factory=True,
        address=address,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.auto,
        websockets=True,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=30,
        http1_settings=HTTP1Settings(header_read_timeout=30_000, max_buffer_size=256 * 1024),
        log_access=False,
        **kwargs,
    ).serve()


def listeners(config: Config) -> list[tuple[str, str, int, int, tuple[str, str] | None]]:
    public = parse_listen(config.listen)
    out: list[tuple[str, str, int, int, tuple[str, str] | None]] = [
        ("appliance.http.app:create_app", public[0], public[1], config.workers, None)]
    if config.tls is not None:
        host, port = parse_listen(config.tls.listen)
        out.append(("appliance.http.app:create_app", host, port, config.workers, (str(config.tls.cert), str(config.tls.key))))
    host, port = parse_listen(config.admin.listen)
    out.append(("appliance.admin.app:create_admin", host, port, 1, None))
    return out


def serve(config_path: str) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code. Raises InstanceError when another
    process holds one of the addresses or the state directory."""
    from appliance.runtime import runtime_problems

    try:
        text: str | None = Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None  # load_config reports it with the file name
    config = load_config(config_path, check=runtime_problems, text=text)
    lock = StateLock(config, config_path)
    lock.acquire()
    try:
        check_free(config)
        if config.audit.enabled:
            from appliance.observe.auditstore import open_store

            open_store(config.audit.store, config.state_dir).close()  # a corrupt, locked or unreachable store stops the start, named
        os.environ[GOOD_ENV] = str(remember_good(config, text or ""))  # what workers fall back to
        return _serve(config_path, config)
    finally:
        lock.release()


def _serve(config_path: str, config: Config) -> int:
    from appliance.runtime import runtime_problems

    run_dir = config.state_dir / "run"
    metrics_dir = run_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEWARD_CONFIG"] = str(Path(config_path).resolve())
    os.environ["EDGEWARD_METRICS_DIR"] = str(metrics_dir)

    from appliance import localredis

    try:
        private_redis = localredis.start(config)
    except localredis.LocalRedisError as exc:
        log.error("%s", exc)
        return 2
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_run_listener, args=spec, daemon=False) for spec in listeners(config)]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    def hup(signum: int, frame: Any) -> None:
        try:
            request_reload(load_config(config_path, check=runtime_problems))
            log.info("SIGHUP: reload requested")
        except ConfigError as exc:
            log.error("SIGHUP: config refused, still serving the previous one:\n%s", exc)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    for child in children:
        child.start()
    log.info("edgeward serving on %s (admin %s), %d workers", config.listen, config.admin.listen, config.workers)
    code = 0
    while not stopping:
        time.sleep(0.2)
        dead = [c for c in children if not c.is_alive()]
        if dead:
            log.error("a listener exited (code %s); stopping", dead[0].exitcode)
            code = 1
            break
    for child in children:
        if child.is_alive() and child.pid:
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 35
    for child in children:
        child.join(max(0.1, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
    localredis.stop(private_redis)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve(sys.argv[1]))
