"""mss queue hold / release DOMAIN (issue 16 part 2): the workers skip a held domain's rows,
which do not expire while held, and deliver them once released; between two real
operators (tests/outbound_pair.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, select

from mss import db
from proxy.outbound import claims
from tests.node import BACKENDS, Node, read_all, wait_for
from tests.outbound_pair import (
    A_DOMAIN,
    B_DOMAIN,
    RELAYED_DOMAIN,
    Pair,
    make_pair,
    message,
    submit,
    with_tag,
)

MAX_AGE = 4.0  # delivery.max_age of the pair: a held row outlives it
BACKENDS = BACKENDS  # the claims' SQL on both; the pair on SQLite


def _row(i: int, domain: str, created: float) -> dict[str, object]:
    return {"id": f"{i:032x}", "created_at": created, "mail_from": "a@x.test",
            "rcpt": f"r{i}@{domain}", "domain": domain, "message_id": None, "size": 1,
            "status": "queued", "attempts": 0, "next_attempt_at": created,
            "key_blob": b"k", "body_blob": b"b"}


def test_claims_skip_a_held_domain_and_credit_the_time_held(db_engine: Engine) -> None:
    """The claim, the 'anything due' probe and the next wake-up ignore a held domain's
    rows; the release makes them due and credits each the time it was held (from the hold,
    or from its queuing when later), on SQLite and PostgreSQL."""
    t0 = 1_000_000.0
    with db_engine.begin() as conn:
        conn.execute(insert(db.outbound_queue), [_row(1, "held.test", t0 - 50),
                                                 _row(2, "free.test", t0 - 50)])
        assert claims.hold(conn, "held.test", "cli:test", "why", t0) == 1
        conn.execute(insert(db.outbound_queue), [_row(3, "held.test", t0 + 30)])
    with db_engine.begin() as conn:
        got = claims.claim(conn, "w1", t0 + 100, 60.0, 10)
        assert [c.domain for c in got] == ["free.test"]
        assert not claims.due_exists(conn, t0 + 120)  # the free row is leased
        # the next wake-up: the free row's lease end, not the held rows (due long ago)
        assert claims.next_due(conn) == t0 + 160
        [hold] = claims.holds(conn)
        assert (hold.domain, hold.rows, hold.reason) == ("held.test", 2, "why")
        assert {r["id"][-1:]: r["held"] for r in claims.listing(conn, None, 10)} == \
            {"1": True, "2": False, "3": True}
        assert len(claims.listing(conn, "held", 10)) == 2
        assert claims.release_hold(conn, hold, t0 + 130) == 2
    with db_engine.begin() as conn:
        assert claims.holds(conn) == []
        got = claims.claim(conn, "w2", t0 + 130, 60.0, 10)
        assert sorted(c.id[-1:] for c in got) == ["1", "3"]
        aged = {c.id[-1:]: c.aged_from for c in got}
        assert aged == {"1": t0 - 50 + 130, "3": t0 + 30 + 100}
        held_for = dict(conn.execute(select(db.outbound_queue.c.id,
                                            db.outbound_queue.c.held_for)).all())
        assert held_for[f"{2:032x}"] == 0.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = make_pair(tmp_path_factory.mktemp("hold"), max_attempts=4, max_age=MAX_AGE)
    for node in p.nodes():
        node.start()
    yield p
    p.close()


def rows_of(node: Node, tag: str) -> list[dict[str, object]]:
    return [r for r in node.cli_json("queue", "list")
            if f"<{tag}@test.example>" == r["message_id"]]


def events_of(node: Node, tag: str) -> list[str]:
    return [str(r["event"]) for r in node.audit("--event", "queue.")
            if tag in str(r.get("message_id", ""))]


def test_a_held_domain_waits_outliving_max_age_then_is_delivered(pair: Pair) -> None:
    a, b = pair.nodes()
    out = a.cli("queue", "hold", B_DOMAIN.upper(), "--reason", "incident 42").stdout
    assert out.strip() == (f"domain {B_DOMAIN} held: 0 queued row(s) wait for "
                           f"'mss queue release {B_DOMAIN}'")
    held_at = time.time()
    tag, other = f"held{time.time_ns()}", f"free{time.time_ns()}"
    rcpt = f"bob@{B_DOMAIN}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
    # another destination goes on meanwhile (the worker runs; only the held domain waits)
    house = f"dr.house@{RELAYED_DOMAIN}"
    submit(a, pair.pki, [house], message(f"alice@{A_DOMAIN}", house, other))
    assert wait_for(lambda: with_tag(read_all(b, house), other), pair.schedule.first_try())
    [row] = rows_of(a, tag)
    assert row["status"] == "queued" and row["held"] is True and row["attempts"] == 0
    table = a.cli("queue", "list").stdout
    assert any(line.split()[:2] == [str(row["id"])[:16], "held"] for line in table.splitlines())
    assert [r["id"] for r in a.cli_json("queue", "list", "--status", "held")] == [row["id"]]
    [hold] = a.cli_json("queue", "holds")
    assert hold["domain"] == B_DOMAIN and hold["rows"] == 1 and hold["reason"] == "incident 42"
    assert str(hold["held_by"]).startswith("cli:")
    assert "held since" in a.cli("queue", "show", str(row["id"])).stdout
    # past delivery.max_age while held: neither attempted nor expired (a worker round is
    # 0.2 s: twenty of them at least)
    while time.time() - held_at < MAX_AGE + 1.0:
        time.sleep(0.2)
    assert events_of(a, tag) == []
    assert rows_of(a, tag)[0]["attempts"] == 0
    out = a.cli("queue", "release", B_DOMAIN).stdout
    assert out.strip() == f"domain {B_DOMAIN} released: 1 row(s) due now"
    assert wait_for(lambda: with_tag(read_all(b, rcpt), tag), pair.schedule.first_try())
    assert events_of(a, tag) == ["queue.delivered"]
    [done] = rows_of(a, tag)
    assert done["status"] == "delivered" and float(done["held_for"]) > MAX_AGE  # type: ignore[arg-type]
    assert a.cli_json("queue", "holds") == []
    [held_record] = [r for r in a.audit("--event", "admin.queue.hold")
                     if r["detail"]["domain"] == B_DOMAIN]  # type: ignore[index]
    assert held_record["reason"] == "incident 42"
    released = [r for r in a.audit("--event", "admin.queue.release")
                if r["detail"]["domain"] == B_DOMAIN]  # type: ignore[index]
    assert released[-1]["detail"]["rows"] == 1  # type: ignore[index]
    assert float(released[-1]["detail"]["held_seconds"]) > MAX_AGE  # type: ignore[index]


def test_bad_input_is_one_line_and_changes_nothing(pair: Pair) -> None:
    a, _ = pair.nodes()
    a.cli("queue", "hold", "example.invalid")
    try:
        audited = len(a.audit("--event", "admin.queue."))
        for args, text in ((("hold", "example.invalid"), "domain example.invalid is already held"),
                           (("release", B_DOMAIN), f"domain {B_DOMAIN} is not held"),
                           (("hold", "not a domain"), "invalid domain"),
                           (("release", "bad..name"), "invalid domain"),
                           (("hold", B_DOMAIN, "--reason", "a\nb"), "--reason")):
            proc = a.cli("queue", *args, check=False)
            assert proc.returncode == 2, proc
            assert len(proc.stderr.strip().splitlines()) == 1 and text in proc.stderr, proc
        assert [h["domain"] for h in a.cli_json("queue", "holds")] == ["example.invalid"]
        assert len(a.audit("--event", "admin.queue.")) == audited
    finally:
        a.cli("queue", "release", "example.invalid")
