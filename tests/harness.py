"""Real processes for the tests: upstream servers and the appliance, on free loopback ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EDGEWARD = str(Path(sys.executable).parent / "edgeward")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Upstream:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def seen(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def start_upstream(tmp: Path, name: str, tls: tuple[Path, Path] | None = None) -> Upstream:
    port = free_port()
    log = tmp / f"upstream-{name}-{port}.log"
    cmd = [sys.executable, "-m", "tests.servers.upstream", "--port", str(port), "--name", name, "--log", str(log)]
    if tls:
        cmd += ["--tls", str(tls[0]), str(tls[1])]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    wait_port(port, proc=proc)
    return Upstream(name, port, proc, log, tls is not None)


@dataclass
class Appliance:
    config: Path
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes]
    access_log: Path
    stderr: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")

    def access_records(self) -> list[dict[str, object]]:
        import json

        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

    def access_record(self, request_id: str, timeout: float = 3.0) -> dict[str, object]:
        """The access log line of one request (the log is flushed every half second)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.access_records() if self.access_log.exists() else []:
                if record["request_id"] == request_id:
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log record for {request_id}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """Every process below the supervisor (granian masters and their workers)."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
        children: dict[int, list[int]] = {}
        for line in out.splitlines():
            pid, ppid = map(int, line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def public_workers(self) -> list[int]:
        """The public listener's workers that have started: those holding the access log open."""
        found = []
        for pid in self.worker_pids():
            try:
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(self.access_log) for fd in os.listdir(f"/proc/{pid}/fd")):
                    found.append(pid)
            except OSError:
                continue
        return found

    def rss_kib(self) -> int:
        total = 0
        for pid in [self.proc.pid, *self.worker_pids()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def write_config(self, text: str) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)


def copy_state(state: Path) -> Path:
    """A private copy of a state directory (one running appliance per state directory)."""
    import shutil
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="edgeward-state-")) / "state"
    shutil.copytree(state, target, ignore=shutil.ignore_patterns("run"))
    return target


def appliance_config(tmp: Path, port: int, admin_port: int, body: str, extra: str = "", state_dir: Path | None = None,
                     workers: int = 2) -> str:
    return (
        f"listen: 127.0.0.1:{port}\nworkers: {workers}\nstate_dir: {state_dir or tmp / 'state'}\n"
        f"admin: {{listen: '127.0.0.1:{admin_port}', token_env: EDGEWARD_ADMIN_TOKEN}}\n"
        f"access_log: {{path: {tmp}/access.log}}\n{extra}domains:\n{body}"
    )


def start_appliance(
    tmp: Path, domains: str, extra: str = "", env: dict[str, str] | None = None, state_dir: Path | None = None,
    workers: int = 2, port: int | None = None,
) -> Appliance:
    port, admin_port = port or free_port(), free_port()
    config = tmp / "edgeward.yaml"
    config.write_text(appliance_config(tmp, port, admin_port, domains, extra, state_dir, workers))
    stderr = tmp / "edgeward.stderr"
    full_env = {**os.environ, "EDGEWARD_ADMIN_TOKEN": "test-admin-token", **(env or {})}
    with stderr.open("w") as err:
        proc = subprocess.Popen([EDGEWARD, "serve", "-c", str(config)], env=full_env,
                                stdout=subprocess.DEVNULL, stderr=err)
    app = Appliance(config, port, admin_port, proc, tmp / "access.log", stderr, full_env)
    wait_port(port, proc=proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            # ready, and every worker has finished starting: a test that changes the config right
            # away must not race a worker still reading it
            if httpx.get(app.admin + "/readyz", timeout=1).status_code == 200 and len(app.public_workers()) >= workers:
                return app
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("appliance not ready:\n" + app.logs())


def raw_request(port: int, data: bytes, timeout: float = 3.0, source: str = "127.0.0.1") -> bytes:
    """Send bytes as they are and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0)) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out


def chromium_args(*extra: str) -> list[str]:
    """Headless Chromium as root on a closed network: no sandbox, no background traffic."""
    return ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", *extra]
