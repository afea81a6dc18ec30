"""Audit log: (1) nothing lost under a flood of blocked requests, (2) searches over a million records.

(1) wrk sends an attack GET to Edgeward (CRS 3.3.4, blocking, 2 workers) for --duration seconds,
with the audit log on and then off; prints the blocked rate of each and whether the number of audit
records equals the number of blocked responses, each id once. (2) fills a database with --records
synthetic records and times the searches an operator runs (target: each under a second).
Loopback only.
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import EDGEWARD, ORIGIN, free_port, start_nginx, stop_all, wait_port, wrk  # noqa: E402

from appliance.bundles import activations_for, import_bundle  # noqa: E402
from appliance.observe.auditsqlite import database_path  # noqa: E402
from appliance.observe.auditstore import Query, open_store  # noqa: E402

CRS = "/usr/share/modsecurity-crs"
ATTACK = "/search?q=1%27%20or%201%3D1--&page=2"


def _blocked(admin_port: int) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("edgeward_requests_total{") and 'verdict="block"' in line))


def flood(duration: int, connections: int, audit: bool) -> tuple[float, int, int, int]:
    """(blocked req/s, blocked responses, records, distinct ids)."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edgeward-auditbench-") as tmp:
        try:
            os.chmod(tmp, 0o755)
            state = Path(tmp) / "state"
            bundle = import_bundle(state, CRS).manifest
            activations_for(state).activate(bundle.digest, bundle.ref, reason="bench")
            origin, edge_port, admin_port = free_port(), free_port(), free_port()
            procs.append(start_nginx(tmp, "origin", ORIGIN.format(port=origin), 1))
            cfg = Path(tmp) / "edgeward.yaml"
            cfg.write_text(
                f"listen: 127.0.0.1:{edge_port}\nworkers: 2\nstate_dir: {state}\n"
                f"access_log: {{enabled: false}}\naudit: {{enabled: {str(audit).lower()}}}\n"
                f"admin: {{listen: 127.0.0.1:{admin_port}}}\n"
                f"domains:\n  - hosts: [bench.test]\n    upstream: http://127.0.0.1:{origin}\n"
                f"    waf: {{mode: block, paranoia: 1}}\n")
            edge = subprocess.Popen([str(EDGEWARD), "serve", "-c", str(cfg)], env=dict(os.environ, EDGEWARD_LOG_LEVEL="WARNING"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(edge)
            wait_port(edge_port)
            time.sleep(1.5)
            result = wrk(edge_port, ATTACK, duration, connections)
            time.sleep(1.0)  # metrics are published twice a second
            blocked = _blocked(admin_port)  # the server's count: wrk misses the answers in flight when it stops
            edge.terminate()  # workers finish their queues on the way out
            edge.wait(30)
            records = distinct = 0
            if audit:
                db = sqlite3.connect(database_path(state))
                records, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM audit").fetchone()
            return result.rps, blocked, records, distinct
        finally:
            stop_all(procs)


TAGS = {942100: "attack-sqli", 941100: "attack-xss", 930120: "attack-lfi", 932160: "attack-rce",
        920350: "attack-protocol", 913100: "attack-reputation-scanner", 949110: "anomaly-evaluation"}


def searches(count: int, store_url: str) -> list[tuple[str, float, int]]:
    with tempfile.TemporaryDirectory(prefix="edgeward-auditsearch-") as tmp:
        db = open_store(store_url, Path(tmp))
        rng = random.Random(7)
        now = time.time()
        rules = [942100, 941100, 930120, 932160, 920350, 913100, 949110]
        batch = []
        for i in range(count):
            rule = rng.choice(rules)
            batch.append({
                "id": f"{i:032x}", "time": now - rng.random() * 30 * 86400, "domain": f"app{rng.randrange(20)}.test",
                "route": "/", "client": {"ip": f"198.51.{rng.randrange(256)}.{rng.randrange(256)}", "port": 40000},
                "method": "GET", "uri": f"/p/{rng.randrange(5000)}?q=x", "status": 403, "stage": "waf",
                "reason": "waf.anomaly", "mode": "block",
                "waf": {"matches": [{"rule_id": r, "tags": [TAGS[r], "OWASP_CRS"]} for r in (rule, 949110)]},
            })
            if len(batch) == 10000:
                db.insert(batch)
                batch = []
        if batch:
            db.insert(batch)
        out = []
        day = now - 86400
        for name, query in (
            ("newest 100", Query()),
            ("by rule 930120, 100", Query(rule=930120)),
            ("by tag attack-lfi, 100", Query(tag="attack-lfi")),
            ("by IP", Query(ip="198.51.7.42")),
            ("by /24", Query(ip="198.51.7.0/24")),
            ("domain + last day", Query(domain="app3.test", since=day)),
            ("URI text", Query(text="/p/4242?")),
            ("stage + status + last day", Query(stage="waf", status=403, since=day)),
        ):
            started = time.perf_counter()
            found = db.search(query)
            out.append((name, time.perf_counter() - started, len(found)))
        for name, since in (("stats, last day", day), ("stats, all", None)):
            started = time.perf_counter()
            db.stats(since=since)
            out.append((name, time.perf_counter() - started, 1))
        db.close()
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--skip-flood", action="store_true")
    parser.add_argument("--store", default="sqlite", help="sqlite, or a postgresql:// URL of an empty database "
                        "on loopback for the search part")
    args = parser.parse_args()
    if not args.skip_flood:
        on = flood(args.duration, args.connections, True)
        off = flood(args.duration, args.connections, False)
        print(f"flood of blocked requests, {args.duration} s, {args.connections} connections, 2 workers")
        print(f"  audit off: {off[0]:.0f} blocked req/s")
        print(f"  audit on:  {on[0]:.0f} blocked req/s ({on[0] / off[0]:.2f} of off); {on[1]} blocked responses, "
              f"{on[2]} records, {on[3]} distinct ids: {'none lost' if on[1] == on[2] == on[3] else 'MISMATCH'}")
    print(f"searches over {args.records:,} records in {args.store.split(':')[0]} (target: each under 1 s)")
    for name, seconds, found in searches(args.records, args.store):
        print(f"  {name:28} {seconds * 1000:8.1f} ms  ({found} found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
