"""The admin plane's view of the config file, re-read whenever the file changes.

The admin listener is a long-lived process: without this, a reload that changes ``rules.*``,
``state_dir`` or ``admin.token_env`` would reach the workers but not the admin API. A file that
no longer validates is refused (logged); the last good config stays in use.
"""
from __future__ import annotations

import asyncio
import logging
import os

from appliance.config.loader import load_config
from appliance.config.schema import Config
from appliance.errors import ConfigError
from appliance.reloader import file_signature

log = logging.getLogger("edgeward.admin")


class LiveConfig:
    def __init__(self, path: str) -> None:
        self.path = path
        self._signature = file_signature(path)
        self.config = load_config(path)
        self._lock = asyncio.Lock()

    async def get(self) -> Config:
        signature = await asyncio.to_thread(file_signature, self.path)
        if signature != self._signature:
            async with self._lock:
                if signature != self._signature:
                    try:
                        self.config = await asyncio.to_thread(load_config, self.path)
                    except ConfigError as exc:
                        log.error("admin: config refused, keeping the previous one:\n%s", exc)
                    self._signature = signature
        return self.config

    async def token(self) -> bytes | None:
        value = os.environ.get((await self.get()).admin.token_env)
        return value.encode() if value else None
