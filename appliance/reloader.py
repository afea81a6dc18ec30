"""Hot reload inside each worker: watch the config file and the reload stamp, swap atomically.

Each worker polls (a stat every ``interval`` seconds, off the event loop) rather than relying on a
signal, so SIGHUP to the supervisor, ``edgeward reload``, the admin API and an edited file all take
the same path: the stamp or the file changes, every worker notices within ``interval``.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from appliance import consumers
from appliance.exclusions import managed_path
from appliance.config.schema import Config
from appliance.config.loader import load_config
from appliance.errors import ConfigError
from appliance.runtime import Runtime, RuntimeProblems

log = logging.getLogger("edgeward.reload")

STAMP = "run/reload.stamp"
GOOD = "run/config.good.yaml"  # the text of the last config that was validated and applied
GOOD_ENV = "EDGEWARD_GOOD_CONFIG"


def load_current(config_path: str) -> tuple[Config, str]:
    """Read the file once and validate exactly that text; return both."""
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None  # load_config reports it with the file name
    return load_config(config_path, text=text), text or ""


def remember_good(config: Config, text: str) -> Path:
    """Keep the text of a config that was applied: a worker (re)started while the file does not
    validate starts from it instead of failing, which would stop the whole listener."""
    path = config.state_dir / GOOD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_for_start(config_path: str) -> tuple[Config, str, bool]:
    """The config a starting worker serves: the file if it validates, else the last good one the
    supervisor or a worker saved (``$EDGEWARD_GOOD_CONFIG``). Returns (config, text, from file)."""
    try:
        config, text = load_current(config_path)
        return config, text, True
    except ConfigError as exc:
        saved = os.environ.get(GOOD_ENV)
        if not saved or not Path(saved).is_file():
            raise
        log.error("config refused at worker start, serving the last good config instead:\n%s", exc)
        text = Path(saved).read_text(encoding="utf-8")
        return load_config(config_path, text=text), text, False


def stamp_path(config: Config) -> Path:
    return config.state_dir / STAMP


def request_reload(config: Config) -> Path:
    """Ask every worker to reload (what SIGHUP, ``edgeward reload`` and the admin API do)."""
    path = stamp_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    os.utime(path)
    return path


def _stat(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def signature(config_path: str, config: Config, file_seen: object = None) -> tuple[object, ...]:
    """What a reload depends on: the file, the reload stamp, the bundle activations, the WAF
    exclusions made from audit records and the managed consumers.
    ``file_seen``: the file's stat taken before it was loaded, so a change made while a worker was
    starting up is not mistaken for what it loaded."""
    return (file_seen if file_seen is not None else _stat(config_path), _stat(stamp_path(config)),
            _stat(config.state_dir / "bundles" / "activations.json"), _stat(managed_path(config.state_dir)),
            _stat(consumers.managed_path(config.state_dir)))


def file_signature(config_path: str) -> tuple[int, int, int] | None:
    return _stat(config_path)


class ConfigWatcher:
    def __init__(
        self, config_path: str, current: Config, build: Callable[[Config, int], Runtime],
        apply: Callable[[Runtime], Awaitable[None]], count: Callable[[str], None], generation: int = 1,
        interval: float = 0.2, baseline: tuple[object, ...] | None = None,
    ) -> None:
        self.baseline = baseline  # the signature of what ``current`` was built from
        self.build = build
        self.generation = generation
        self.config_path = config_path
        self.current = current
        self.apply = apply
        self.count = count
        self.interval = interval

    async def run(self) -> None:
        last = self.baseline or await asyncio.to_thread(signature, self.config_path, self.current)
        while True:
            await asyncio.sleep(self.interval)
            sig = await asyncio.to_thread(signature, self.config_path, self.current)
            if sig == last:
                continue
            last = sig
            try:
                await self.reload()
            except Exception:  # a bug must not stop the watcher: keep serving, keep watching
                self.count("refused")
                log.exception("config reload failed, still serving the previous config")

    async def reload(self) -> bool:
        """Load, validate and compile off the event loop; swap only if all of it worked."""
        try:
            config, text = await asyncio.to_thread(load_current, self.config_path)
            runtime = await asyncio.to_thread(self.build, config, self.generation + 1)
        except (ConfigError, RuntimeProblems) as exc:
            self.count("refused")
            log.error("config reload refused, still serving the previous config:\n%s", exc)
            return False
        self.generation += 1
        await self.apply(runtime)
        self.current = config
        await asyncio.to_thread(remember_good, config, text)
        self.count("applied")
        return True
