#!/usr/bin/env python3
"""Per-request Python time of Edgeward's own request path, without sockets.

Drives the ASGI app in-process with an in-memory upstream (the ``Transport`` seam) and a small GET,
through resolve, the route's stages, the proxy and every ``done`` consumer (metrics, access log to
/dev/null). No protection is enabled unless ``--waf`` is given. Prints microseconds per request,
the median of several rounds. This is the number the closing notes quote; bench/proxy.py measures
the same path end to end against nginx.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.http.app import EdgewardApp  # noqa: E402
from appliance.types import Headers, Message  # noqa: E402

BODY = b"hello from the origin\n"


class CannedResponse:
    status = 200
    headers: Headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode()),
                        (b"date", b"Thu, 26 Nov 2026 12:00:00 GMT")]

    async def body(self) -> AsyncIterator[bytes]:
        yield BODY

    def complete_body(self) -> bytes | None:
        return BODY

    def close(self) -> None:
        pass


class CannedTransport:
    async def send(self, *args: object) -> CannedResponse:
        return CannedResponse()

    async def close(self) -> None:
        pass


async def run(config: Path, requests: int, rounds: int) -> list[float]:
    app = EdgewardApp(str(config), CannedTransport())  # type: ignore[arg-type]
    await app._startup()
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/index.html",
             "raw_path": b"/index.html", "query_string": b"", "client": ("127.0.0.1", 40000),
             "server": ("127.0.0.1", 8080),
             "headers": [(b"host", b"app.example.test"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]}
    never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        return await never  # the client stays: a small GET has no body

    async def send(message: Message) -> None:
        pass

    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            await app(dict(scope), receive, send)
            await asyncio.sleep(0)  # the loop turns between requests, as under a server
        results.append((time.perf_counter() - started) / requests * 1e6)
    await app._shutdown()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeward-pipeline-") as tmp:
        config = Path(tmp) / "edgeward.yaml"
        config.write_text(f"state_dir: {tmp}/state\naccess_log: {{path: /dev/null}}\n"
                          "domains:\n  - hosts: [app.example.test]\n    upstream: http://127.0.0.1:9\n")
        import uvloop  # the loop granian runs the workers on

        results = uvloop.run(run(config, args.requests, args.rounds))
    print(f"per-request Python time, no protection: {statistics.median(results):.1f} us "
          f"(median of {args.rounds} x {args.requests}; rounds: {', '.join(f'{r:.1f}' for r in results)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
