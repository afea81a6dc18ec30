#!/usr/bin/env python3
"""Edgeward vs nginx as plain reverse proxies in front of the same origin, driven by wrk in one run.

Starts an origin (nginx returning a small body), nginx as a reverse proxy to it, and Edgeward with
no protections; runs wrk against each (same connections, threads, duration and request) and prints
requests/s, p99 latency and the ratio Edgeward/nginx. Loopback only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}-error.log warn;
daemon off;
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

PROXY = """upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;
  location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"""


def start_nginx(tmp: str, name: str, body: str, workers: int) -> subprocess.Popen[bytes]:
    conf = Path(tmp) / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=tmp, name=name, body=body))
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)


def wrk(port: int, args: argparse.Namespace, path: str = "/bench?q=1") -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
         "-H", "Host: bench.test", f"http://127.0.0.1:{port}{path}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses on port {port}:\n{out}")
    return rps, float(p99.group(1)) * scale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="proxy workers (both)")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (make bench installs it)")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-") as tmp:
        try:
            origin, nginx_port, edge_port, admin_port = free_port(), free_port(), free_port(), free_port()
            procs.append(start_nginx(tmp, "origin", ORIGIN.format(port=origin), 1))
            procs.append(start_nginx(tmp, "proxy", PROXY.format(origin=origin, port=nginx_port), args.workers))
            cfg = Path(tmp) / "edgeward.yaml"
            cfg.write_text(
                f"listen: 127.0.0.1:{edge_port}\nworkers: {args.workers}\nstate_dir: {tmp}/state\n"
                f"access_log: {{enabled: false}}\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n"
                f"domains:\n  - hosts: [bench.test]\n    upstream: http://127.0.0.1:{origin}\n    waf: {{mode: off}}\n"
            )
            env = dict(os.environ, EDGEWARD_LOG_LEVEL="WARNING")
            procs.append(subprocess.Popen([str(ROOT / ".venv/bin/edgeward"), "serve", "-c", str(cfg)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in (origin, nginx_port, edge_port):
                wait_port(port)
            time.sleep(1.0)
            wrk(nginx_port, argparse.Namespace(**{**vars(args), "duration": 2}))  # warm both
            wrk(edge_port, argparse.Namespace(**{**vars(args), "duration": 2}))
            n_rps, n_p99 = wrk(nginx_port, args)
            e_rps, e_p99 = wrk(edge_port, args)
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM if proc is procs[-1] else signal.SIGQUIT)
            for proc in procs:
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"small GET, {args.connections} connections, {args.duration}s, {args.workers} workers each")
    print(f"{'':10} {'req/s':>10} {'p99 ms':>8}")
    print(f"{'nginx':10} {n_rps:>10.0f} {n_p99:>8.2f}")
    print(f"{'edgeward':10} {e_rps:>10.0f} {e_p99:>8.2f}")
    print(f"ratio edgeward/nginx: {e_rps / n_rps:.2f} (target >= 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
