"""Consumers managed by Edgeward (``edgeward consumer add|rotate|remove``, ``/api/consumers``).

They live in ``state_dir/consumers.json``, beside the operator's config file and never inside it
(rewriting that YAML would lose its comments); they are added to the config's ``consumers`` when
the config is built, and a change of the file reloads the workers (it is part of the reload
signature). The file holds digests and hashes only: a new API key is shown once, when it is made.
A name the config file declares is the config file's: it cannot be managed here.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from authn.consumers import hash_key, hash_password
from pydantic import TypeAdapter, ValidationError

from appliance.config.authn import ConsumerConfig
from appliance.config.schema import Config
from appliance.errors import EdgewardError

_LIST = TypeAdapter(list[ConsumerConfig])


class ConsumerError(EdgewardError):
    """A consumer cannot be added, changed or removed (a clear message for the operator)."""


def managed_path(state_dir: Path) -> Path:
    return state_dir / "consumers.json"


def load(state_dir: Path) -> list[ConsumerConfig]:
    """The managed consumers; a file that does not validate is an error, never an empty list."""
    path = managed_path(state_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConsumerError(f"{path}: unreadable ({exc})") from exc
    try:
        return _LIST.validate_python(data.get("consumers", []))
    except ValidationError as exc:
        raise ConsumerError(f"{path}: {exc}") from exc


def all_consumers(config: Config) -> list[ConsumerConfig]:
    """The config file's consumers, then the managed ones."""
    return [*config.consumers, *load(config.state_dir)]


@contextmanager
def _editing(config: Config) -> Iterator[list[dict[str, Any]]]:
    """The managed list, to change in place; written back atomically under a lock."""
    path = managed_path(config.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = [c.model_dump(mode="json", exclude_none=True) for c in load(config.state_dir)]
        yield entries
        try:
            _LIST.validate_python(entries)  # never write what would not load
        except ValidationError as exc:
            raise ConsumerError("; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())) from exc
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"consumers": entries}, out, indent=1, sort_keys=True)
        os.replace(tmp, path)


def _find(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for entry in entries:
        if entry["name"] == name:
            return entry
    raise ConsumerError(f"no managed consumer {name!r}")


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def add(config: Config, name: str, groups: list[str], key: bool = True, basic: tuple[str, str] | None = None,
        expires: float | None = None) -> str | None:
    """Add a consumer; return its new API key (shown once) when ``key``."""
    if any(c.name == name for c in config.consumers):
        raise ConsumerError(f"{name!r} is declared in the config file: change it there")
    new_key = secrets.token_urlsafe(32) if key else None
    credentials: list[dict[str, Any]] = []
    if new_key is not None:
        credentials.append({"type": "key", "sha256": hash_key(new_key), **({"expires": _stamp(expires)} if expires else {})})
    if basic is not None:
        credentials.append({"type": "basic", "username": basic[0], "scrypt": hash_password(basic[1])})
    with _editing(config) as entries:
        if any(e["name"] == name for e in entries):
            raise ConsumerError(f"consumer {name!r} exists")
        taken = {cred.username for consumer in all_consumers(config) for cred in consumer.credentials
                 if cred.type == "basic"}
        if basic is not None and basic[0] in taken:
            raise ConsumerError(f"the username {basic[0]!r} belongs to another consumer")
        entries.append({"name": name, "groups": groups, "credentials": credentials})
    return new_key


def rotate(config: Config, name: str, grace: float) -> str:
    """A new key for ``name``; its other keys expire ``grace`` seconds from now (if not sooner),
    so clients can move over without a moment when neither key works."""
    new_key = secrets.token_urlsafe(32)
    cutoff = time.time() + grace
    with _editing(config) as entries:
        entry = _find(entries, name)
        for credential in entry["credentials"]:
            if credential["type"] == "key":
                current = credential.get("expires")
                if current is None or datetime.fromisoformat(current).timestamp() > cutoff:
                    credential["expires"] = _stamp(cutoff)
        entry["credentials"].append({"type": "key", "sha256": hash_key(new_key)})
    return new_key


def remove(config: Config, name: str) -> None:
    with _editing(config) as entries:
        entries.remove(_find(entries, name))


def listing(config: Config, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Every consumer with its credentials as identifiers (never digests or hashes)."""
    out = []
    managed = {c.name for c in load(config.state_dir)}
    for consumer in all_consumers(config):
        creds: list[dict[str, Any]] = []
        for c in consumer.credentials:
            if c.type == "hmac":
                creds.append({"type": "hmac", "id": f"hmac:{c.key_id}", "expires": None, "expired": False})
                continue
            expires = c.expires.timestamp() if c.expires is not None else None
            ident = f"key:{c.sha256.lower()[:12]}" if c.type == "key" else f"basic:{c.username}"
            creds.append({"type": c.type, "id": ident, "expires": expires,
                          "expired": expires is not None and expires <= now()})
        out.append({"name": consumer.name, "groups": consumer.groups, "credentials": creds,
                    "source": "managed" if consumer.name in managed else "config"})
    return out
