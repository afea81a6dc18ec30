"""The audit store: one SQLite database (WAL) per state directory, written by every worker.

Each record is kept whole as JSON beside the columns searches filter on, and each matched rule id
in its own indexed table, so a search by rule, IP, domain, stage or time range reads an index, not
every record. Workers write through ``AuditWriter``: the request path only puts a record on a
bounded queue; one thread per worker writes them in batches. When the queue is full (the database
is locked or slow), records go to a spill file that the writer replays, so a flood delays records
instead of dropping them.
"""
from __future__ import annotations

import collections
import ipaddress
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeward.audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
  id TEXT PRIMARY KEY,
  time REAL NOT NULL,
  domain TEXT NOT NULL,
  route TEXT NOT NULL,
  client_ip TEXT NOT NULL,
  method TEXT NOT NULL,
  uri TEXT NOT NULL,
  status INTEGER NOT NULL,
  stage TEXT NOT NULL,
  reason TEXT NOT NULL,
  consumer TEXT,
  mode TEXT NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_domain_time ON audit (domain, time);
CREATE INDEX IF NOT EXISTS audit_ip_time ON audit (client_ip, time);
CREATE INDEX IF NOT EXISTS audit_stage_time ON audit (stage, time);
CREATE TABLE IF NOT EXISTS audit_rule (
  rule_id INTEGER NOT NULL,
  audit_id TEXT NOT NULL,
  PRIMARY KEY (rule_id, audit_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_rule_by_audit ON audit_rule (audit_id);
CREATE VIRTUAL TABLE IF NOT EXISTS audit_uri USING fts5(uri, content='audit', content_rowid='rowid', tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS audit_uri_insert AFTER INSERT ON audit BEGIN
  INSERT INTO audit_uri (rowid, uri) VALUES (new.rowid, new.uri);
END;
CREATE TRIGGER IF NOT EXISTS audit_uri_delete AFTER DELETE ON audit BEGIN
  INSERT INTO audit_uri (audit_uri, rowid, uri) VALUES ('delete', old.rowid, old.uri);
END;
"""


class AuditStoreError(Exception):
    """The audit database cannot be opened or written (corrupt, locked, not writable)."""


def database_path(state_dir: Path) -> Path:
    return state_dir / "audit" / "audit.db"


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open (and for writers create) the database; a clear ``AuditStoreError`` otherwise."""
    try:
        if readonly:
            if not path.exists():
                raise AuditStoreError(f"{path}: no audit database yet (nothing has been recorded)")
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=5, check_same_thread=False)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect when the file is new: pruning frees pages
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.Error as exc:
        raise AuditStoreError(f"{path}: cannot open the audit database: {exc}") from exc


def insert(db: sqlite3.Connection, records: list[dict[str, Any]]) -> None:
    rows = [(r["id"], r["time"], r["domain"], r["route"], r["client"]["ip"], r["method"], r["uri"], r["status"],
             r["stage"], r["reason"], r.get("consumer"), r["mode"], json.dumps(r, separators=(",", ":")))
            for r in records]
    rules = [(m["rule_id"], r["id"]) for r in records for m in (r.get("waf") or {}).get("matches", [])]
    with db:
        db.executemany("INSERT OR IGNORE INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.executemany("INSERT OR IGNORE INTO audit_rule VALUES (?,?)", rules)


@dataclass(frozen=True)
class Query:
    """Filters of a search; every one given must hold."""

    domain: str | None = None
    rule: int | None = None
    ip: str | None = None  # an address or a CIDR
    stage: str | None = None
    status: int | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None  # a substring of the URI
    limit: int = 100
    before: tuple[float, str] | None = None  # cursor: (time, id) of the last record already seen


def search(db: sqlite3.Connection, q: Query) -> list[dict[str, Any]]:
    """Newest first."""
    where: list[str] = []
    args: list[Any] = []
    if q.domain:
        where.append("domain = ?")
        args.append(q.domain)
    if q.rule is not None:
        where.append("id IN (SELECT audit_id FROM audit_rule WHERE rule_id = ?)")
        args.append(q.rule)
    if q.ip:
        network = ipaddress.ip_network(q.ip, strict=False)
        if network.num_addresses == 1:
            where.append("client_ip = ?")
            args.append(str(network.network_address))
        else:
            where.append("ip_in(client_ip, ?)")
            args.append(str(network))
    if q.stage:
        where.append("stage = ?")
        args.append(q.stage)
    if q.status is not None:
        where.append("status = ?")
        args.append(q.status)
    if q.since is not None:
        where.append("time >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("time < ?")
        args.append(q.until)
    if q.text:
        if len(q.text) >= 3:  # the trigram index finds candidates; instr keeps the match exact
            where.append("rowid IN (SELECT rowid FROM audit_uri WHERE audit_uri MATCH ?)")
            args.append('"' + q.text.replace('"', '""') + '"')
        where.append("instr(uri, ?) > 0")
        args.append(q.text)
    if q.before is not None:
        where.append("(time < ? OR (time = ? AND id < ?))")
        args += [q.before[0], q.before[0], q.before[1]]
    sql = "SELECT record FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY time DESC, id DESC LIMIT ?"
    args.append(q.limit)
    db.create_function("ip_in", 2, _ip_in, deterministic=True)
    return [json.loads(row[0]) for row in db.execute(sql, args)]


def _ip_in(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network)
    except ValueError:
        return False


def get(db: sqlite3.Connection, record_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT record FROM audit WHERE id = ?", (record_id,)).fetchone()
    return json.loads(row[0]) if row else None


def after(db: sqlite3.Connection, since: float, seen: set[str]) -> list[dict[str, Any]]:
    """Records at or after ``since`` not in ``seen``, oldest first (for ``audit tail``)."""
    rows = db.execute("SELECT id, record FROM audit WHERE time >= ? ORDER BY time, id", (since,)).fetchall()
    return [json.loads(record) for rid, record in rows if rid not in seen]


def stats(db: sqlite3.Connection, since: float | None = None, until: float | None = None, top: int = 10) -> dict[str, Any]:
    span = ""
    args: list[Any] = []
    if since is not None:
        span += " AND time >= ?"
        args.append(since)
    if until is not None:
        span += " AND time < ?"
        args.append(until)

    def grouped(column: str) -> list[dict[str, Any]]:
        rows = db.execute(f"SELECT {column}, count(*) AS n FROM audit WHERE 1=1{span} GROUP BY {column} "
                          f"ORDER BY n DESC, {column} LIMIT ?", [*args, top]).fetchall()
        return [{"key": key, "count": n} for key, n in rows]

    rules = db.execute(
        f"SELECT r.rule_id, count(*) AS n FROM audit a CROSS JOIN audit_rule r ON r.audit_id = a.id "  # a first: its time index
        f"WHERE 1=1{span.replace('time', 'a.time')} GROUP BY r.rule_id ORDER BY n DESC, r.rule_id LIMIT ?",
        [*args, top]).fetchall()
    total = db.execute(f"SELECT count(*) FROM audit WHERE 1=1{span}", args).fetchone()[0]
    paths = db.execute(
        f"SELECT CASE WHEN instr(uri, '?') > 0 THEN substr(uri, 1, instr(uri, '?') - 1) ELSE uri END AS path, count(*) AS n "
        f"FROM audit WHERE 1=1{span} GROUP BY path ORDER BY n DESC, path LIMIT ?", [*args, top]).fetchall()
    return {
        "total": total,
        "rules": [{"key": rule_id, "count": n} for rule_id, n in rules],
        "ips": grouped("client_ip"),
        "paths": [{"key": p, "count": n} for p, n in paths],
        "stages": grouped("stage"),
        "domains": grouped("domain"),
    }


def prune(db: sqlite3.Connection, older_than: float) -> int:
    """Delete records older than ``older_than`` (epoch seconds) and give their pages back to the
    file system; return how many records went."""
    with db:
        db.execute("DELETE FROM audit_rule WHERE audit_id IN (SELECT id FROM audit WHERE time < ?)", (older_than,))
        removed = db.execute("DELETE FROM audit WHERE time < ?", (older_than,)).rowcount
    if removed:
        db.executescript("PRAGMA incremental_vacuum;")  # sqlite3_exec steps it to the end (execute frees one page)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(removed)


def size_of(path: Path) -> int:
    """The database's bytes on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def prune_to_size(db: sqlite3.Connection, path: Path, max_bytes: int) -> int:
    """Delete the oldest records, a tenth at a time, until the database fits in ``max_bytes``;
    return how many went."""
    removed = 0
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    while size_of(path) > max_bytes:
        total = db.execute("SELECT count(*) FROM audit").fetchone()[0]
        if not total:
            break
        cut = db.execute("SELECT time FROM audit ORDER BY time LIMIT 1 OFFSET ?",
                         (max(1, total // 10) - 1,)).fetchone()[0]
        removed += prune(db, cut + 1e-6)
    return removed


def iterate(db: sqlite3.Connection, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every record, oldest first (for export)."""
    sql = "SELECT record FROM audit"
    args: list[Any] = []
    if since is not None:
        sql += " WHERE time >= ?"
        args.append(since)
    for (record,) in db.execute(sql + " ORDER BY time, id", args):
        yield json.loads(record)


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
    blocks; when the queue is full the record is appended to ``spill`` and replayed later."""

    BATCH = 500
    INTERVAL = 0.1

    PRUNE_EVERY = 3600.0

    def __init__(self, path: Path, maxsize: int = 20000, retention_days: float = 30, max_bytes: int = 0) -> None:
        self.path = path
        self.retention = retention_days * 86400
        self.max_bytes = max_bytes
        self.spill = path.parent / f"spill-{os.getpid()}.jsonl"
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._spill_lock = threading.Lock()
        self._overflow: collections.deque[dict[str, Any]] = collections.deque()  # append/popleft: thread-safe
        self.written = 0
        self.failed = 0

    def start(self) -> None:
        db = connect(self.path)  # fail at start, with the file named, not later
        self._thread = threading.Thread(target=self._run, args=(db,), name="edgeward-audit", daemon=True)
        self._thread.start()

    OVERFLOW = 100_000

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

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _to_spill(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
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

    def _replay(self, db: sqlite3.Connection) -> None:
        """Write back this worker's spill file, and those of workers that died before they could
        (a spill file is named after its worker's pid)."""
        for leftover in sorted(self.path.parent.glob(f"spill-*.replaying-{os.getpid()}")):  # a failed replay
            self._replay_file(db, leftover.with_suffix(".jsonl"))
        for spill in sorted(self.path.parent.glob("spill-*.jsonl")):
            owner = int(spill.stem.split("-", 1)[1]) if spill.stem.split("-", 1)[1].isdigit() else 0
            if spill != self.spill and _alive(owner):
                continue
            self._replay_file(db, spill)

    def _replay_file(self, db: sqlite3.Connection, spill: Path) -> None:
        taken = spill.with_suffix(f".replaying-{os.getpid()}")
        with self._spill_lock:
            if not taken.exists():  # else a replay that failed half-way is retried first
                try:
                    os.replace(spill, taken)
                except FileNotFoundError:  # another worker took it
                    return
        records = [json.loads(line) for line in taken.read_text().splitlines() if line.strip()]
        insert(db, records)
        self.written += len(records)
        taken.unlink()

    def _run(self, db: sqlite3.Connection) -> None:
        stopping = False
        pruned = 0.0
        while not stopping:
            if time.monotonic() - pruned > (self.PRUNE_EVERY if not self.max_bytes else self.PRUNE_EVERY / 60):
                pruned = time.monotonic()
                try:
                    removed = prune(db, time.time() - self.retention)
                    if self.max_bytes:
                        removed += prune_to_size(db, self.path, self.max_bytes)
                    if removed:
                        log.info("audit: pruned %d record(s) older than the retention", removed)
                except sqlite3.Error as exc:
                    log.error("audit: pruning %s failed: %s", self.path, exc)
            batch: list[dict[str, Any]] = []
            deadline = time.monotonic() + self.INTERVAL
            while len(batch) < self.BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                if batch:
                    insert(db, batch)
                    self.written += len(batch)
                self._drain_overflow()
                if self._queue.empty() and not self._overflow:
                    self._replay(db)
            except (sqlite3.Error, OSError, ValueError) as exc:
                self.failed += 1
                log.error("audit: cannot write %d record(s) to %s (%s); kept in %s", len(batch), self.path, exc,
                          self.spill)
                if batch:
                    self._to_spill(batch)
                time.sleep(0.5)
        while self._overflow:  # closing: what is left is kept for the next writer to replay
            self._drain_overflow()
        db.close()
