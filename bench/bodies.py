"""Memory under large uploads: N concurrent multipart uploads of SIZE MiB each (benign, so they are
inspected in full and forwarded) through one Edgeward worker and through one nginx+ModSecurity
worker, with the same CRS files and settings. Prints each side's worker RSS before and at its
peak, and the slowest upload. Loopback only.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import crs_for_both, EDGEWARD, descendants, free_port, rss_mib, start_nginx, stop_all, wait_port  # noqa: E402


MODULE = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so"
CRS = "/usr/share/modsecurity-crs"
ORIGIN = """server {{ listen 127.0.0.1:{port}; client_max_body_size 0;
  location / {{ default_type text/plain; return 200 "ok\\n"; }} }}"""
WAF_PROXY = """server {{ listen 127.0.0.1:{port}; client_max_body_size 0;
  modsecurity on; modsecurity_rules_file {rules};
  location / {{ proxy_pass http://127.0.0.1:{origin}; proxy_http_version 1.1; }} }}"""


def upload(size_mib: int) -> bytes:
    content = (b"lorem ipsum dolor sit amet " * 40000)[: size_mib * 1024 * 1024]
    return (b'--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nquarterly figures\r\n'
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="report.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + content + b"\r\n--b0undary--\r\n")


def measure(port: int, pids: list[int], body: bytes, clients: int) -> tuple[float, float, float]:
    """(RSS before MiB, peak RSS MiB, slowest upload s) of the largest of ``pids``."""
    before = max(rss_mib(pids))
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], max(rss_mib(pids) or [0.0]))
            time.sleep(0.01)

    slowest = [0.0]

    def send() -> None:
        started = time.monotonic()
        resp = httpx.post(f"http://127.0.0.1:{port}/upload", content=body, timeout=120,
                          headers={"Host": "bench.test", "Content-Type": "multipart/form-data; boundary=b0undary"})
        assert resp.status_code == 200, resp.status_code
        slowest[0] = max(slowest[0], time.monotonic() - started)

    watcher = threading.Thread(target=sample)
    watcher.start()
    senders = [threading.Thread(target=send) for _ in range(clients)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    done.set()
    watcher.join()
    return before, peak[0], slowest[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--size", type=int, default=12, help="MiB per upload (the WAF's body_limit is 12.5 MiB)")
    args = parser.parse_args()
    body = upload(args.size)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edgeward-bodybench-") as tmp:
        try:
            ref, state, rules = crs_for_both(tmp, CRS)
            origin, nginx_port, edge_port, admin_port = free_port(), free_port(), free_port(), free_port()
            procs.append(start_nginx(tmp, "origin", ORIGIN.format(port=origin), 1))
            nginx = start_nginx(tmp, "modsec", WAF_PROXY.format(origin=origin, port=nginx_port, rules=rules), 1,
                                modules=f"load_module {MODULE};", log_level="emerg")
            procs.append(nginx)
            cfg = Path(tmp) / "edgeward.yaml"
            cfg.write_text(
                f"listen: 127.0.0.1:{edge_port}\nworkers: 1\nstate_dir: {state}\n"
                f"access_log: {{enabled: false}}\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n"
                f"domains:\n  - hosts: [bench.test]\n    upstream: http://127.0.0.1:{origin}\n"
                f"    waf: {{mode: block, paranoia: 1}}\n")
            edge = subprocess.Popen([str(EDGEWARD), "serve", "-c", str(cfg)], env=dict(os.environ, EDGEWARD_LOG_LEVEL="WARNING"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(edge)
            for port in (origin, nginx_port, edge_port):
                wait_port(port)
            time.sleep(1.5)
            httpx.post(f"http://127.0.0.1:{edge_port}/upload", content=body[:4096], headers={"Host": "bench.test"})
            results = {
                "nginx+ModSecurity": measure(nginx_port, descendants(nginx.pid), body, args.clients),
                "edgeward": measure(edge_port, descendants(edge.pid), body, args.clients),
            }
        finally:
            stop_all(procs)
    print(f"{args.clients} concurrent multipart uploads of {args.size} MiB, CRS {ref} paranoia 1, one worker each")
    print(f"{'':20} {'RSS before':>11} {'peak':>8} {'growth':>8} {'slowest upload':>15}")
    for who, (before, peak, slowest) in results.items():
        print(f"{who:20} {before:>8.0f} MiB {peak:>4.0f} MiB {peak - before:>4.0f} MiB {slowest:>13.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
