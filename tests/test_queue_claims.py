"""Leased queue claims on a real database (SQLite file or PostgreSQL) shared by several
processes: no row is ever held by two workers, and an expired lease (a crashed worker) is
taken over."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from sqlalchemy import Engine, insert, select

from mss import db
from proxy.outbound import claims
from tests.databases import schema_url
from tests.node import BACKENDS

BACKENDS = BACKENDS


def _rows(count: int, now: float) -> list[dict[str, object]]:
    return [{"id": f"{i:032x}", "created_at": now, "mail_from": "a@x.test",
             "rcpt": f"r{i}@y.test", "domain": "y.test", "message_id": None, "size": 1,
             "status": "queued", "attempts": 0, "next_attempt_at": now, "key_blob": b"k",
             "body_blob": b"b"} for i in range(count)]


def _claimer(url: str, owner: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = db.make_engine(url)
    got: list[str] = []
    while True:
        with engine.begin() as conn:
            batch = claims.claim(conn, owner, time.time(), 60.0, 7)
        if not batch:
            break
        got += [c.id for c in batch]
    engine.dispose()
    out.put((owner, got))


def test_concurrent_claimers_never_share_a_row(tmp_path: Path, backend: str) -> None:
    url = schema_url(backend, tmp_path, "q")
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(db.outbound_queue), _rows(300, time.time() - 1))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    ids = [i for got in results.values() for i in got]
    assert len(ids) == len(set(ids)) == 300  # every row claimed once, by one worker
    with engine.connect() as conn:
        owners = dict(conn.execute(select(db.outbound_queue.c.id,
                                          db.outbound_queue.c.lease_owner)).all())
    engine.dispose()
    assert all(owners[i] == owner for owner, got in results.items() for i in got)


def test_expired_lease_is_reclaimed_and_release_gives_rows_back(db_engine: Engine) -> None:
    engine = db_engine
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(db.outbound_queue), _rows(5, now - 1))
        first = claims.claim(conn, "crashed", now, 30.0, 10)
        assert len(first) == 5
        assert claims.claim(conn, "other", now + 29, 30.0, 10) == []  # lease still held
        taken = claims.claim(conn, "other", now + 31, 30.0, 10)  # the crashed one's expired
        assert {c.id for c in taken} == {c.id for c in first}
        assert claims.release(conn, "other") == 5
        assert len(claims.claim(conn, "third", now + 31, 30.0, 10)) == 5
