"""Hot reload under continuous traffic: zero failed requests, every worker switches within 1 s."""
from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

from pathlib import Path

import httpx
import pytest

from ..harness import EDGEWARD, Appliance, Upstream, appliance_config, start_appliance, stop


def domains(upstream: Upstream) -> str:
    return f"  - hosts: [app.example.test]\n    upstream: {upstream.url}\n"


@pytest.fixture()
def app(tmp_path_factory: pytest.TempPathFactory, upstream_a: Upstream) -> Iterator[Appliance]:
    appliance = start_appliance(tmp_path_factory.mktemp("reload"), domains(upstream_a))
    yield appliance
    stop(appliance.proc)


def rewrite(app: Appliance, body: str) -> None:
    tmp = app.config.parent
    app.write_config(appliance_config(tmp, app.port, app.admin_port, body))


def reloads_applied(app: Appliance) -> float:
    text = httpx.get(app.admin + "/metrics").text
    match = re.search(r'^edgeward_config_reloads_total\{result="applied"\} ([\d.]+)', text, re.M)
    return float(match.group(1)) if match else 0.0


class Traffic:
    """Several clients hammering the appliance (new and kept-alive connections), bounded in time."""

    def __init__(self, app: Appliance, clients: int = 4, limit: float = 20.0) -> None:
        self.app = app
        self.results: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.limit = limit
        self.threads = [threading.Thread(target=self.run, args=(i % 2 == 0,)) for i in range(clients)]

    def run(self, keepalive: bool) -> None:
        deadline = time.monotonic() + self.limit
        client = httpx.Client(headers={"Host": "app.example.test"}, timeout=5)
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if not keepalive:
                    client.close()
                    client = httpx.Client(headers={"Host": "app.example.test"}, timeout=5)
                resp = client.get(self.app.url + "/traffic")
                server = resp.json().get("server", "?") if resp.status_code == 200 else "?"
                self.results.append((time.monotonic(), resp.status_code, server))
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
        client.close()

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        poll(lambda: len(self.results) >= 10, "traffic did not start")
        return self

    def after(self, moment: float) -> list[tuple[float, int, str]]:
        return [r for r in list(self.results) if r[0] > moment]

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def poll(predicate: object, message: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def test_reload_under_traffic_switches_every_worker_within_a_second(app: Appliance, upstream_b: Upstream) -> None:
    with Traffic(app) as traffic:
        changed = time.monotonic()
        rewrite(app, domains(upstream_b))
        poll(lambda: len(traffic.after(changed + 1.0)) > 20, "no traffic after the switch")
    assert not traffic.errors, traffic.errors[:5]
    assert all(status == 200 for _, status, _ in traffic.results)
    after = [(t, server) for t, _, server in traffic.results if t > changed]
    last_a = max((t for t, server in after if server == "A"), default=changed)
    assert last_a - changed < 1.0, f"a worker still used the old config {last_a - changed:.2f}s after the change"
    assert sum(1 for t, s in after if t > changed + 1.0) > 20
    assert all(s == "B" for t, s in after if t > changed + 1.0)


def test_in_flight_request_finishes_on_the_old_config(app: Appliance, upstream_a: Upstream,
                                                      upstream_b: Upstream) -> None:
    result: dict[str, httpx.Response] = {}
    slow = threading.Thread(target=lambda: result.setdefault(
        "r", httpx.get(app.url + "/sleep/2.5", headers={"Host": "app.example.test"}, timeout=10)))
    slow.start()
    poll(lambda: "GET /sleep/2.5" in upstream_a.seen(), "the slow request never reached the upstream")
    rewrite(app, domains(upstream_b))
    poll(lambda: httpx.get(app.url + "/x", headers={"Host": "app.example.test"}).json()["server"] == "B",
         "the new config is not serving", limit=2.0)
    assert "r" not in result  # still in flight after the switch
    slow.join()
    assert result["r"].status_code == 200 and result["r"].text == "slept A\n"


def test_invalid_config_is_refused_and_the_running_one_stays(app: Appliance) -> None:
    with Traffic(app, clients=2) as traffic:
        refused = app.logs().count("config reload refused")
        app.write_config(app.config.read_text() + "bogus_key: 1\n")
        poll(lambda: app.logs().count("config reload refused") >= refused + 2, "both workers refuse it")
        changed = time.monotonic()
        poll(lambda: len(traffic.after(changed)) > 10, "traffic stopped")
    assert not traffic.errors and all(s == 200 for _, s, _ in traffic.results)
    assert "config reload refused" in app.logs() and "bogus_key: unknown key" in app.logs()
    resp = httpx.get(app.url + "/", headers={"Host": "app.example.test"})
    assert resp.status_code == 200 and resp.json()["server"] == "A"
    cli = subprocess.run([EDGEWARD, "reload", "-c", str(app.config)], capture_output=True, text=True)
    assert cli.returncode == 2 and "bogus_key: unknown key" in cli.stderr


def wait_reloads(app: Appliance, count: float) -> None:
    deadline = time.monotonic() + 5
    while reloads_applied(app) < count:  # counted by each worker, published twice a second
        assert time.monotonic() < deadline, httpx.get(app.admin + "/metrics").text + app.logs()
        time.sleep(0.1)


def fresh_metrics(app: Appliance) -> None:
    """Wait until every worker has published a snapshot newer than now."""
    files = (Path(app.config.parent) / "state" / "run" / "metrics").glob
    since = time.time()
    poll(lambda: (found := list(files("worker-*.json"))) and all(f.stat().st_mtime > since for f in found)
         and len(found) >= 2, "workers publish no metrics")


def test_sighup_and_cli_reload(app: Appliance) -> None:
    fresh_metrics(app)
    base = reloads_applied(app)
    app.proc.send_signal(signal.SIGHUP)
    wait_reloads(app, base + 2)  # both workers
    cli = subprocess.run([EDGEWARD, "reload", "-c", str(app.config)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    wait_reloads(app, base + 4)


def test_a_killed_worker_is_replaced_while_others_serve(app: Appliance) -> None:
    workers = [pid for pid in app.worker_pids() if pid not in _listener_masters(app)]
    target = workers[0]
    with Traffic(app, clients=2, limit=10) as traffic:
        subprocess.run(["kill", "-9", str(target)], check=True)
        poll(lambda: target not in app.worker_pids() and len(app.worker_pids()) == len(workers) + len(
            _listener_masters(app)), "the worker was not replaced")
        replaced = time.monotonic()
        poll(lambda: len(traffic.after(replaced)) > 50, "no traffic after the replacement")
    ok = sum(1 for _, s, _ in traffic.results if s == 200)
    assert ok > 50
    # only requests in flight on the killed worker may fail
    assert len(traffic.errors) + sum(1 for _, s, _ in traffic.results if s != 200) <= 4
    assert target not in app.worker_pids()
    assert len(app.worker_pids()) == len(workers) + len(_listener_masters(app))
    assert httpx.get(app.url + "/", headers={"Host": "app.example.test"}).status_code == 200


def _listener_masters(app: Appliance) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(app.proc.pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_worker_restarted_while_the_file_is_invalid_serves_the_last_good_config(app: Appliance) -> None:
    """Granian replaces a dead worker; if the file has a typo at that moment the new worker must not
    fail its startup (which would stop the whole listener) but serve the last good config."""
    workers = app.public_workers()
    app.write_config(app.config.read_text() + "bogus_key: 1\n")
    poll(lambda: app.logs().count("config reload refused") >= 2, "both workers refuse the edit")
    subprocess.run(["kill", "-9", str(workers[0])], check=True)
    poll(lambda: workers[0] not in app.public_workers() and len(app.public_workers()) == 2,
         "the worker was not replaced")
    assert "config refused at worker start, serving the last good config" in app.logs()
    assert app.proc.poll() is None  # the appliance is still up
    for _ in range(10):
        resp = httpx.get(app.url + "/", headers={"Host": "app.example.test"})
        assert resp.status_code == 200 and resp.json()["server"] == "A"
