#!/usr/bin/env python3
"""Edgeward vs nginx as plain reverse proxies in front of the same origin, driven by wrk in one run.

Starts an origin (nginx returning a small body), nginx as a reverse proxy to it, and Edgeward with
no protections; runs wrk against each (same connections, threads, duration and request) and prints
requests/s, p99 latency and the ratio Edgeward/nginx. Loopback only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EDGEWARD, ORIGIN, WrkResult, free_port, start_nginx, stop_all, wait_port, wrk  # noqa: E402

PROXY = """upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;
  location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="proxy workers (both)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs; the median is shown")
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
            procs.append(subprocess.Popen([str(EDGEWARD), "serve", "-c", str(cfg)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in (origin, nginx_port, edge_port):
                wait_port(port)
            time.sleep(1.0)
            path = "/bench?q=1"
            wrk(nginx_port, path, 2, args.connections, args.threads)  # warm both
            wrk(edge_port, path, 2, args.connections, args.threads)
            # Alternate the two in rounds and keep each one's median (the machine is shared).
            runs: dict[str, list[WrkResult]] = {"nginx": [], "edgeward": []}
            for _ in range(args.rounds):
                for who, port in (("nginx", nginx_port), ("edgeward", edge_port)):
                    r = wrk(port, path, args.duration, args.connections, args.threads)
                    if r.non_2xx:
                        raise SystemExit(f"{who}: {r.non_2xx} error responses")
                    runs[who].append(r)
            n, e = (sorted(runs[w], key=lambda r: r.rps)[len(runs[w]) // 2] for w in ("nginx", "edgeward"))
            n_rps, n_p99, e_rps, e_p99 = n.rps, n.p99_ms, e.rps, e.p99_ms
        finally:
            stop_all(procs)
    print(f"small GET, {args.connections} connections, {args.rounds} x {args.duration}s alternating (median shown), "
          f"{args.workers} workers each")
    print(f"{'':10} {'req/s':>10} {'p99 ms':>8}")
    print(f"{'nginx':10} {n_rps:>10.0f} {n_p99:>8.2f}")
    print(f"{'edgeward':10} {e_rps:>10.0f} {e_p99:>8.2f}")
    print(f"ratio edgeward/nginx: {e_rps / n_rps:.2f} (target >= 0.50)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
