"""Which bundle is active, per scope (``global`` or a domain), with who/when/why history.

Kept in ``state_dir/bundles/activations.json``; writers take an exclusive lock and replace the file
atomically, so concurrent ``activate`` calls cannot leave it inconsistent.
"""
from __future__ import annotations

import datetime
import fcntl
import getpass
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from rules.errors import ActivationsCorrupt

GLOBAL = "global"


@dataclass
class Activation:
    digest: str
    ref: str
    at: str
    by: str
    reason: str


class Activations:
    def __init__(self, root: Path) -> None:
        self.path = root / "activations.json"

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as exc:
            raise ActivationsCorrupt(f"{self.path}: cannot read the activation history ({exc}); restore it from a "
                                     "backup or remove it to start a new history") from exc
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ActivationsCorrupt(f"{self.path}: not an activation history (expected scopes with lists)")
        return data

    @contextmanager
    def _locked(self) -> Iterator[dict[str, list[dict[str, Any]]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "w") as out:  # durable before it replaces the history: fsync file, then folder
                out.write(json.dumps(data, indent=2) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def activate(self, digest: str, ref: str, scope: str = GLOBAL, reason: str = "", by: str | None = None) -> Activation:
        entry = Activation(
            digest=digest, ref=ref, reason=reason, by=by or _who(),
            at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        with self._locked() as data:
            data.setdefault(scope, []).append(asdict(entry))
        return entry

    def active(self, scope: str = GLOBAL) -> Activation | None:
        """The scope's current bundle; None when it has none (a domain then inherits the global one)."""
        history = self._read().get(scope) or []
        if not history or not history[-1]["digest"]:
            return None
        return Activation(**history[-1])

    def rollback(self, scope: str = GLOBAL, steps: int = 1, reason: str = "", by: str | None = None) -> Activation:
        """Make the activation ``steps`` back current again, as a new history entry (history is
        never rewritten). Rolling a domain back past its first pin returns it to the global bundle."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError("steps must be a whole number of at least 1")
        with self._locked() as data:
            history = data.get(scope) or []
            if not history:
                raise LookupError(f"{scope}: no activation to roll back")
            index = len(history) - 1 - steps
            if index < 0 and scope == GLOBAL:
                raise LookupError(f"{scope}: only {len(history)} activation(s) in the history")
            target = history[index] if index >= 0 else {"digest": "", "ref": "(global)"}
            entry = Activation(
                digest=target["digest"], ref=target["ref"], by=by or _who(),
                reason=reason or f"rollback {steps} step(s)",
                at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            )
            history.append(asdict(entry))
            data[scope] = history
        return entry

    def scopes(self) -> list[str]:
        return sorted(self._read())

    def referenced(self) -> set[str]:
        """Every digest any scope's history mentions (gc keeps these)."""
        return {e["digest"] for entries in self._read().values() for e in entries if e["digest"]}

    def history(self, scope: str = GLOBAL) -> list[Activation]:
        return [Activation(**e) for e in self._read().get(scope) or []]


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
