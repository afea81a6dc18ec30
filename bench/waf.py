#!/usr/bin/env python3
"""Edgeward vs nginx+ModSecurity with the same CRS files and settings (paranoia 1, blocking),
in front of the same origin, driven by wrk in one run on four mixes: a benign GET with a query
string, a benign JSON POST (~300 bytes), an attack GET (blocked by both) and a large body: a 64 KiB
urlencoded form with an XSS payload at its end (blocked by both; where the regex engine runs without
JIT, this is the mix that shows it). Prints requests/s,
p99 and the ratio Edgeward/nginx for each, and Edgeward's worker RSS with CRS loaded. Loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import crs_for_both, EDGEWARD, ORIGIN, descendants, WrkResult, free_port, rss_mib, start_nginx, stop_all, wait_port, wrk  # noqa: E402


MODULE = "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so"
CRS = "/usr/share/modsecurity-crs"

WAF_PROXY = """upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;
  modsecurity on;
  modsecurity_rules_file {rules};
  location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"""

JSON_BODY = json.dumps({
    "user": {"name": "Alice Example", "email": "alice@example.com", "roles": ["staff", "editor"]},
    "order": {"id": 123456, "items": [{"sku": "A-100", "qty": 2, "price": 19.99}, {"sku": "B-200", "qty": 1, "price": 5.5}],
              "note": "Please deliver after 5pm, ring the bell twice."},
    "client": {"locale": "en-GB", "tz": "Europe/London", "version": "2.4.1"},
})

LARGE_FORM = "comment=" + "lorem+ipsum+dolor+sit+amet+" * 2420 + "&sig=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"

# (name, path, (content type, body) or None for a GET, blocked)
MIXES = [
    ("benign GET", "/search?q=hello+world&page=2&sort=price", None, False),
    ("benign JSON POST", "/api/orders", ("application/json", JSON_BODY), False),
    ("attack GET (blocked)", "/search?q=1%27%20or%201%3D1--&page=2", None, True),
    ("64 KiB form + XSS (blocked)", "/comments", ("application/x-www-form-urlencoded", LARGE_FORM), True),
]


def lua(content_type: str, body: str) -> str:
    return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\nwrk.body = [[{body}]]\n'


def probe(port: int, path: str, post: tuple[str, str] | None) -> int:
    """One request as wrk sends it: the status each side really answers (a 500 is not a block)."""
    headers = {"Host": "bench.test"}
    if post is None:
        return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30).status_code
    headers["Content-Type"] = post[0]
    return httpx.post(f"http://127.0.0.1:{port}{path}", headers=headers, content=post[1].encode(), timeout=30).status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per mix; the median is shown")
    parser.add_argument("--mix", action="append", help="run only the mixes whose name starts with this (repeatable)")
    parser.add_argument("--crs", default=CRS, help="rule set to import for both sides: a directory or a CRS release "
                        "tarball (default: Debian's CRS 3.3.4)")
    args = parser.parse_args()
    for need in ("nginx", "wrk", MODULE, args.crs):
        if not (shutil.which(need) or Path(need).exists()):
            raise SystemExit(f"{need} is missing (bench/waf.sh installs it)")
    procs: list[subprocess.Popen[bytes]] = []
    results = []
    rss: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgeward-wafbench-") as tmp:
        try:
            ref, state, rules = crs_for_both(tmp, str(args.crs))
            origin, nginx_port, edge_port, admin_port = free_port(), free_port(), free_port(), free_port()
            procs.append(start_nginx(tmp, "origin", ORIGIN.format(port=origin), 1))
            procs.append(start_nginx(tmp, "modsec", WAF_PROXY.format(origin=origin, port=nginx_port, rules=rules),
                                     args.workers, modules=f"load_module {MODULE};", log_level="emerg"))
            cfg = Path(tmp) / "edgeward.yaml"
            cfg.write_text(
                f"listen: 127.0.0.1:{edge_port}\nworkers: {args.workers}\nstate_dir: {state}\n"
                f"access_log: {{enabled: false}}\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n"
                f"domains:\n  - hosts: [bench.test]\n    upstream: http://127.0.0.1:{origin}\n"
                f"    waf: {{mode: block, paranoia: 1}}\n")
            env = dict(os.environ, EDGEWARD_LOG_LEVEL="WARNING")
            edge = subprocess.Popen([str(EDGEWARD), "serve", "-c", str(cfg)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(edge)
            for port in (origin, nginx_port, edge_port):
                wait_port(port)
            time.sleep(1.5)
            os.chdir(tmp)
            for index, (name, path, post, blocked) in enumerate(MIXES):
                if args.mix and not any(name.startswith(m) for m in args.mix):
                    continue
                script = None
                if post is not None:
                    script = f"mix{index}.lua"
                    (Path(tmp) / script).write_text(lua(*post))
                for who, port in (("nginx", nginx_port), ("edgeward", edge_port)):
                    status = probe(port, path, post)
                    if status != (403 if blocked else 200):
                        raise SystemExit(f"{who} answers {status} to '{name}'")
                wrk(nginx_port, path, 2, args.connections, script=script)
                wrk(edge_port, path, 2, args.connections, script=script)
                # Alternate the two in rounds and keep each one's median, so a noisy neighbour
                # moment does not land on one side only.
                runs: dict[str, list[WrkResult]] = {"nginx": [], "edgeward": []}
                for _ in range(args.rounds):
                    for who, port in (("nginx", nginx_port), ("edgeward", edge_port)):
                        r = wrk(port, path, args.duration, args.connections, script=script)
                        if blocked and r.non_2xx == 0 or not blocked and r.non_2xx:
                            raise SystemExit(f"{who}: unexpected verdicts on '{name}' ({r.non_2xx} non-2xx)")
                        runs[who].append(r)
                n, e = (sorted(runs[w], key=lambda r: r.rps)[len(runs[w]) // 2] for w in ("nginx", "edgeward"))
                results.append((name, n, e))
            rss = rss_mib([p for p in descendants(edge.pid)])
        finally:
            stop_all(procs)
    print(f"CRS {ref}, paranoia 1, blocking; {args.connections} connections, {args.rounds} x {args.duration}s "
          f"alternating (median shown), {args.workers} workers each")
    print(f"{'mix':24} {'nginx req/s':>12} {'p99 ms':>8} {'edgeward req/s':>15} {'p99 ms':>8} {'ratio':>6}")
    for name, n, e in results:
        print(f"{name:24} {n.rps:>12.0f} {n.p99_ms:>8.2f} {e.rps:>15.0f} {e.p99_ms:>8.2f} {e.rps / n.rps:>6.2f}")
    workers = sorted(rss)[-args.workers:] if rss else []
    print(f"edgeward worker RSS with CRS loaded: {', '.join(f'{r:.0f} MiB' for r in workers)} (target <= 150 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
