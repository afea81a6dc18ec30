"""The audit store's two backends (appliance/observe/auditsqlite.py, auditpg.py) through one
interface: each test runs against SQLite and against a real PostgreSQL server."""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.observe.auditstore import AuditStore, AuditStoreError, AuditWriter, Query, open_store

_databases = itertools.count()


def rec(i: int, t: float | None = None, **over: Any) -> dict[str, Any]:
    record = {"id": f"r{i:05d}", "time": float(i) if t is None else t, "domain": "d", "route": "/",
              "client": {"ip": "192.0.2.1", "port": 1}, "country": None, "method": "GET", "uri": "/", "status": 403,
              "stage": "waf", "reason": "waf.anomaly", "mode": "block", "consumer": None,
              "waf": {"matches": [{"rule_id": 942100, "tags": ["attack-sqli", "OWASP_CRS"]}]}}
    record.update(over)
    return record


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite"
    pg = request.getfixturevalue("postgres")
    return str(pg.create_database(f"t{next(_databases)}"))


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[AuditStore]:
    opened = open_store(store_url, tmp_path)
    yield opened
    opened.close()


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def test_every_filter_finds_its_records_and_only_them(store: AuditStore) -> None:
    now = time.time()
    store.insert([
        rec(1, now - 50, domain="a.test", route="/api", client={"ip": "10.1.2.3", "port": 5}, country="DE",
            consumer="alice", uri="/api/orders?id=1", status=403),
        rec(2, now - 40, domain="b.test", client={"ip": "2001:db8::7", "port": 5}, uri="/login",
            waf={"matches": [{"rule_id": 941100, "tags": ["attack-xss"]}]}),
        rec(3, now - 30, stage="cc", reason="cc.limit", status=429, waf=None, uri="/search?q=x"),
    ])
    assert ids(store.search(Query())) == ["r00003", "r00002", "r00001"]  # newest first
    assert ids(store.search(Query(domain="a.test"))) == ["r00001"]
    assert ids(store.search(Query(route="/api"))) == ["r00001"]
    assert ids(store.search(Query(rule=941100))) == ["r00002"]
    assert ids(store.search(Query(tag="attack-sqli"))) == ["r00001"]
    assert ids(store.search(Query(tag="attack"))) == []  # a whole tag, not a part of one
    assert ids(store.search(Query(ip="10.0.0.0/8"))) == ["r00001"]
    assert ids(store.search(Query(ip="2001:db8::/32"))) == ["r00002"]
    assert ids(store.search(Query(ip="192.0.2.1"))) == ["r00003"]
    assert ids(store.search(Query(country="DE"))) == ["r00001"]
    assert ids(store.search(Query(consumer="alice"))) == ["r00001"]
    assert ids(store.search(Query(stage="cc", status=429))) == ["r00003"]
    assert ids(store.search(Query(since=now - 45, until=now - 35))) == ["r00002"]
    assert ids(store.search(Query(text="orders"))) == ["r00001"]
    assert ids(store.search(Query(text="q=x"))) == ["r00003"]  # short text: still exact
    assert ids(store.search(Query(text="%"))) == [] and ids(store.search(Query(text="_"))) == []  # no wildcards
    page = store.search(Query(limit=2))
    assert ids(store.search(Query(before=(page[-1]["time"], page[-1]["id"])))) == ["r00001"]
    assert store.get("r00002")["uri"] == "/login" and store.get("nope") is None  # type: ignore[index]
    assert ids(store.after(now - 35, {"r00002"})) == ["r00003"]
    assert ids(list(store.iterate())) == ["r00001", "r00002", "r00003"]


def test_inserting_a_record_twice_keeps_one(store: AuditStore) -> None:
    now = time.time()
    store.insert([rec(1, now), rec(2, now)])
    store.insert([rec(1, now), rec(3, now)])  # a spill file replayed after a partial write
    assert sorted(ids(store.search(Query()))) == ["r00001", "r00002", "r00003"]


def test_stats_count_rules_ips_paths_stages_domains_and_exclusion_hits(store: AuditStore) -> None:
    now = time.time()
    store.insert([rec(i, now - i, uri=f"/p{i % 2}?x={i}", client={"ip": f"192.0.2.{i % 3}", "port": 1})
                  for i in range(1, 13)])
    store.add_hits({("ex-a", time.strftime("%Y-%m-%d", time.gmtime(now))): 3})
    store.add_hits({("ex-a", time.strftime("%Y-%m-%d", time.gmtime(now))): 2, ("ex-b", "2020-01-01"): 1})
    every = store.stats()
    assert every["total"] == 12 and every["rules"] == [{"key": 942100, "count": 12}]
    assert every["paths"] == [{"key": "/p0", "count": 6}, {"key": "/p1", "count": 6}]
    assert sorted(e["count"] for e in every["ips"]) == [4, 4, 4] and every["stages"] == [{"key": "waf", "count": 12}]
    assert {e["key"]: e["count"] for e in every["exclusions"]} == {"ex-a": 5, "ex-b": 1}
    recent = store.stats(since=now - 3.5)
    assert recent["total"] == 3 and recent["rules"] == [{"key": 942100, "count": 3}]
    assert {e["key"]: e["count"] for e in recent["exclusions"]} == {"ex-a": 5}


def test_pruning_by_age_removes_old_records_and_their_index_entries(store: AuditStore) -> None:
    now = time.time()
    store.insert([rec(i, now - 3 * 86400 + i) for i in range(50)] + [rec(100 + i, now - 10 + i) for i in range(5)])
    assert store.prune(now - 86400) == 50
    assert len(store.search(Query(limit=1000))) == 5 and len(store.search(Query(rule=942100, limit=1000))) == 5
    assert store.search(Query(text="/", limit=1000)) and store.get("r00001") is None


def test_sqlite_pruning_gives_the_space_back(tmp_path: Path) -> None:
    from appliance.observe.auditsqlite import SqliteStore

    store = SqliteStore(tmp_path / "audit.db")
    store.insert([rec(i, body="x" * 4000) for i in range(2000)])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (tmp_path / "audit.db").stat().st_size
    assert store.prune(1500.0) == 1500
    assert ids(store.search(Query(limit=1)))[0] == "r01999" and len(store.search(Query(limit=5000))) == 500
    assert (tmp_path / "audit.db").stat().st_size < before / 2


def test_sqlite_retention_by_size_deletes_the_oldest_until_the_database_fits(tmp_path: Path) -> None:
    from appliance.observe.auditsqlite import SqliteStore

    store = SqliteStore(tmp_path / "audit.db")
    store.insert([rec(i, body="x" * 4000) for i in range(2000)])
    assert store.size() > 8_000_000
    removed = store.prune_to_size(3_000_000)
    assert removed > 0 and store.size() <= 3_000_000
    assert ids(store.search(Query(limit=1))) == ["r01999"] and len(store.search(Query(limit=5000))) == 2000 - removed


def test_postgres_retention_drops_whole_day_partitions(postgres: Any) -> None:
    from appliance.observe.auditpg import PostgresStore

    store = PostgresStore(postgres.create_database("partitions"))
    now = time.time()
    old = int(now // 86400 - 5) * 86400
    postgres.psql(f"SET ROLE edgeward; CREATE TABLE audit_{time.strftime('%Y%m%d', time.gmtime(old))} PARTITION OF audit "
                  f"FOR VALUES FROM ({old}) TO ({old + 86400})", "partitions")
    noise = [bytes.fromhex(f"{(i * 2654435761) % 2**32:08x}").hex() * 500 for i in range(300)]  # TOAST cannot shrink it
    store.insert([rec(i, old + i, body=noise[i]) for i in range(300)])
    store.insert([rec(1000 + i, now + i % 10, body=noise[i]) for i in range(300)])
    today = postgres.psql("SELECT count(*) FROM audit_" + time.strftime("%Y%m%d", time.gmtime(now)), "partitions")
    assert int(today) == 300
    size = store.size()
    assert store.prune_to_size(int(size * 0.7)) == 300  # the old day goes whole; today's partition stays
    assert len(store.search(Query(limit=1000))) == 300 and store.size() <= size * 0.7
    assert postgres.psql(f"SELECT to_regclass('audit_{time.strftime('%Y%m%d', time.gmtime(old))}')", "partitions").strip() == ""
    store.insert([rec(5000, 946684900.0)])  # a day without a partition: the default one keeps it
    assert store.get("r05000") is not None and store.prune(now - 86400) == 1 and store.get("r05000") is None
    store.close()


def test_the_writer_spills_when_its_queue_is_full_and_loses_nothing(store_url: str, tmp_path: Path) -> None:
    writer = AuditWriter(lambda: open_store(store_url, tmp_path), tmp_path / "audit", maxsize=10)
    now = time.time()
    for i in range(500):  # before the thread runs: 10 fit in the queue, the rest overflow
        writer.put(rec(i, now))
    for _ in range(7):
        writer.hit("ex-1")
    assert not writer.spill.exists()  # the caller (the event loop) never writes the file itself
    (tmp_path / "audit").mkdir(exist_ok=True)
    orphan = tmp_path / "audit" / "spill-999999999.jsonl"  # left by a worker that died (no such pid)
    orphan.write_text("".join(json.dumps(rec(i, now)) + "\n" for i in range(500, 520)))
    writer.start()
    reader = open_store(store_url, tmp_path, readonly=True)
    deadline = time.monotonic() + 15
    while len(reader.search(Query(limit=1000))) < 520 and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.close()
    found = ids(reader.search(Query(limit=1000)))
    assert len(found) == len(set(found)) == 520  # its own 500, and the dead worker's 20
    assert len(reader.search(Query(rule=942100, limit=1000))) == 520
    assert reader.stats()["exclusions"] == [{"key": "ex-1", "count": 7}]
    assert not writer.spill.exists() and not orphan.exists()
    reader.close()


def test_a_store_that_is_down_at_start_is_named_without_its_password(postgres: Any, tmp_path: Path) -> None:
    from ..harness import free_port
    from ..servers.postgres import PASSWORD

    url = f"postgresql://edgeward:{PASSWORD}@127.0.0.1:{free_port()}/edgeward"
    with pytest.raises(AuditStoreError) as caught:
        open_store(url, tmp_path)
    assert "127.0.0.1" in str(caught.value) and PASSWORD not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(AuditStoreError) as wrong:
        open_store(postgres.url(password="wrong-password-123"), tmp_path)
    assert "password authentication failed" in str(wrong.value) and "wrong-password-123" not in str(wrong.value)


def test_the_writer_keeps_records_while_postgres_is_down_and_writes_them_when_it_is_back(
        postgres: Any, tmp_path: Path) -> None:
    url = postgres.create_database("outage")
    writer = AuditWriter(lambda: open_store(url, tmp_path), tmp_path / "audit")
    writer.start()
    now = time.time()
    writer.put(rec(1, now))
    reader = open_store(url, tmp_path, readonly=True)
    deadline = time.monotonic() + 10
    while not reader.search(Query()) and time.monotonic() < deadline:
        time.sleep(0.1)
    reader.close()
    postgres.stop()
    try:
        started = time.monotonic()
        for i in range(2, 202):
            writer.put(rec(i, now))
        assert time.monotonic() - started < 0.5  # put never waits on the database
        deadline = time.monotonic() + 10
        while not writer.spill.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writer.spill.exists() and writer.failed >= 1
    finally:
        postgres.start()
    reader = open_store(url, tmp_path, readonly=True)
    deadline = time.monotonic() + 20
    while len(reader.search(Query(limit=1000))) < 201 and time.monotonic() < deadline:
        time.sleep(0.2)
    writer.close()
    found = ids(reader.search(Query(limit=1000)))
    assert len(found) == len(set(found)) == 201
    reader.close()


def test_a_sqlite_database_of_the_first_version_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    from appliance.observe.auditsqlite import SqliteStore

    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE audit (id TEXT PRIMARY KEY, time REAL NOT NULL, domain TEXT NOT NULL, route TEXT NOT NULL,
          client_ip TEXT NOT NULL, method TEXT NOT NULL, uri TEXT NOT NULL, status INTEGER NOT NULL,
          stage TEXT NOT NULL, reason TEXT NOT NULL, consumer TEXT, mode TEXT NOT NULL, record TEXT NOT NULL);
        CREATE TABLE audit_rule (rule_id INTEGER NOT NULL, audit_id TEXT NOT NULL, PRIMARY KEY (rule_id, audit_id)) WITHOUT ROWID;
    """)
    old = rec(1, uri="/old/path?x=1")
    db.execute("INSERT INTO audit VALUES ('r00001', 1.0, 'd', '/', '192.0.2.1', 'GET', '/old/path?x=1', 403, 'waf', "
               "'waf.anomaly', NULL, 'block', ?)", (json.dumps(old),))
    db.execute("INSERT INTO audit_rule VALUES (942100, 'r00001')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert ids(store.search(Query(tag="attack-sqli"))) == ["r00001"]
    assert store.stats()["paths"] == [{"key": "/old/path", "count": 1}]
    store.insert([rec(2)])
    assert ids(store.search(Query(rule=942100))) == ["r00002", "r00001"]
