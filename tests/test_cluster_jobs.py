"""What crosses nodes sharing one PostgreSQL database (issue 14, point 2): IDLE on one node
woken by a delivery into another (LISTEN/NOTIFY), a flag change or expunge on one node seen
by SELECT/FETCH on the other (the snapshot cache keys on the folder row), and periodic jobs
(audit checkpoints...) run by one elected node at a time, taken over when it dies.

Real ``mss serve`` processes on this test process's PostgreSQL server (tests/postgres.py),
real SMTP and IMAP clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import imapclient
import pytest
from sqlalchemy import Engine, create_engine

from mss.leader import Elector
from tests.node import (
    BACKENDS,
    DOMAIN,
    PASSWORD,
    Node,
    database_of,
    make_cluster,
    make_node,
    wait_for,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
DELIVERIES = 20
BACKENDS = BACKENDS  # the elector test runs on both (tests/conftest.py "backend")


def make_nodes(base: Path, count: int, extra_config: str = "", database: str = ""
               ) -> list[Node]:
    """tests/node.py make_cluster's *count* nodes on one PostgreSQL database; *database*:
    lines added to their [database] table."""
    nodes = make_cluster(base, count, extra_config=extra_config)
    for node in nodes:
        text = node.config.read_text()
        assert text.count("[database]\n") == 1
        node.config.write_text(text.replace("[database]\n", f"[database]\n{database}\n"))
    return nodes


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Two served nodes on one database whose safety polls (30 s) cannot explain a wake-up
    within seconds: only a notification can."""
    nodes = make_nodes(tmp_path_factory.mktemp("pair"), 2, "\n[imap]\nidle_poll = 30.0\n",
                       database="notify_poll = 30.0")
    try:
        for node in nodes:
            node.start()
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()


@pytest.fixture
def started() -> Iterator[list[Node]]:
    """The nodes a test started: stopped (killed if need be) at its end."""
    nodes: list[Node] = []
    yield nodes
    for node in nodes:
        if node.process is not None:
            node.process.kill()
            node.process.wait()
            node.process = None


def submit(node: Node, subject: str, rcpt: str = BOB) -> None:
    data = (f"From: {ALICE}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@test.example>\r\n\r\nBonjour.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [rcpt], data) == {}


def imap(node: Node, user: str = BOB) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", node.ports["imaps"], ssl=True,
                                   ssl_context=node.client_context(), timeout=10)
    client.login(user, PASSWORD)
    return client


# ------------------------------------------------------------------ LISTEN/NOTIFY
def test_idle_on_one_node_sees_deliveries_into_another(pair: tuple[Node, Node]) -> None:
    """Only the notification of node 1's commit can wake node 2's IDLE within a second
    (p99 over 20 deliveries)."""
    one, two = pair
    client = imap(two)
    client.select_folder("INBOX")
    client.idle()
    delays = []
    try:
        for i in range(DELIVERIES):
            submit(one, f"cross-node {i}")  # 250: committed on node 1
            sent = time.monotonic()
            seen = False
            while not seen and time.monotonic() - sent < 10:
                seen = any(r[1] == b"EXISTS" for r in client.idle_check(timeout=10)
                           if isinstance(r, tuple) and len(r) > 1)
            assert seen, f"delivery {i} not seen by IDLE on node 2 within 10 s"
            delays.append(time.monotonic() - sent)
    finally:
        client.idle_done()
        client.logout()
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print(f"IDLE on node 2 after SMTP into node 1: median {delays[len(delays) // 2]:.3f} s, "
          f"p99 {p99:.3f} s over {len(delays)}")
    assert p99 < 1.0, delays


def terminate(node: Node, application_name: str) -> int:
    """Cut the connections named *application_name* to *node*'s database (as a database
    restart or an administrator's pg_terminate_backend would); how many were cut."""
    from tests.postgres import shared_cluster

    database = database_of(node.config).rsplit("/", 1)[1]
    out = shared_cluster().psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND application_name = '{application_name}'", database)
    return int(out.strip())


def wait_exists(client: imapclient.IMAPClient, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(isinstance(r, tuple) and len(r) > 1 and r[1] == b"EXISTS"
               for r in client.idle_check(timeout=max(0.1, deadline - time.monotonic()))):
            return True
    return False


def test_listener_reconnects_after_its_connection_is_cut(pair: tuple[Node, Node]) -> None:
    """Every node's listening connection cut, then a delivery at once: node 2's IDLE still
    sees it well before the 30 s safety polls (node 1 sends what it queued once
    reconnected; node 2 listens again and runs one full round of its listeners)."""
    from mss.mailstore.notify import LISTEN_CONNECTION

    one, two = pair
    client = imap(two)
    client.select_folder("INBOX")
    client.idle()
    try:
        assert terminate(one, LISTEN_CONNECTION) == 2  # one listening connection per node
        submit(one, "while nobody listens")
        assert wait_exists(client, 5), "IDLE on node 2 missed the delivery after the cut"
        submit(one, "after the reconnection")
        assert wait_exists(client, 5), "IDLE on node 2 not woken after the reconnection"
    finally:
        client.idle_done()
        client.logout()
    assert two.log_path is not None
    assert '"change listener disconnected"' in two.log_path.read_text()


# ------------------------------------------------------------------ caches
def test_flags_and_expunge_on_one_node_seen_by_the_other(pair: tuple[Node, Node]) -> None:
    """Node 2's snapshot of INBOX (taken by its SELECT) must not survive node 1's STORE and
    EXPUNGE: the cache keys on the folder row's UIDNEXT/HIGHESTMODSEQ, which the database
    moves for every node (ENVELOPEs are cached by store id: one immutable ciphertext)."""
    one, two = pair
    for i in range(3):
        submit(one, f"cache {i}", rcpt=ALICE)  # alice's INBOX: the other tests use bob's
    reader = imap(two, ALICE)
    try:
        info = reader.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 3
        uids = sorted(reader.search("ALL"))
        assert all(b"\\Seen" not in f for f in reader.get_flags(uids).values())
        reader.close_folder()  # the snapshot stays in node 2's cache

        writer = imap(one, ALICE)
        writer.select_folder("INBOX")
        writer.add_flags([uids[0]], [b"\\Seen", b"$Label1"])
        writer.delete_messages([uids[1]])
        writer.expunge()
        writer.logout()

        info = reader.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 2
        assert b"$Label1" in info[b"FLAGS"]
        flags = reader.get_flags(reader.search("ALL"))
        assert sorted(flags) == [uids[0], uids[2]]
        assert set(flags[uids[0]]) >= {b"\\Seen", b"$Label1"}
        assert b"\\Seen" not in flags[uids[2]]
        assert reader.search("UNSEEN") == [uids[2]]
    finally:
        reader.logout()


# ------------------------------------------------------------------ elected periodic jobs
ELECTION = 0.3  # seconds: server.election_interval in these tests (default 5)
JOBS_CONFIG = f"\n[audit]\ncheckpoint_interval = {ELECTION}\nship_interval = 0.2\n"


class UdpCollector:
    """A syslog receiver over UDP (RFC 5426) on loopback: the record ids received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.ids: list[int] = []  # [meta sequenceId] of each datagram, in arrival order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def destination(self) -> str:
        return (f'\n[[audit.destinations]]\nname = "collector"\ntransport = "udp"\n'
                f'host = "127.0.0.1"\nport = {self.port}\n')

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            match = re.search(rb'sequenceId="(\d+)"', data)
            if match:
                self.ids.append(int(match.group(1)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def leaderships(node: Node, job: str) -> list[int]:
    """The pids of *node*'s processes that took *job*'s lock, in order (from its log)."""
    assert node.log_path is not None
    pids = []
    for line in node.log_path.read_text(errors="replace").splitlines():
        if '"job leadership taken"' in line:
            entry = json.loads(line)
            if entry["job"] == job:
                pids.append(int(entry["pid"]))
    return pids


def with_election(node: Node, workers: int = 1) -> None:
    text = node.config.read_text()
    assert text.count("[server]\n") == 1
    node.config.write_text(text.replace(
        "[server]\n", f"[server]\nelection_interval = {ELECTION}\nworkers = {workers}\n"))


def newest_checkpoint(node: Node) -> int:
    records = node.audit("--event", "audit.checkpoint")
    return max((int(r["detail"]["record_id"]) for r in records  # type: ignore[index]
                if isinstance(r.get("detail"), dict)), default=0)


def test_checkpoints_signed_by_one_node_then_taken_over_after_kill(
        tmp_path: Path, started: list[Node], request: pytest.FixtureRequest) -> None:
    """One node of two signs the periodic checkpoints and ships the trail (each record
    once); its election connection cut, it stops and one of them leads again; the leader
    killed (-9), the other takes over within a few election intervals, shipping too; the
    chain verifies."""
    from mss.leader import ELECTION_CONNECTION

    job = "audit-checkpoints"
    collector = UdpCollector()
    request.addfinalizer(collector.close)
    nodes = make_nodes(tmp_path, 2, JOBS_CONFIG + collector.destination())
    for node in nodes:
        with_election(node)
        node.start()
        started.append(node)

    def new_leader(before: list[int]) -> Node | None:
        return next((n for n, count in zip(nodes, before, strict=True)
                     if len(leaderships(n, job)) > count), None)

    def signs(leader: Node, subject: str) -> bool:
        submit(leader, subject)
        return wait_for(lambda: newest_checkpoint(leader) >= _newest_record(leader, "smtp."),
                        timeout=10)

    assert wait_for(lambda: new_leader([0, 0]) is not None, timeout=15)
    time.sleep(ELECTION * 5)  # both tried several times meanwhile
    counts = [len(leaderships(n, job)) for n in nodes]
    assert sorted(counts) == [0, 1], "exactly one node took the lead, and kept it"
    leader = new_leader([0, 0])
    assert leader is not None and signs(leader, "first leader")
    shipping = [n for n in nodes if leaderships(n, "audit-ship:collector")]
    assert len(shipping) == 1, "one shipper per destination in the cluster"
    newest = _newest_record(leader, "smtp.")
    assert wait_for(lambda: max(collector.ids, default=0) >= newest, timeout=10)
    assert len(collector.ids) == len(set(collector.ids)), "a record shipped twice"

    # its election connection cut (a database restart, the network): it stops leading
    assert terminate(leader, ELECTION_CONNECTION) == 2  # one per node
    assert wait_for(lambda: '"job leadership lost: job stopped"' in
                    (leader.log_path.read_text() if leader.log_path else ""), timeout=10)
    assert wait_for(lambda: new_leader(counts) is not None, timeout=10), "nobody leads"
    leader = new_leader(counts)
    assert leader is not None and signs(leader, "second leader")

    counts = [len(leaderships(n, job)) for n in nodes]
    assert leader.process is not None
    leader.process.send_signal(signal.SIGKILL)  # its connection closes: PostgreSQL unlocks
    leader.process.wait()
    leader.process = None
    killed = time.monotonic()
    assert wait_for(lambda: new_leader(counts) is not None, timeout=10, step=0.05)
    print(f"checkpoints taken over {time.monotonic() - killed:.2f} s after kill -9 of the "
          f"leader (election_interval {ELECTION} s)")
    survivor = new_leader(counts)
    assert survivor is not None and survivor is not leader
    assert signs(survivor, "after the kill"), "the new leader signs checkpoints"
    newest = _newest_record(survivor, "smtp.")
    assert wait_for(lambda: max(collector.ids, default=0) >= newest, timeout=10), \
        "the survivor ships"
    verify = survivor.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout


def _newest_record(node: Node, event: str) -> int:
    return max(int(str(r["id"])) for r in node.audit("--event", event))


def test_workers_of_one_sqlite_node_elect_one_leader(tmp_path: Path,
                                                     started: list[Node]) -> None:
    node = make_node(tmp_path, extra_config=JOBS_CONFIG)
    with_election(node, workers=2)
    node.start()
    started.append(node)
    assert wait_for(lambda: leaderships(node, "audit-checkpoints"), timeout=15)
    time.sleep(ELECTION * 5)
    assert len(leaderships(node, "audit-checkpoints")) == 1, "one worker leads"
    assert node.log_path is not None
    workers = {json.loads(line)["worker"] for line in node.log_path.read_text().splitlines()
               if '"event": "ready"' in line and line.startswith("{")}
    assert len(workers) == 2, "both workers serve (and both try to lead)"
    submit(node, "sqlite workers")
    assert wait_for(lambda: newest_checkpoint(node) >= _newest_record(node, "smtp."),
                    timeout=10), "the leading worker signs checkpoints"


# ------------------------------------------------------------------ the parts, in process
@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """An engine on an empty database of its own (the parts below need no table)."""
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    engine = create_engine(cluster.url(cluster.create_database("jobs")))
    yield engine
    engine.dispose()


def test_queue_and_mailbox_wake_ups_cross_processes(pg_engine: Engine) -> None:
    """Two processes' watchers on one database: a queued row fired in one wakes the other's
    delivery worker; a mailbox changed in one wakes the other's watch of it, not others."""
    from mss.mailstore.notify import PgChangeWatcher

    async def main() -> None:
        one = PgChangeWatcher(pg_engine, pg_engine, interval=30.0)
        two = PgChangeWatcher(pg_engine, pg_engine, interval=30.0)
        tasks = [asyncio.create_task(w.run()) for w in (one, two)]
        try:
            assert await _eventually(lambda: one.connects == two.connects == 1)
            queued = asyncio.Event()
            two.queued.subscribe(queued)
            watched, other = two.notifier.watch(7, 70), two.notifier.watch(8, 80)
            one.queued.fire()
            await asyncio.wait_for(queued.wait(), 5)
            one.notifier.changed(7)
            assert await watched.wait(5)
            assert not await other.wait(0.3)
            assert two.received >= 2 and one.received == 0  # its own are not echoed back
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _electors(backend: str, pg_engine: Engine | None, tmp_path: Path) -> list[Elector]:
    from mss.leader import FileLocks, PgLocks

    if backend == "postgresql":
        assert pg_engine is not None
        return [Elector(PgLocks(pg_engine), 0.05) for _ in range(2)]
    return [Elector(FileLocks(tmp_path / "locks"), 0.05) for _ in range(2)]


def test_one_elector_runs_the_job_and_the_other_takes_over(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two processes' electors for one job: one runs it; the leader's locks gone (its
    connection closed / its descriptors), its job is stopped; that process gone, the other
    runs the job."""
    engine = request.getfixturevalue("pg_engine") if backend == "postgresql" else None
    electors = _electors(backend, engine, tmp_path)
    running: dict[int, int] = {0: 0, 1: 0}  # elector -> job rounds
    stopped: list[int] = []

    def job(index: int) -> Callable[[], Coroutine[Any, Any, None]]:
        async def loop() -> None:
            try:
                while True:
                    running[index] += 1
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                stopped.append(index)
                raise
        return loop

    async def main() -> None:
        tasks = [asyncio.create_task(e.run("test-job", job(i)))
                 for i, e in enumerate(electors)]
        try:
            assert await _eventually(lambda: any(running.values()))
            await asyncio.sleep(0.3)  # several rounds of elections
            leaders = [i for i, e in enumerate(electors) if "test-job" in e.leading]
            assert len(leaders) == 1 and running[1 - leaders[0]] == 0
            leader = leaders[0]
            await asyncio.get_running_loop().run_in_executor(
                None, electors[leader].locks.close)  # its connection / descriptor gone
            assert await _eventually(lambda: leader in stopped), "the job runs on, unlocked"
            assert "test-job" not in electors[leader].leading
            tasks[leader].cancel()  # and the process with it (else it may lead again)
            assert await _eventually(lambda: running[1 - leader] > 0), "nobody took over"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for e in electors:
                e.locks.close()

    asyncio.run(main())
