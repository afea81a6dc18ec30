"""Shared pieces of the benchmarks: free ports, nginx instances, wrk runs and their parsing.

Loopback only: every server here binds 127.0.0.1 and wrk targets 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDGEWARD = ROOT / ".venv" / "bin" / "edgeward"

NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}-error.log {log_level};
daemon off;
{modules}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body-{name};
  proxy_temp_path {tmp}/proxy-{name};
  fastcgi_temp_path {tmp}/fcgi-{name};
  uwsgi_temp_path {tmp}/uwsgi-{name};
  scgi_temp_path {tmp}/scgi-{name};
  {body}
}}
"""

ORIGIN = """server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;
  location / {{ default_type text/plain; return 200 "hello from the origin\\n"; }} }}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def start_nginx(tmp: str, name: str, body: str, workers: int, modules: str = "", log_level: str = "warn") -> subprocess.Popen[bytes]:
    conf = Path(tmp) / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, name=name, body=body, modules=modules, log_level=log_level))
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    non_2xx: int


def wrk(port: int, path: str, duration: int, connections: int, threads: int = 1, script: str | None = None,
        host: str = "bench.test", timeout: int = 10) -> WrkResult:
    """``timeout``: seconds before wrk counts a request as failed (its own default, 2 s, would hide
    slow answers in the large-body mix instead of measuring them)."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", "--timeout",
           f"{timeout}s", "-H", f"Host: {host}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, float(p99.group(1)) * scale, int(bad.group(1)) if bad else 0)


def rss_mib(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return out


def descendants(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """nginx stops gracefully on SIGQUIT, Edgeward (the last one started) on SIGTERM."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM if proc is procs[-1] else signal.SIGQUIT)
    for proc in procs:
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


def crs_for_both(tmp: str, crs: str) -> tuple[str, Path, Path]:
    """Import ``crs`` into a state directory under ``tmp`` for Edgeward and write the ModSecurity
    rules file nginx loads: exactly the files and settings Edgeward compiles (paranoia 1,
    blocking). Returns (bundle reference, state directory, nginx rules file). Also makes ``tmp``
    readable: nginx's workers (user nobody) buffer large request bodies to files under it, and
    without that nginx answered 500 to large bodies, which a benchmark took for a fast block."""
    from appliance.bundles import activations_for, import_bundle
    from waf.compiler import engine_settings, policy_action
    from waf.policy import Policy

    os.chmod(tmp, 0o755)
    state = Path(tmp) / "state"
    bundle = import_bundle(state, crs).manifest
    activations_for(state).activate(bundle.digest, bundle.ref, reason="bench")
    bundle_dir = state / "bundles" / bundle.digest
    policy = Policy(mode="block", paranoia=1)
    rules = Path(tmp) / "modsec.conf"
    includes = [f"Include {bundle_dir / rel}\n" for rel in bundle.load_order]
    rules.write_text(engine_settings(policy) + includes[0] + policy_action(policy) + "".join(includes[1:]))
    return bundle.ref, state, rules
