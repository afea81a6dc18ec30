"""The SQLite audit store: one database (WAL) per state directory, written by every worker.

Matched rule ids are kept in their own indexed table, and each rule's tags once in a small
dictionary table, so a search by rule or tag reads an index; a trigram FTS5 index finds URI text.
Pruning gives the pages back to the file system (``auto_vacuum=INCREMENTAL``).
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from appliance.observe.auditstore import (AuditStoreError, Query, day_of, encoded, matches_of, path_of, plain_filters,
                                          rule_ids)

VERSION = 2

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
  record TEXT NOT NULL,
  country TEXT,
  path TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit_rule (
  rule_id INTEGER NOT NULL,
  audit_id TEXT NOT NULL,
  PRIMARY KEY (rule_id, audit_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_tag (
  tag TEXT NOT NULL,
  rule_id INTEGER NOT NULL,
  PRIMARY KEY (tag, rule_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS exclusion_hits (
  exclusion TEXT NOT NULL,
  day TEXT NOT NULL,
  hits INTEGER NOT NULL,
  PRIMARY KEY (exclusion, day)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS audit_uri USING fts5(uri, content='audit', content_rowid='rowid', tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS audit_uri_insert AFTER INSERT ON audit BEGIN
  INSERT INTO audit_uri (rowid, uri) VALUES (new.rowid, new.uri);
END;
CREATE TRIGGER IF NOT EXISTS audit_uri_delete AFTER DELETE ON audit BEGIN
  INSERT INTO audit_uri (audit_uri, rowid, uri) VALUES ('delete', old.rowid, old.uri);
END;
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_domain_time ON audit (domain, time);
CREATE INDEX IF NOT EXISTS audit_route_time ON audit (route, time);
CREATE INDEX IF NOT EXISTS audit_ip_time ON audit (client_ip, time);
CREATE INDEX IF NOT EXISTS audit_stage_time ON audit (stage, time);
CREATE INDEX IF NOT EXISTS audit_path_time ON audit (path, time);
CREATE INDEX IF NOT EXISTS audit_country_time ON audit (country, time) WHERE country IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_consumer_time ON audit (consumer, time) WHERE consumer IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_rule_by_audit ON audit_rule (audit_id);
"""

# A database of the first version (no country, path, rule_tag or exclusion_hits) is brought up to date.
MIGRATE_1 = """
ALTER TABLE audit ADD COLUMN country TEXT;
ALTER TABLE audit ADD COLUMN path TEXT NOT NULL DEFAULT '';
UPDATE audit SET path = CASE WHEN instr(uri, '?') > 0 THEN substr(uri, 1, instr(uri, '?') - 1) ELSE uri END;
"""


def database_path(state_dir: Path) -> Path:
    return state_dir / "audit" / "audit.db"


def _ip_in(address: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network)
    except ValueError:
        return False


class SqliteStore:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.where = str(path)
        try:
            if readonly:
                if not path.exists():
                    raise AuditStoreError(f"{path}: no audit database yet (nothing has been recorded)")
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(path, timeout=5, check_same_thread=False)
                self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect when the file is new
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._schema()
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.create_function("ip_in", 2, _ip_in, deterministic=True)
            self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{path}: cannot open the audit database: {exc}") from exc

    def _schema(self) -> None:
        """Create or bring up to date, one worker at a time (the others wait on the lock file)."""
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.db.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
                return
            old = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit'").fetchone() is not None
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(audit)")}
            self.db.executescript((MIGRATE_1 if old and "path" not in columns else "") + SCHEMA + INDEXES)
            if old:
                with self.db:
                    self.db.execute(
                        "INSERT OR IGNORE INTO rule_tag SELECT DISTINCT t.value, json_extract(m.value, '$.rule_id') "
                        "FROM audit a, json_each(a.record, '$.waf.matches') m, json_each(m.value, '$.tags') t")
            self.db.execute(f"PRAGMA user_version={VERSION}")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from exc

    def check(self) -> None:
        with self._errors():
            self.db.execute("SELECT count(*) FROM audit WHERE id = ''").fetchone()

    def close(self) -> None:
        self.db.close()

    def insert(self, records: list[dict[str, Any]]) -> None:
        rows = [(r["id"], r["time"], r["domain"], r["route"], r["client"]["ip"], r["method"], r["uri"], r["status"],
                 r["stage"], r["reason"], r.get("consumer"), r["mode"], encoded(r), r.get("country"),
                 path_of(r["uri"])) for r in records]
        rules = [(rule_id, r["id"]) for r in records for rule_id in rule_ids(r)]
        tags = {(str(t), int(m["rule_id"])) for r in records for m in matches_of(r) for t in m.get("tags") or ()}
        with self._errors(), self.db:
            self.db.executemany("INSERT OR IGNORE INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self.db.executemany("INSERT OR IGNORE INTO audit_rule VALUES (?,?)", rules)
            self.db.executemany("INSERT OR IGNORE INTO rule_tag VALUES (?,?)", tags)

    def add_hits(self, hits: Mapping[tuple[str, str], int]) -> None:
        with self._errors(), self.db:
            self.db.executemany(
                "INSERT INTO exclusion_hits VALUES (?,?,?) "
                "ON CONFLICT (exclusion, day) DO UPDATE SET hits = hits + excluded.hits",
                [(exclusion, day, n) for (exclusion, day), n in hits.items()])

    def search(self, q: Query) -> list[dict[str, Any]]:
        where, args = plain_filters(q, "?")
        if q.rule is not None:
            where.append("id IN (SELECT audit_id FROM audit_rule WHERE rule_id = ?)")
            args.append(q.rule)
        if q.tag:
            # candidates by the rules that carry the tag; the record itself decides (a rule's tags
            # can differ between bundle versions)
            where.append("id IN (SELECT audit_id FROM audit_rule WHERE rule_id IN (SELECT rule_id FROM rule_tag WHERE tag = ?))")
            where.append("EXISTS (SELECT 1 FROM json_each(record, '$.waf.matches') m, json_each(m.value, '$.tags') t "
                         "WHERE t.value = ?)")
            args += [q.tag, q.tag]
        if q.ip:
            network = ipaddress.ip_network(q.ip, strict=False)
            if network.num_addresses == 1:
                where.append("client_ip = ?")
                args.append(str(network.network_address))
            else:
                where.append("ip_in(client_ip, ?)")
                args.append(str(network))
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
        with self._errors():
            return [json.loads(row[0]) for row in self.db.execute(sql, args)]

    def get(self, record_id: str) -> dict[str, Any] | None:
        with self._errors():
            row = self.db.execute("SELECT record FROM audit WHERE id = ?", (record_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def after(self, since: float, seen: set[str]) -> list[dict[str, Any]]:
        with self._errors():
            rows = self.db.execute("SELECT id, record FROM audit WHERE time >= ? ORDER BY time, id", (since,)).fetchall()
        return [json.loads(record) for rid, record in rows if rid not in seen]

    def stats(self, since: float | None = None, until: float | None = None, top: int = 10) -> dict[str, Any]:
        span = ""
        args: list[Any] = []
        if since is not None:
            span += " AND time >= ?"
            args.append(since)
        if until is not None:
            span += " AND time < ?"
            args.append(until)
        db = self.db

        def grouped(column: str) -> list[dict[str, Any]]:  # each reads its (column, time) index only
            rows = db.execute(f"SELECT {column}, count(*) AS n FROM audit WHERE 1=1{span} GROUP BY {column} "
                              f"ORDER BY n DESC, {column} LIMIT ?", [*args, top]).fetchall()
            return [{"key": key, "count": n} for key, n in rows]

        with self._errors():
            if span:
                rules = db.execute(
                    f"SELECT r.rule_id, count(*) AS n FROM audit a CROSS JOIN audit_rule r ON r.audit_id = a.id "  # a first: its time index
                    f"WHERE 1=1{span.replace('time', 'a.time')} GROUP BY r.rule_id ORDER BY n DESC, r.rule_id LIMIT ?",
                    [*args, top]).fetchall()
            else:  # the whole store: the rule table's own key, without touching the records
                rules = db.execute("SELECT rule_id, count(*) AS n FROM audit_rule GROUP BY rule_id "
                                   "ORDER BY n DESC, rule_id LIMIT ?", (top,)).fetchall()
            total = db.execute(f"SELECT count(*) FROM audit WHERE 1=1{span}", args).fetchone()[0]
            days = ""
            day_args: list[Any] = []
            if since is not None:
                days += " AND day >= ?"
                day_args.append(day_of(since))
            if until is not None:
                days += " AND day <= ?"
                day_args.append(day_of(until))
            hits = db.execute(f"SELECT exclusion, sum(hits) AS n FROM exclusion_hits WHERE 1=1{days} "
                              f"GROUP BY exclusion ORDER BY n DESC, exclusion", day_args).fetchall()
            return {
                "total": total,
                "rules": [{"key": rule_id, "count": n} for rule_id, n in rules],
                "ips": grouped("client_ip"),
                "paths": grouped("path"),
                "stages": grouped("stage"),
                "domains": grouped("domain"),
                "exclusions": [{"key": key, "count": n} for key, n in hits],
            }

    def prune(self, older_than: float) -> int:
        """Delete records older than ``older_than`` (epoch seconds) and give their pages back to
        the file system; return how many went."""
        with self._errors():
            with self.db:
                self.db.execute("DELETE FROM audit_rule WHERE audit_id IN (SELECT id FROM audit WHERE time < ?)",
                                (older_than,))
                removed = self.db.execute("DELETE FROM audit WHERE time < ?", (older_than,)).rowcount
                self.db.execute("DELETE FROM exclusion_hits WHERE day < ?", (day_of(older_than),))
            if removed:
                self.db.executescript("PRAGMA incremental_vacuum;")  # sqlite3_exec steps it to the end (execute frees one page)
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(removed)

    def size(self) -> int:
        """The database's bytes on disk, its write-ahead log included."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def prune_to_size(self, max_bytes: int) -> int:
        """Delete the oldest records, a tenth at a time, until the database fits in ``max_bytes``."""
        removed = 0
        with self._errors():
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            while self.size() > max_bytes:
                total = self.db.execute("SELECT count(*) FROM audit").fetchone()[0]
                if not total:
                    break
                cut = self.db.execute("SELECT time FROM audit ORDER BY time LIMIT 1 OFFSET ?",
                                      (max(1, total // 10) - 1,)).fetchone()[0]
                removed += self.prune(cut + 1e-6)
        return removed

    def iterate(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT record FROM audit"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE time >= ?"
            args.append(since)
        with self._errors():
            for (record,) in self.db.execute(sql + " ORDER BY time, id", args):
                yield json.loads(record)
