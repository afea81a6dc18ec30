"""Config generations start and close their stages (tests/appliance/test_generations.py for
appliance/runtime.py): 50 reloads leave no extra file descriptor, socket or thread behind."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.http.app import EXECUTOR_THREADS

from ..harness import Appliance, Upstream, start_appliance, stop


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    appliance = start_appliance(tmp_path_factory.mktemp("generations"),
                                f"  - hosts: [app.example.test]\n    upstream: {upstream_a.url}\n")
    yield appliance
    stop(appliance.proc)


def resources(pid: int) -> tuple[int, int, int]:
    """(open files, sockets, threads) of one process."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    sockets = sum(1 for link in links if link.startswith("socket:"))
    return len(links) - sockets, sockets, len(os.listdir(f"/proc/{pid}/task"))


def reload(app: Appliance, n: int) -> None:
    """Change the config file and wait until both workers serve the new generation."""
    before = app.logs().count("is serving")
    app.write_config(app.config.read_text() + f"# generation {n}\n")
    deadline = time.monotonic() + 10
    while app.logs().count("is serving") < before + 2:
        assert time.monotonic() < deadline, app.logs()[-2000:]
        time.sleep(0.02)


def test_fifty_reloads_leave_no_descriptors_sockets_or_threads(app: Appliance) -> None:
    def traffic() -> None:
        for _ in range(10):
            assert httpx.get(app.url + "/", headers={"Host": "app.example.test"}).status_code == 200

    deadline = time.monotonic() + 10
    while len(app.public_workers()) < 2:  # both workers have started (each opens the access log)
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    for n in range(3):  # warm up: thread pools and upstream connections reach their steady size
        reload(app, n)
        traffic()
    pids = app.public_workers()
    assert len(pids) == 2
    before = {pid: resources(pid) for pid in pids}
    for n in range(3, 53):
        reload(app, n)
        traffic()
    after = {pid: resources(pid) for pid in pids}
    for pid in pids:
        files, sockets, threads = after[pid]
        assert files <= before[pid][0], (before[pid], after[pid])  # each generation's access log closed
        assert sockets <= before[pid][1] + 2, (before[pid], after[pid])  # at most the keep-alive pool's churn
        # the worker's I/O pool may still grow to its fixed size; a leak per generation would add 50
        assert threads - before[pid][2] < EXECUTOR_THREADS, (before[pid], after[pid])
    assert Path(app.access_log).exists()
