"""The PostgreSQL audit store: one database shared by several nodes (``audit.store: postgresql://...``).

Records are partitioned by UTC day, so retention drops whole partitions: the disk is given back at
once, without the bloat that deleting rows leaves behind. Rule ids and tags are array columns with
GIN indexes and the URI has a trigram index (``pg_trgm``). Writers create the schema and the
partitions they need under an advisory lock, so nodes starting together do not race.
"""
from __future__ import annotations

import calendar
import contextlib
import ipaddress
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg

from appliance.observe.auditstore import (AuditStoreError, Query, day_of, encoded, masked, path_of, plain_filters,
                                          rule_ids, tags_of)

DAY = 86400
LOCK = 0x6564_6777  # "edgw": the advisory lock that serialises schema changes and pruning
TIMEOUT_MS = 10_000  # a statement that takes longer fails (and its records are spilled), never hangs

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE IF NOT EXISTS audit (
  id text NOT NULL,
  time double precision NOT NULL,
  domain text NOT NULL,
  route text NOT NULL,
  client_ip inet NOT NULL,
  country text,
  method text NOT NULL,
  uri text NOT NULL,
  path text NOT NULL,
  status integer NOT NULL,
  stage text NOT NULL,
  reason text NOT NULL,
  consumer text,
  mode text NOT NULL,
  rules integer[] NOT NULL,
  tags text[] NOT NULL,
  record text NOT NULL,
  PRIMARY KEY (time, id)
) PARTITION BY RANGE (time);
CREATE TABLE IF NOT EXISTS audit_default PARTITION OF audit DEFAULT;
CREATE INDEX IF NOT EXISTS audit_id ON audit (id);
CREATE INDEX IF NOT EXISTS audit_domain_time ON audit (domain, time);
CREATE INDEX IF NOT EXISTS audit_route_time ON audit (route, time);
CREATE INDEX IF NOT EXISTS audit_ip_time ON audit (client_ip, time);
CREATE INDEX IF NOT EXISTS audit_stage_time ON audit (stage, time);
CREATE INDEX IF NOT EXISTS audit_path_time ON audit (path, time);
CREATE INDEX IF NOT EXISTS audit_country_time ON audit (country, time) WHERE country IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_consumer_time ON audit (consumer, time) WHERE consumer IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_rules ON audit USING gin (rules);
CREATE INDEX IF NOT EXISTS audit_tags ON audit USING gin (tags);
CREATE INDEX IF NOT EXISTS audit_uri ON audit USING gin (uri gin_trgm_ops);
CREATE TABLE IF NOT EXISTS audit_exclusion_hits (
  exclusion text NOT NULL,
  day date NOT NULL,
  hits bigint NOT NULL,
  PRIMARY KEY (exclusion, day)
);
"""


def _partition(day_start: int) -> str:
    return "audit_" + time.strftime("%Y%m%d", time.gmtime(day_start))


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PostgresStore:
    def __init__(self, url: str, readonly: bool = False) -> None:
        self.url = url
        self.where = masked(url)
        self.readonly = readonly
        self._db: psycopg.Connection[Any] | None = None
        self._days: set[int] = set()  # partitions this writer knows exist
        with self._errors():
            db = self._conn()
            if readonly:
                if db.execute("SELECT to_regclass('audit')").fetchone()[0] is None:  # type: ignore[index]
                    raise AuditStoreError(f"{self.where}: no audit tables yet (nothing has been recorded)")
            else:
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                    db.execute(SCHEMA)
                self._ensure_partitions(time.time())

    def _conn(self) -> psycopg.Connection[Any]:
        """The connection, opened again after the server went away (a restart, a failover)."""
        if self._db is None or self._db.closed or self._db.broken:
            self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                       options=f"-c statement_timeout={TIMEOUT_MS}",
                                       application_name="edgeward-audit")
        return self._db

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            message = str(exc).strip().replace(self.url, self.where)
            raise AuditStoreError(f"{self.where}: {message}") from exc

    def _ensure_partitions(self, now: float) -> None:
        """Today's and tomorrow's partitions (a record's day is its own time's)."""
        first = int(now // DAY) * DAY
        wanted = [d for d in (first, first + DAY) if d not in self._days]
        if not wanted:
            return
        db = self._conn()
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            for start in wanted:
                exists = db.execute("SELECT to_regclass(%s)", (_partition(start),)).fetchone()[0]  # type: ignore[index]
                if exists is None:
                    moved = db.execute("SELECT count(*) FROM audit_default WHERE time >= %s AND time < %s",
                                       (start, start + DAY)).fetchone()[0]  # type: ignore[index]
                    if moved:  # rows that arrived before their day's partition: the default keeps them
                        continue
                    db.execute(f"CREATE TABLE {_partition(start)} PARTITION OF audit FOR VALUES FROM ({start}) TO ({start + DAY})")
                self._days.add(start)

    def check(self) -> None:
        with self._errors():
            self._conn().execute("SELECT count(*) FROM audit WHERE id = ''").fetchone()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def insert(self, records: list[dict[str, Any]]) -> None:
        rows = [(r["id"], r["time"], r["domain"], r["route"], r["client"]["ip"], r.get("country"), r["method"],
                 r["uri"], path_of(r["uri"]), r["status"], r["stage"], r["reason"], r.get("consumer"), r["mode"],
                 rule_ids(r), tags_of(r), encoded(r)) for r in records]
        with self._errors():
            self._ensure_partitions(time.time())
            db = self._conn()
            with db.transaction(), db.cursor() as cur:
                cur.executemany("INSERT INTO audit VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                                "ON CONFLICT DO NOTHING", rows)

    def add_hits(self, hits: Mapping[tuple[str, str], int]) -> None:
        with self._errors():
            db = self._conn()
            with db.transaction(), db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO audit_exclusion_hits VALUES (%s,%s,%s) ON CONFLICT (exclusion, day) "
                    "DO UPDATE SET hits = audit_exclusion_hits.hits + excluded.hits",
                    [(exclusion, day, n) for (exclusion, day), n in hits.items()])

    def search(self, q: Query) -> list[dict[str, Any]]:
        where, args = plain_filters(q, "%s")
        if q.rule is not None:
            where.append("rules @> ARRAY[%s]::integer[]")
            args.append(q.rule)
        if q.tag:
            where.append("tags @> ARRAY[%s]::text[]")
            args.append(q.tag)
        if q.ip:
            where.append("client_ip <<= %s::inet")
            args.append(str(ipaddress.ip_network(q.ip, strict=False)))
        if q.text:
            where.append("uri LIKE %s")  # the trigram index serves LIKE (three characters or more)
            args.append(_like(q.text))
        if q.before is not None:
            where.append("(time, id) < (%s, %s)")
            args += [q.before[0], q.before[1]]
        sql = "SELECT record FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY time DESC, id DESC LIMIT %s"
        args.append(q.limit)
        with self._errors():
            return [json.loads(row[0]) for row in self._conn().execute(sql, args)]

    def get(self, record_id: str) -> dict[str, Any] | None:
        with self._errors():
            row = self._conn().execute("SELECT record FROM audit WHERE id = %s LIMIT 1", (record_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def after(self, since: float, seen: set[str]) -> list[dict[str, Any]]:
        with self._errors():
            rows = self._conn().execute("SELECT id, record FROM audit WHERE time >= %s ORDER BY time, id",
                                        (since,)).fetchall()
        return [json.loads(record) for rid, record in rows if rid not in seen]

    def stats(self, since: float | None = None, until: float | None = None, top: int = 10) -> dict[str, Any]:
        span = ""
        args: list[Any] = []
        if since is not None:
            span += " AND time >= %s"
            args.append(since)
        if until is not None:
            span += " AND time < %s"
            args.append(until)
        with self._errors():
            db = self._conn()

            def grouped(key: str) -> list[dict[str, Any]]:
                rows = db.execute(f"SELECT {key} AS k, count(*) AS n FROM audit WHERE true{span} GROUP BY k "
                                  f"ORDER BY n DESC, k LIMIT %s", [*args, top]).fetchall()
                return [{"key": str(k) if key == "client_ip" else k, "count": n} for k, n in rows]

            total = db.execute(f"SELECT count(*) FROM audit WHERE true{span}", args).fetchone()[0]  # type: ignore[index]
            days = ""
            day_args: list[Any] = []
            if since is not None:
                days += " AND day >= %s"
                day_args.append(day_of(since))
            if until is not None:
                days += " AND day <= %s"
                day_args.append(day_of(until))
            hits = db.execute(f"SELECT exclusion, sum(hits)::bigint AS n FROM audit_exclusion_hits WHERE true{days} "
                              f"GROUP BY exclusion ORDER BY n DESC, exclusion", day_args).fetchall()
            return {
                "total": total,
                "rules": grouped("unnest(rules)"),
                "ips": grouped("client_ip"),
                "paths": grouped("path"),
                "stages": grouped("stage"),
                "domains": grouped("domain"),
                "exclusions": [{"key": key, "count": n} for key, n in hits],
            }

    def _partitions(self) -> list[tuple[str, int]]:
        """(name, first second) of each day partition, oldest first."""
        rows = self._conn().execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit'::regclass AND c.relname ~ '^audit_[0-9]{8}$' ORDER BY c.relname").fetchall()
        return [(name, calendar.timegm(time.strptime(name[6:], "%Y%m%d"))) for (name,) in rows]

    def prune(self, older_than: float) -> int:
        """Drop the day partitions that end before ``older_than`` (their disk is freed at once) and
        delete older rows of the day it falls in; return how many records went."""
        removed = 0
        with self._errors():
            db = self._conn()
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                for name, start in self._partitions():
                    if start + DAY <= older_than:
                        removed += db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # type: ignore[index]
                        db.execute(f"DROP TABLE {name}")
                        self._days.discard(start)
                removed += db.execute("DELETE FROM audit WHERE time < %s", (older_than,)).rowcount
                db.execute("DELETE FROM audit_exclusion_hits WHERE day < %s", (day_of(older_than),))
        return removed

    def size(self) -> int:
        """Bytes of every audit partition with its indexes and TOAST."""
        with self._errors():
            row = self._conn().execute(
                "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = 'audit'::regclass").fetchone()
        return int(row[0])  # type: ignore[index]

    def prune_to_size(self, max_bytes: int) -> int:
        """Drop the oldest day partitions (and older rows of the default one) until the store fits
        in ``max_bytes``. Today's partition is never dropped: when it alone is too big, its oldest
        tenth is deleted and the space is reused by later records (deleted rows free no disk
        until VACUUM), and the next round, a minute on, goes on."""
        removed = 0
        today = int(time.time() // DAY) * DAY
        while self.size() > max_bytes:
            with self._errors():
                db = self._conn()
                older = [start for _, start in self._partitions() if start < today]
                stray = db.execute("SELECT min(time) FROM audit_default WHERE time < %s", (today,)).fetchone()[0]  # type: ignore[index]
                if older or stray is not None:
                    first = min([*older, *([int(stray // DAY) * DAY] if stray is not None else [])])
                    removed += self.prune(first + DAY)
                    continue
                total = db.execute("SELECT count(*) FROM audit").fetchone()[0]  # type: ignore[index]
                if total:
                    cut = db.execute("SELECT time FROM audit ORDER BY time LIMIT 1 OFFSET %s",
                                     (max(1, total // 10) - 1,)).fetchone()[0]  # type: ignore[index]
                    removed += self.prune(cut + 1e-6)
                break
        return removed

    def iterate(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT record FROM audit"
        args: list[Any] = []
        if since is not None:
            sql += " WHERE time >= %s"
            args.append(since)
        with self._errors():
            db = self._conn()
            with db.transaction(), db.cursor(name="edgeward_export") as cur:  # server side: streamed
                cur.execute(sql + " ORDER BY time, id", args)
                for (record,) in cur:
                    yield json.loads(record)

