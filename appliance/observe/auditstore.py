"""The audit store: where every worker's records go, and how an operator searches them.

Two backends behind one interface (``AuditStore``): SQLite (WAL) in the state directory, the
default, for one node; PostgreSQL by URL (``audit.store: postgresql://...``) for several nodes
sharing one store. Each keeps a record whole as JSON beside the columns searches filter on, so a
search reads an index, not every record.

Workers write through ``AuditWriter``: the request path only puts a record on a bounded queue; one
thread per worker writes them in batches. When the queue is full (the database is locked, slow or
down), records go to a local spill file that the writer replays, so a flood or an outage delays
records instead of dropping them.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("edgeward.audit")

SCORE_RULES = frozenset({949110, 959100, 980130, 980140, 980170})


class AuditStoreError(Exception):
    """The audit store cannot be opened, read or written (corrupt, locked, down, not writable)."""


@dataclass(frozen=True)
class Query:
    """Filters of a search; every one given must hold."""

    domain: str | None = None
    route: str | None = None
    rule: int | None = None
    tag: str | None = None  # a tag of a matched rule, such as attack-sqli
    ip: str | None = None  # an address or a CIDR
    country: str | None = None
    stage: str | None = None
    status: int | None = None
    consumer: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None  # a substring of the URI
    limit: int = 100
    before: tuple[float, str] | None = None  # cursor: (time, id) of the last record already seen


class AuditStore(Protocol):
    """What the writer, the CLI and the admin API need of a backend; every failure of the
    database is raised as ``AuditStoreError`` naming the store (never its password)."""

    where: str

    def insert(self, records: list[dict[str, Any]]) -> None: ...
    def add_hits(self, hits: Mapping[tuple[str, str], int]) -> None: ...  # (exclusion id, UTC day) -> requests
    def search(self, q: Query) -> list[dict[str, Any]]: ...  # newest first
    def get(self, record_id: str) -> dict[str, Any] | None: ...
    def after(self, since: float, seen: set[str]) -> list[dict[str, Any]]: ...  # oldest first, for tail
    def stats(self, since: float | None = None, until: float | None = None, top: int = 10) -> dict[str, Any]: ...
    def prune(self, older_than: float) -> int: ...
    def prune_to_size(self, max_bytes: int) -> int: ...
    def iterate(self, since: float | None = None) -> Iterator[dict[str, Any]]: ...  # oldest first, for export
    def check(self) -> None: ...
    def close(self) -> None: ...


def plain_filters(q: Query, mark: str) -> tuple[list[str], list[Any]]:
    """The conditions every backend writes alike (columns compared as they are), with ``mark``
    as the parameter placeholder; each backend adds its own for rule, tag, IP, text and cursor."""
    where: list[str] = []
    args: list[Any] = []
    for column in ("domain", "route", "stage", "country", "consumer", "status"):
        value = getattr(q, column)
        if value is not None and value != "":
            where.append(f"{column} = {mark}")
            args.append(value)
    if q.since is not None:
        where.append(f"time >= {mark}")
        args.append(q.since)
    if q.until is not None:
        where.append(f"time < {mark}")
        args.append(q.until)
    return where, args


def is_postgres(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def masked(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def spill_dir(state_dir: Path) -> Path:
    """Where workers keep the records they could not write yet (local even with PostgreSQL)."""
    return state_dir / "audit"


def open_store(store: str, state_dir: Path, readonly: bool = False) -> AuditStore:
    """The configured backend; ``readonly`` for readers (they never create the schema)."""
    if is_postgres(store):
        from appliance.observe.auditpg import PostgresStore

        return PostgresStore(store, readonly)
    from appliance.observe.auditsqlite import SqliteStore, database_path

    return SqliteStore(database_path(state_dir), readonly)


# -- what every backend stores beside the JSON ------------------------------------------------------

def path_of(uri: str) -> str:
    return uri.split("?", 1)[0]


def matches_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    return list((record.get("waf") or {}).get("matches") or [])


def rule_ids(record: dict[str, Any]) -> list[int]:
    return sorted({int(m["rule_id"]) for m in matches_of(record)})


def tags_of(record: dict[str, Any]) -> list[str]:
    return sorted({str(t) for m in matches_of(record) for t in m.get("tags") or ()})


def encoded(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def day_of(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


# -- the writer ------------------------------------------------------------------------------------

def take_batch(source: queue.Queue[Any], size: int, batch: list[Any], deadline: float | None = None) -> bool:
    """Fill ``batch`` up to ``size`` from ``source``, waiting until ``deadline`` (monotonic) or,
    without one, not at all; True when the closing sentinel (None) came."""
    while len(batch) < size:
        try:
            item = source.get(timeout=max(0.0, deadline - time.monotonic())) if deadline is not None else source.get_nowait()
        except queue.Empty:
            return False
        if item is None:
            return True
        batch.append(item)
    return False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AuditWriter:
    """One per worker: a bounded queue drained by a thread that writes batches. ``put`` never
    blocks; when the queue is full the record goes to an overflow list that the thread moves to
    ``spill`` and replays later. Exclusion hits are counted here and written with the batches."""

    BATCH = 500
    INTERVAL = 0.1
    PRUNE_EVERY = 3600.0
    OVERFLOW = 100_000

    def __init__(self, opener: Callable[[], AuditStore], spill_to: Path, maxsize: int = 20000,
                 retention_days: float = 30, max_bytes: int = 0) -> None:
        self.opener = opener
        self.retention = retention_days * 86400
        self.max_bytes = max_bytes
        self.spill_to = spill_to
        self.spill = spill_to / f"spill-{os.getpid()}.jsonl"
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._spill_lock = threading.Lock()
        self._overflow: collections.deque[dict[str, Any]] = collections.deque()  # append/popleft: thread-safe
        self._hits: collections.deque[str] = collections.deque()
        self.written = 0
        self.failed = 0

    def start(self) -> None:
        self.spill_to.mkdir(parents=True, exist_ok=True)
        store = self.opener()  # fail at start, with the store named, not later
        self._thread = threading.Thread(target=self._run, args=(store,), name="edgeward-audit", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Never waits: a full queue hands the record to the writer thread's overflow, which it
        moves to the spill file (no file I/O here); only past that does the caller write it."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            if len(self._overflow) < self.OVERFLOW:
                self._overflow.append(record)
            else:
                self._to_spill([record])

    def hit(self, exclusion: str) -> None:
        """A request to which the exclusion ``exclusion`` applied (counted, written in batches)."""
        self._hits.append(exclusion)

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _to_spill(self, records: list[dict[str, Any]]) -> None:
        data = "".join(encoded(r) + "\n" for r in records).encode()
        with self._spill_lock:
            fd = os.open(self.spill, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _drain_overflow(self) -> None:
        taken: list[dict[str, Any]] = []
        while self._overflow and len(taken) < 10_000:
            taken.append(self._overflow.popleft())
        if taken:
            self._to_spill(taken)

    def _flush_hits(self, store: AuditStore) -> None:
        if not self._hits:
            return
        day = day_of(time.time())
        counted: collections.Counter[tuple[str, str]] = collections.Counter()
        while self._hits:
            counted[(self._hits.popleft(), day)] += 1
        try:
            store.add_hits(counted)
        except AuditStoreError:
            for (exclusion, _), n in counted.items():  # counted again next time
                self._hits.extend([exclusion] * n)
            raise

    def _replay(self, store: AuditStore) -> None:
        """Write back this worker's spill file, and those of workers that died before they could
        (a spill file is named after its worker's pid)."""
        for leftover in sorted(self.spill_to.glob(f"spill-*.replaying-{os.getpid()}")):  # a failed replay
            self._replay_file(store, leftover.with_suffix(".jsonl"))
        for spill in sorted(self.spill_to.glob("spill-*.jsonl")):
            owner = spill.stem.split("-", 1)[1]
            if spill != self.spill and _alive(int(owner) if owner.isdigit() else 0):
                continue
            self._replay_file(store, spill)

    def _replay_file(self, store: AuditStore, spill: Path) -> None:
        taken = spill.with_suffix(f".replaying-{os.getpid()}")
        with self._spill_lock:
            if not taken.exists():  # else a replay that failed half-way is retried first
                try:
                    os.replace(spill, taken)
                except FileNotFoundError:  # another worker took it
                    return
        records = [json.loads(line) for line in taken.read_text().splitlines() if line.strip()]
        for start in range(0, len(records), self.BATCH * 4):
            store.insert(records[start:start + self.BATCH * 4])  # inserting twice is harmless: ids are unique
        self.written += len(records)
        taken.unlink()

    def _prune(self, store: AuditStore) -> None:
        try:
            removed = store.prune(time.time() - self.retention)
            if self.max_bytes:
                removed += store.prune_to_size(self.max_bytes)
            if removed:
                log.info("audit: pruned %d record(s) past the retention", removed)
        except AuditStoreError as exc:
            log.error("audit: pruning failed: %s", exc)

    def _run(self, store: AuditStore) -> None:
        stopping = False
        pruned = 0.0
        while not stopping:
            if time.monotonic() - pruned > (self.PRUNE_EVERY if not self.max_bytes else self.PRUNE_EVERY / 60):
                pruned = time.monotonic()
                self._prune(store)
            batch: list[dict[str, Any]] = []
            stopping = take_batch(self._queue, self.BATCH, batch, time.monotonic() + self.INTERVAL)
            try:
                if batch:
                    store.insert(batch)
                    self.written += len(batch)
                    batch = []
                self._flush_hits(store)
                self._drain_overflow()
                if self._queue.empty() and not self._overflow:
                    self._replay(store)
            except (AuditStoreError, OSError, ValueError) as exc:
                self.failed += 1
                log.error("audit: cannot write %d record(s) (%s); kept in %s", len(batch), exc, self.spill)
                if batch:
                    self._to_spill(batch)
                time.sleep(0.5)
        while self._overflow:  # closing: what is left is kept for the next writer to replay
            self._drain_overflow()
        store.close()
