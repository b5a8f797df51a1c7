"""Several nodes on one PostgreSQL database, correct by construction (issue 14, point 2).

Real parts: two or three ``mss serve`` processes on one database of the test process's
PostgreSQL server (tests/postgres.py, :func:`tests.node.make_cluster`), real smtplib and
imaplib clients on every node, ``mss audit verify`` at the end. Unit-level races use two
engines (two connection pools, as two nodes have) on one database.
"""

from __future__ import annotations

import imaplib
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, insert, select

from audit.events import Event
from audit.journal import AuditRecord, append, query
from audit.verify import verify_chain
from mss import db
from mss.config import load_config
from mss.db import make_engine
from mss.mailstore import mailboxes
from mss.mailstore.folders import claim_recent, next_uidvalidity
from mss.mailstore.messages import new_id, store_flags
from mss.mailstore.state import bump
from proxy.outbound import claims
from tests.node import BACKENDS, PASSWORD, Node, make_cluster, make_node, wait_for

ALICE, BOB = "alice@demo.mssante.fr", "bob@demo.mssante.fr"
BACKENDS = BACKENDS  # the tests taking ``backend`` run on both (the others: PostgreSQL)


def _message(tag: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, f"cluster {tag}"
    msg["Message-ID"] = f"<{tag}@cluster.test>"
    msg.set_content(f"body of {tag}\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def _submit_burst(node: Node, tags: list[str], accepted: list[str],
                  errors: list[BaseException]) -> None:
    """Submit each tag's message on one session; *accepted* gets the tags answered 250."""
    try:
        with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30) as client:
            client.starttls(context=node.client_context())
            client.login(ALICE, PASSWORD)
            for tag in tags:
                client.mail(ALICE)
                client.rcpt(BOB)
                code, _ = client.data(_message(tag))
                if code == 250:
                    accepted.append(tag)
    except (OSError, smtplib.SMTPException) as exc:  # a killed node: the session ends
        errors.append(exc)


def _in_threads(jobs: list[Callable[[], None]], timeout: float = 120.0) -> None:
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a client thread did not finish"


def _start_all(nodes: list[Node]) -> None:
    """Start the nodes at once (each start is seconds of imports and key loading)."""
    errors: list[BaseException] = []

    def start(node: Node) -> None:
        try:
            node.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    _in_threads([lambda node=node: start(node) for node in nodes])
    assert not errors, errors


def _engine(node: Node) -> Engine:
    return make_engine(load_config(node.config).database_url)


def _stored_tags(node: Node) -> list[str]:
    """The Message-ID tag of every message in bob's INBOX, read and decrypted from the
    store (one entry per stored copy: duplicates show)."""
    from tests.node import read_all

    tags = []
    for data in read_all(node, BOB):
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"message-id: <"):
                tags.append(line.split(b"<", 1)[1].split(b"@", 1)[0].decode())
    return tags


def _verify(node: Node) -> str:
    proc = node.cli("audit", "verify", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = make_cluster(tmp_path, 2)
    try:
        _start_all(nodes)
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None:
                node.process.kill()
                node.process.wait()


# --------------------------------------------------------------------------- the audit chain

def test_concurrent_submissions_on_two_nodes_leave_one_verifiable_chain(
        cluster: list[Node]) -> None:
    """100 submissions over both nodes at once (4 sessions per node): every 250 is stored
    once and ``mss audit verify`` passes (on main: "record N was inserted", two records
    chained to one predecessor, the head read by both nodes without a lock)."""
    accepted: list[str] = []
    errors: list[BaseException] = []
    jobs = []
    for n, node in enumerate(cluster):
        for s in range(4):
            tags = [f"n{n}s{s}m{i}" for i in range(13 if s < 2 else 12)]
            jobs.append(lambda node=node, tags=tags: _submit_burst(node, tags, accepted,
                                                                   errors))
    _in_threads(jobs)
    assert not errors
    assert len(accepted) == 100
    assert sorted(_stored_tags(cluster[0])) == sorted(accepted)
    assert "chain intact" in _verify(cluster[1])


# --------------------------------------------------------------------------- unit-level races
# Two engines are two nodes' connection pools. A transaction is held open on one while the
# other writes: the interleaving that loses a write without a lock is forced, not hoped for.

@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    node = make_node(tmp_path, backend="postgresql")
    pair = (_engine(node), _engine(node))
    yield pair
    for engine in pair:
        engine.dispose()


def _held_while(engine: Engine, first: Callable[[Connection], object],
                second: Callable[[], object]) -> None:
    """Run *first* in an open transaction of *engine*, start *second* in a thread, let it
    run into whatever lock it meets (0.5 s), then commit *first* and wait for *second*."""
    errors: list[BaseException] = []

    def run_second() -> None:
        try:
            second()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with engine.begin() as conn:
        first(conn)
        thread = threading.Thread(target=run_second)
        thread.start()
        time.sleep(0.5)
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


def _record(tag: str) -> AuditRecord:
    return AuditRecord(Event.SERVER_START, actor="mss", detail={"tag": tag})


def test_two_engines_appending_at_once_leave_one_chain(
        engines: tuple[Engine, Engine]) -> None:
    """Node B appends while node A's append is not committed: B waits for A's commit and
    chains to A's record (on main B chained to A's predecessor: "record N was inserted")."""
    a, b = engines

    def append_b() -> None:
        with b.begin() as conn:
            append(conn, [_record("b")])

    _held_while(a, lambda conn: append(conn, [_record("a")]), append_b)
    with a.connect() as conn:
        result = verify_chain(conn)
        tags = [r["detail"].get("tag") for r in query(conn)][-2:]
    assert result.ok, result.message
    assert tags == ["a", "b"]


def _bob_inbox(conn: Connection) -> tuple[int, int]:
    bob = mailboxes.require_mailbox(conn, BOB)
    inbox = conn.execute(select(db.folders.c.id).where(
        (db.folders.c.mailbox_id == bob.id) & (db.folders.c.name == "INBOX"))).scalar_one()
    return bob.id, int(inbox)


def _store_row(conn: Connection, uid_source: tuple[int, int]) -> int:
    """A message row in bob's INBOX (sealed bytes are not read here); its UID."""
    mailbox_id, folder_id = uid_source
    state = bump(conn, folder_id, 1)
    conn.execute(insert(db.messages).values(
        id=new_id(), mailbox_id=mailbox_id, folder_id=folder_id, uid=state.first_uid,
        size=1, internal_date=time.time(), flags="", modseq=state.modseq, key_blob=b"k",
        body_blob=b"b"))
    return state.first_uid


def test_two_engines_storing_flags_on_one_message_keep_both(
        engines: tuple[Engine, Engine]) -> None:
    """+FLAGS \\Seen on node A (not committed yet) and +FLAGS \\Flagged on node B: both
    stay (on main B had read the flags before A's commit and wrote \\Flagged alone)."""
    a, b = engines
    with a.begin() as conn:
        inbox = _bob_inbox(conn)
        uid = _store_row(conn, inbox)

    def store(conn: Connection, flag: str) -> None:
        store_flags(conn, inbox[1], [uid], "+", (flag,), lambda deleted: [])

    def store_b() -> None:
        with b.begin() as conn:
            store(conn, "\\Flagged")

    _held_while(a, lambda conn: store(conn, "\\Seen"), store_b)
    with a.connect() as conn:
        flags, modseq = conn.execute(select(db.messages.c.flags, db.messages.c.modseq).where(
            (db.messages.c.folder_id == inbox[1]) & (db.messages.c.uid == uid))).one()
        highest = conn.execute(select(db.folders.c.highestmodseq)
                               .where(db.folders.c.id == inbox[1])).scalar_one()
    assert sorted(flags.split()) == ["\\Flagged", "\\Seen"]
    assert modseq == highest  # the second change has the newest modseq (RFC 7162 §3.1.1)


def test_two_engines_claiming_recent_claim_each_uid_once(
        engines: tuple[Engine, Engine]) -> None:
    """RFC 3501 §2.3.2: a message is \\Recent in one session only, across nodes too."""
    a, b = engines
    with a.begin() as conn:
        inbox = _bob_inbox(conn)
        top = max(_store_row(conn, inbox) for _ in range(3))
    claims: list[int] = []

    def claim_b() -> None:
        with b.begin() as conn:
            claims.append(claim_recent(conn, inbox[1], top))

    _held_while(a, lambda conn: claims.append(claim_recent(conn, inbox[1], top)), claim_b)
    assert claims[1] == top  # the second claimer finds everything claimed by the first
    assert claims[0] < top


def test_two_engines_allocating_uidvalidity_get_distinct_values(
        engines: tuple[Engine, Engine]) -> None:
    a, b = engines
    with a.connect() as conn:
        mailbox_id = _bob_inbox(conn)[0]
    values: list[int] = []

    def take_b() -> None:
        with b.begin() as conn:
            values.append(next_uidvalidity(conn, mailbox_id))

    _held_while(a, lambda conn: values.append(next_uidvalidity(conn, mailbox_id)), take_b)
    assert values[1] > values[0]


def test_two_engines_allocating_uids_concurrently_get_distinct_gapless_uids(
        engines: tuple[Engine, Engine]) -> None:
    """Two pools, two threads, 60 one-message transactions each on one INBOX: 120 distinct
    UIDs with no gap (RFC 3501 §2.3.1.1 strictly ascending; bump's UPDATE ... RETURNING)."""
    with engines[0].connect() as conn:
        inbox = _bob_inbox(conn)
        start = conn.execute(select(db.folders.c.uidnext)
                             .where(db.folders.c.id == inbox[1])).scalar_one()
    got: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def allocate(engine: Engine, out: list[int]) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            for _ in range(60):
                with engine.begin() as conn:
                    out.append(_store_row(conn, inbox))
        return run

    _in_threads([allocate(e, out) for e, out in zip(engines, got, strict=True)])
    everything = sorted(got[0] + got[1])
    assert everything == list(range(start, start + 120))
    assert got[0] == sorted(got[0]) and got[1] == sorted(got[1])


# --------------------------------------------------------------------------- queue claims

def _queue_rows(count: int, now: float) -> list[dict[str, object]]:
    return [{"id": f"{i:032x}", "created_at": now, "mail_from": ALICE,
             "rcpt": f"r{i}@operator-a.mssante.fr", "domain": "operator-a.mssante.fr",
             "message_id": None, "size": 1, "status": "queued", "attempts": 0,
             "next_attempt_at": now, "key_blob": b"k", "body_blob": b"b"}
            for i in range(count)]


def test_a_claim_skips_the_rows_another_node_is_claiming(
        engines: tuple[Engine, Engine]) -> None:
    """Node B claims while node A's claim is not committed: B gets other rows at once
    (FOR UPDATE SKIP LOCKED), not A's after waiting (on main: B waited for A's commit, then
    found its rows leased and got nothing)."""
    a, b = engines
    now = time.time()
    with a.begin() as conn:
        conn.execute(insert(db.outbound_queue), _queue_rows(20, now - 1))
    got: dict[str, list[str]] = {}
    waited: list[float] = []

    def claim_b() -> None:
        started = time.monotonic()
        with b.begin() as conn:
            got["b"] = [c.id for c in claims.claim(conn, "node-b", now, 60.0, 10)]
        waited.append(time.monotonic() - started)

    def claim_a(conn: Connection) -> None:
        got["a"] = [c.id for c in claims.claim(conn, "node-a", now, 60.0, 10)]

    _held_while(a, claim_a, claim_b)
    assert len(got["a"]) == len(got["b"]) == 10
    assert not set(got["a"]) & set(got["b"])
    assert waited[0] < 0.5  # B did not wait for A's commit (it was held 0.5 s)


def test_workers_of_two_nodes_deliver_each_row_once(engines: tuple[Engine, Engine]) -> None:
    """Four workers (two per engine) claim and record deliveries until the queue is empty:
    each of 200 rows delivered once, one queue.delivered record each, the chain intact."""
    now = time.time()
    with engines[0].begin() as conn:
        conn.execute(insert(db.outbound_queue), _queue_rows(200, now - 1))
    done: list[list[str]] = [[] for _ in range(4)]

    def worker(engine: Engine, owner: str, out: list[str]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(200):  # bounded: each round claims at least one row or stops
                with engine.begin() as conn:
                    batch = claims.claim(conn, owner, time.time(), 60.0, 7)
                if not batch:
                    return
                for c in batch:
                    with engine.begin() as conn:
                        claims.delivered(conn, c, "mx.operator-a.fr", "250 ok", time.time())
                    out.append(c.id)
        return run

    _in_threads([worker(engines[i % 2], f"w{i}", done[i]) for i in range(4)])
    ids = [i for out in done for i in out]
    assert len(ids) == len(set(ids)) == 200
    with engines[1].connect() as conn:
        delivered = [r["detail"]["queue_id"] for r in query(conn, event="queue.delivered")]
        assert verify_chain(conn).ok
    assert sorted(delivered) == sorted(ids)


# --------------------------------------------------------------------------- login throttling

def _imap_login(node: Node, user: str, password: str) -> tuple[str, str]:
    with imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=30) as client:
        client.starttls(ssl_context=node.client_context())
        try:
            status, data = client.login(user, password)
            return status, data[0].decode()
        except imaplib.IMAP4.error as exc:
            return "NO", str(exc)


def test_login_failures_on_two_nodes_add_up(cluster: list[Node]) -> None:
    """Five failed IMAP logins of bob (the configured budget), three on node A and two on
    node B: bob is locked out on both nodes, his right password refused without a check
    (on main each node counted its own: 3 and 2, nobody locked)."""
    a, b = cluster
    for node, count in ((a, 3), (b, 2)):
        for _ in range(count):
            assert _imap_login(node, BOB, "wrong")[0] == "NO"
    engine = _engine(a)
    try:
        def locked() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(db.login_failures.c.id).where(
                    (db.login_failures.c.key == f"imap:user:{BOB}")
                    & db.login_failures.c.locked_until.is_not(None))).first() is not None
        wait_for(locked, timeout=10, step=0.05)  # written by B's committer after its reply
    finally:
        engine.dispose()
    for node in cluster:
        status, text = _imap_login(node, BOB, PASSWORD)
        assert status == "NO" and "Too many failed logins" in text, text


def test_a_login_asks_the_database_once(engines: tuple[Engine, Engine]) -> None:
    """The fast path of a login without failures: one read, no write (counted with a
    cursor event on the throttle's engine)."""
    from sqlalchemy import event

    from mss.throttle import SharedFailures, Throttle

    reader = engines[0]
    submitted: list[object] = []
    statements: list[str] = []
    event.listen(reader, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    throttle = Throttle(5, 900, 300, SharedFailures(reader, submitted.append, "imap"))
    assert not throttle.blocked(BOB, "127.0.0.1")
    throttle.succeeded(BOB, "127.0.0.1")
    assert len([s for s in statements if "login_failures" in s]) == 1
    assert submitted == []  # nothing to write after a success without failures
    throttle.failed(BOB, "127.0.0.1")
    assert len(submitted) == 1  # a failure: one background commit
    throttle.succeeded(BOB, "127.0.0.1")
    assert len(submitted) == 2  # and the success after it clears the user's count


# --------------------------------------------------------------------------- mixed traffic

def _imaps(node: Node) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=30)
    client.starttls(ssl_context=node.client_context())
    client.login(BOB, PASSWORD)
    return client


def _append_burst(node: Node, tags: list[str], appended: list[str],
                  errors: list[BaseException]) -> None:
    """APPEND each tag's message to bob's INBOX, STORE a flag on everything in between."""
    try:
        client = _imaps(node)
        try:
            client.select("INBOX")
            for i, tag in enumerate(tags):
                status, _ = client.append("INBOX", "", None, _message(tag))
                if status == "OK":
                    appended.append(tag)
                if i % 5 == 4:
                    assert client.uid("STORE", "1:*", "+FLAGS", f"(${tag})")[0] == "OK"
        finally:
            client.logout()
    except (OSError, imaplib.IMAP4.error, AssertionError) as exc:
        errors.append(exc)


def _flags_of_all(node: Node) -> list[set[str]]:
    client = _imaps(node)
    try:
        client.select("INBOX", readonly=True)
        _, data = client.uid("FETCH", "1:*", "(FLAGS)")
    finally:
        client.logout()
    return [set(line.decode().split("FLAGS (", 1)[1].split(")", 1)[0].split())
            for line in data if isinstance(line, bytes) and b"FLAGS (" in line]


def test_submissions_appends_and_stores_on_two_nodes(cluster: list[Node]) -> None:
    """On each node at once: two submission sessions (20 messages each) and an IMAP
    session APPENDing 10 messages with STOREs between them. Then every 250 and every
    APPEND OK is stored once, and two STOREs on all messages run on the two nodes at once
    keep both flags on every message; ``mss audit verify`` passes."""
    accepted: list[str] = []
    appended: list[str] = []
    errors: list[BaseException] = []
    jobs: list[Callable[[], None]] = []
    for n, node in enumerate(cluster):
        for s in range(2):
            tags = [f"n{n}s{s}m{i}" for i in range(20)]
            jobs.append(lambda node=node, tags=tags: _submit_burst(node, tags, accepted,
                                                                   errors))
        tags = [f"n{n}a{i}" for i in range(10)]
        jobs.append(lambda node=node, tags=tags: _append_burst(node, tags, appended, errors))
    _in_threads(jobs)
    assert not errors, errors
    assert len(accepted) == 80 and len(appended) == 20
    assert sorted(_stored_tags(cluster[0])) == sorted(accepted + appended)

    barrier = threading.Barrier(2)

    def store_all(node: Node, flag: str) -> Callable[[], None]:
        def run() -> None:
            client = _imaps(node)
            try:
                client.select("INBOX")
                barrier.wait()
                assert client.uid("STORE", "1:*", "+FLAGS", f"({flag})")[0] == "OK"
            finally:
                client.logout()
        return run

    _in_threads([store_all(cluster[0], "$OnA"), store_all(cluster[1], "$OnB")])
    flags = _flags_of_all(cluster[1])
    assert len(flags) == 100
    lost = [f for f in flags if not {"$OnA", "$OnB"} <= f]
    assert not lost, lost[:3]
    assert "chain intact" in _verify(cluster[0])
    # one lock order (chain lock first, mss/mailstore/state.py): no batch was rolled back
    # by PostgreSQL's deadlock detector (taken lazily at the first append, it was)
    for node in cluster:
        assert node.log_path is not None
        assert b"DeadlockDetected" not in node.log_path.read_bytes()


# --------------------------------------------------------------------------- kill -9

def test_a_node_killed_mid_burst_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """Three nodes take submissions; node A is killed with SIGKILL mid-burst. Every message
    that got its 250 (on any node) is stored, none twice; B and C keep serving (their
    sessions finish, a new session on each is accepted); the audit chain verifies."""
    nodes = make_cluster(tmp_path, 3)
    try:
        _start_all(nodes)
        accepted: list[str] = []
        errors: list[list[BaseException]] = [[], [], []]  # per node
        jobs: list[Callable[[], None]] = []
        for n, node in enumerate(nodes):
            for s in range(2):
                tags = [f"n{n}s{s}m{i}" for i in range(20)]
                jobs.append(lambda node=node, tags=tags, out=errors[n]: _submit_burst(
                    node, tags, accepted, out))

        def killer() -> None:
            wait_for(lambda: sum(t.startswith("n0") for t in accepted) >= 8, timeout=60,
                     step=0.01)
            process = nodes[0].process
            assert process is not None
            process.kill()  # SIGKILL: no stop, no flush
            process.wait()

        _in_threads([*jobs, killer])
        nodes[0].process = None
        assert errors[0] and not errors[1] and not errors[2]  # A's sessions were cut
        assert not any(t.startswith(("n1", "n2")) for t in _lost(nodes, accepted))
        assert sum(t.startswith(("n1", "n2")) for t in accepted) == 80  # B and C served
        after: list[str] = []
        _in_threads([lambda node=node, n=n: _submit_burst(node, [f"after{n}"], after,
                                                          errors[n])
                     for n, node in ((1, nodes[1]), (2, nodes[2]))])
        assert sorted(after) == ["after1", "after2"]
        stored = _stored_tags(nodes[1])
        assert len(stored) == len(set(stored))  # none twice
        assert set(accepted) | set(after) <= set(stored)  # every 250 is there
        assert "chain intact" in _verify(nodes[2])
    finally:
        for node in nodes:
            if node.process is not None:
                node.process.kill()
                node.process.wait()


def _lost(nodes: list[Node], accepted: list[str]) -> set[str]:
    return set(accepted) - set(_stored_tags(nodes[1]))


# --------------------------------------------------------------------------- whitelist import

def test_two_nodes_importing_whitelists_leave_one_version_in_force(
        engines: tuple[Engine, Engine]) -> None:
    """Node A is mid-import (its version stored and switched, not committed) when node B
    imports another list: B's import waits for A's and compares with A's version, and
    exactly one version is active afterwards (on main both stayed active)."""
    from mss.locks import xact_lock
    from tests.node import REMOTE_DOMAINS
    from tests.whitelist_fixtures import make_whitelist_xml
    from trustspace import registry
    from trustspace.whitelist import parse_whitelist

    a, b = engines
    extra = [(f"op-{i}.mssante.fr", f"CN=mx.op-{i}.fr,O=Op {i},C=FR") for i in range(2)]
    on_a = parse_whitelist(make_whitelist_xml([*REMOTE_DOMAINS, extra[0]]))
    on_b = make_whitelist_xml([*REMOTE_DOMAINS, *extra])
    results: list[registry.ImportResult] = []

    def import_a(conn: Connection) -> None:  # what import_whitelist does in its transaction
        xact_lock(conn, registry.WHITELIST_LOCK)
        registry._store(conn, on_a.sha256, on_a.generated_at, "a.xml", len(on_a.entries),
                        len(on_a.domains), [], on_a.entries)

    _held_while(a, import_a,
                lambda: results.append(registry.import_whitelist(b, on_b, "b.xml")))
    with a.connect() as conn:
        active = conn.execute(select(db.whitelist_versions.c.id)
                              .where(db.whitelist_versions.c.active.is_(True))).all()
        assert len(active) == 1 and active[0].id == results[0].version_id
        assert registry.active_version_id(conn) == results[0].version_id
    assert results[0].previous_domains == len(REMOTE_DOMAINS) + 1  # compared with A's


def test_two_throttles_on_one_database_share_failures_and_lockouts(
        tmp_path: Path, backend: str) -> None:
    """Two processes' throttles (each its own memory) on one database: 3 + 2 failures of
    bob lock him on both, a success on one does not unlock him, and after the lockout his
    count starts again; alice, from another address, is not locked."""
    from mss.throttle import SharedFailures, Throttle

    node = make_node(tmp_path, backend=backend)
    engine = _engine(node)

    def commit_now(work: Callable[[Connection], object]) -> None:
        with engine.begin() as conn:
            work(conn)

    try:
        one, two = (Throttle(5, 900, 300, SharedFailures(engine, commit_now, "imap"))
                    for _ in range(2))
        for throttle, count in ((one, 3), (two, 2)):
            for _ in range(count):
                throttle.failed(BOB, "10.0.0.1")
        assert one.blocked(BOB, "10.0.0.9") and two.blocked(BOB, "10.0.0.9")
        assert not one.blocked(ALICE, "10.0.0.2")
        two.succeeded(ALICE, "10.0.0.2")
        assert two.blocked(BOB, "10.0.0.9")
        with engine.begin() as conn:  # 301 s later: the lockout is over
            conn.execute(db.login_failures.update().values(
                at=db.login_failures.c.at - 301,
                locked_until=db.login_failures.c.locked_until - 301))
        fresh = Throttle(5, 900, 300, SharedFailures(engine, commit_now, "imap"))
        assert not fresh.blocked(BOB, "10.0.0.9")
        assert not fresh.failed(BOB, "10.0.0.8")  # the count started again at the lockout
        assert not fresh.blocked(BOB, "10.0.0.9")
    finally:
        engine.dispose()
