"""The access log never stalls the event loop (tests/observe/test_accesslog.py)."""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from appliance.observe import accesslog
from appliance.observe.accesslog import AccessLog


async def test_lines_are_written_by_flush(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "access.log"))
    log.open()
    paths = ["/plain", '/quote"and\\backslash', "/caf\u00e9", "/ctl\x01", "/bad-utf8-\udcff"]
    for i, path in enumerate(paths):
        log.write(f"r{i}", "d", "/", "127.0.0.1", "GET", path, 200, 5, 1.5, "u:1", "allow", "")
    log.flush()
    await log.close()
    lines = (tmp_path / "access.log").read_bytes().splitlines()
    records = [json.loads(line) for line in lines]  # every line is valid JSON, whatever the path held
    assert [r["request_id"] for r in records] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r["path"] for r in records[:4]] == paths[:4]
    assert records[0] == {"time": records[0]["time"], "request_id": "r0", "domain": "d", "route": "/",
                          "client_ip": "127.0.0.1", "method": "GET", "path": "/plain", "status": 200, "bytes": 5,
                          "duration_ms": 1.5, "upstream": "u:1", "verdict": "allow", "reason": ""}


async def test_a_reader_that_never_drains_does_not_block_the_loop(tmp_path: Path, monkeypatch: object) -> None:
    """A full pipe blocks the writer thread only: the loop keeps turning and memory stays bounded."""
    read_end, write_end = os.pipe()
    monkeypatch.setattr(accesslog, "MAX_PENDING", 1_000_000)  # type: ignore[attr-defined]
    log = AccessLog("-")
    log._fd = write_end  # stdout stand-in: a pipe nobody reads
    line = ("x" * 1000, "d", "/", "127.0.0.1", "GET", "/", 200, 0, 0.1, "", "allow", "")
    ticks = 0
    started = time.monotonic()
    for _ in range(200):  # ~ 200 x 100 KiB offered: far more than a pipe buffer holds
        for _ in range(100):
            log.write(*line)
        log.flush()
        await asyncio.sleep(0)
        ticks += 1
    assert time.monotonic() - started < 5
    assert ticks == 200
    assert len(log._pending) <= 1_000_000 + 2000 and log._dropped > 0
    os.close(read_end)  # the blocked write fails (EPIPE) and the thread ends
    assert log._writing is not None
    await asyncio.wait_for(log._writing, 5)
    os.close(write_end)
