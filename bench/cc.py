"""CC protection: (1) what three throttles cost, (2) whether one flooding client hurts the others.

(1) wrk against Edgeward (2 workers, WAF off, so the CC stage is the only protection measured)
with three CC rules on (Redis on loopback; limits high enough that nothing is refused) and with CC
off, in the same run; prints the ratio (target >= 0.9). Both appliances run throughout and are
measured in turn, several rounds: this 2-core machine's throughput drifts by 10 % and more from one
run to the next, as much as what is measured, so one run of each says little.
(2) 50 clients, each at half its limit, for --duration seconds, first alone, then while one more
client floods at 20x its limit; prints the 429s the 50 got (target: none) and how their p99
latency moved (target: < 20 %). Clients are told apart by X-Forwarded-For from a trusted proxy.
Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EDGEWARD, ORIGIN, free_port, start_nginx, stop_all, wait_port, wrk  # noqa: E402

RULES = """    cc:
      - {name: per-ip, key: ip, limit: 100000000/minute}
      - {name: per-net, key: ip_prefix, limit: 100000000/minute, algorithm: gcra}
      - {name: per-agent, key: 'header:user-agent', limit: 100000000/minute, algorithm: fixed_window}
"""
MANY = str(Path(__file__).resolve().parent / "addresses.lua")
FLOOD_RULES = """    cc:
      - {name: per-ip, key: ip, limit: 20/second}
"""


def start(tmp: str, name: str, cc: str, redis_url: str, origin: int, waf: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    port, admin = free_port(), free_port()
    state = Path(tmp) / f"state-{name}"
    if waf:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from appliance.bundles import activations_for, import_bundle

        bundle = import_bundle(state, "/usr/share/modsecurity-crs").manifest
        activations_for(state).activate(bundle.digest, bundle.ref, reason="bench")
    cfg = Path(tmp) / f"{name}.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\nworkers: 2\nstate_dir: {state}\naccess_log: {{enabled: false}}\n"
        f"audit: {{enabled: false}}\nadmin: {{listen: 127.0.0.1:{admin}}}\ntrusted_proxies: [127.0.0.1/32]\n"
        f"redis: {redis_url}\n"
        f"domains:\n  - hosts: [bench.test]\n    upstream: http://127.0.0.1:{origin}\n"
        f"    waf: {{mode: {'block' if waf else 'off'}}}\n{cc}")
    proc = subprocess.Popen([str(EDGEWARD), "serve", "-c", str(cfg)], env=dict(os.environ, EDGEWARD_LOG_LEVEL="WARNING"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    time.sleep(1.5)
    return proc, port


async def _clients(port: int, count: int, rate: float, duration: float, first_ip: int) -> tuple[list[float], int, int]:
    """``count`` clients, each sending ``rate`` requests a second for ``duration`` seconds over its
    own keep-alive connection. Returns (latencies of the admitted requests in ms, admitted, refused
    with 429). A plain HTTP/1.1 client on asyncio streams, not aiohttp: this machine's two cores
    also run the appliance, and the load generator's own CPU (aiohttp's is several times this
    one's) would otherwise be most of what the flood adds."""
    latencies: list[float] = []
    refused = 0

    async def client(n: int) -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (f"GET / HTTP/1.1\r\nHost: bench.test\r\nX-Forwarded-For: 10.{(first_ip + n) // 250}."
                   f"{(first_ip + n) % 250}.7\r\n\r\n").encode()
        interval = 1 / rate
        next_at = time.monotonic() + (n % 10) * interval / 10
        end = time.monotonic() + duration
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 429"):
                refused += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
            next_at += interval
        writer.close()

    await asyncio.gather(*(client(n) for n in range(count)))
    return latencies, len(latencies), refused


def _run_clients(port: int, count: int, rate: float, duration: float, first_ip: int, out: "multiprocessing.Queue[object]") -> None:
    out.put(asyncio.run(_clients(port, count, rate, duration, first_ip)))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def flood(port: int, duration: float) -> tuple[tuple[list[float], int, int], tuple[list[float], int, int] | None]:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[object] = ctx.Queue()
    normal = ctx.Process(target=_run_clients, args=(port, 50, 10.0, duration, 1, results))
    flooder = ctx.Process(target=_run_clients, args=(port, 1, 400.0, duration, 900, results))  # 20 x 20/second
    normal.start()
    flooder.start()
    first, second = results.get(), results.get()
    normal.join()
    flooder.join()
    a, b = first, second  # type: ignore[assignment]
    return (a, b) if len(a[0]) + a[2] > len(b[0]) + b[2] else (b, a)  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="throughput: turns of CC off and CC on")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", choices=["throughput", "flood"], help="run one of the two parts")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="edgeward-ccbench-") as tmp:
        os.chmod(tmp, 0o755)
        try:
            origin, redis_port = free_port(), free_port()
            procs.append(start_nginx(tmp, "origin", ORIGIN.format(port=origin), 1))
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no"], stdout=subprocess.DEVNULL))
            wait_port(origin)
            wait_port(redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            print(f"throughput, 2 workers, {args.connections} connections: CC off and CC on (3 rules, Redis on "
                  f"loopback) both running, measured in turn ({args.rounds} rounds of {args.duration} s each, the "
                  f"order swapped every round); the ratio is the median of the rounds'")
            # one client (one kind of request: address, network, User-Agent), as the target is stated;
            # then 1,000 client addresses (wrk's script rotates X-Forwarded-For), where few requests
            # of a kind come within a lease and most decisions are a round trip
            for waf, script in [] if args.only == "flood" else [(False, None), (True, None), (False, MANY)]:
                apps = {name: start(tmp, f"{name}-{waf}-{bool(script)}", cc, redis_url, origin, waf)
                        for name, cc in (("off", ""), ("on", RULES))}
                try:
                    for _, port in apps.values():
                        wrk(port, "/", 3, args.connections, script=script)  # warm up
                    rounds = []
                    for n in range(args.rounds):
                        done = {}
                        for name in ("off", "on") if n % 2 == 0 else ("on", "off"):
                            done[name] = wrk(apps[name][1], "/", args.duration, args.connections, script=script)
                        rounds.append((done["off"], done["on"]))
                finally:
                    for proc, _ in apps.values():
                        stop_all([proc])  # one at a time: stop_all sends SIGQUIT (nginx's) to all but the last
                ratios = sorted(on.rps / off.rps for off, on in rounds)
                label = "WAF on (CRS 3.3.4, PL1)" if waf else "WAF off (proxy only)"
                if script:
                    label += ", 1,000 client addresses"
                print(f"  {label}: " + ", ".join(f"{off.rps:.0f}/{on.rps:.0f}" for off, on in rounds)
                      + f" req/s off/on, {sum(on.non_2xx for _, on in rounds)} refused: "
                      f"{ratios[len(ratios) // 2]:.2f} of off (rounds {ratios[0]:.2f} to {ratios[-1]:.2f})"
                      + ("" if script else " (target >= 0.9)"))
            if args.only == "throughput":
                return 0
            proc, port = start(tmp, "flood", FLOOD_RULES, redis_url, origin)
            try:
                alone = asyncio.run(_clients(port, 50, 10.0, args.duration, 1))
                normal, flooder = flood(port, args.duration)
            finally:
                stop_all([proc])
            growth = p99(normal[0]) / p99(alone[0]) - 1 if alone[0] else 0.0
            print(f"flood: 50 clients at 10 req/s each (limit 20/second per client), {args.duration} s")
            print(f"  alone: {alone[1]} admitted, {alone[2]} refused, p99 {p99(alone[0]):.1f} ms")
            print(f"  with one client at 400 req/s: {normal[1]} admitted, {normal[2]} refused (target 0), "
                  f"p99 {p99(normal[0]):.1f} ms ({growth:+.0%}, target < +20 %)")
            print(f"  the flooder: {flooder[1]} admitted ({flooder[1] / args.duration:.1f}/s against 20/s), "
                  f"{flooder[2]} refused")
        finally:
            stop_all(procs[:1])
            procs[1].terminate()
            procs[1].wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
