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
    for i in range(3):
        log.write({"request_id": f"r{i}"})
    log.flush()
    await log.close()
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r0", "r1", "r2"]


async def test_a_reader_that_never_drains_does_not_block_the_loop(tmp_path: Path, monkeypatch: object) -> None:
    """A full pipe blocks the writer thread only: the loop keeps turning and memory stays bounded."""
    read_end, write_end = os.pipe()
    monkeypatch.setattr(accesslog, "MAX_PENDING", 1000)  # type: ignore[attr-defined]
    log = AccessLog("-")
    log._fd = write_end  # stdout stand-in: a pipe nobody reads
    line = {"request_id": "x" * 1000}
    ticks = 0
    started = time.monotonic()
    for _ in range(200):  # ~ 200 x 100 KiB offered: far more than a pipe buffer holds
        for _ in range(100):
            log.write(dict(line))
        log.flush()
        await asyncio.sleep(0)
        ticks += 1
    assert time.monotonic() - started < 5
    assert ticks == 200
    assert len(log._pending) <= 1000 and log._dropped > 0
    os.close(read_end)  # the blocked write fails (EPIPE) and the thread ends
    assert log._writing is not None
    await asyncio.wait_for(log._writing, 5)
    os.close(write_end)
