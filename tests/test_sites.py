"""PostgreSQL going away under a running node, and two sites (a hot standby promoted).

Real parts only: a PostgreSQL cluster of the test's own (tests/postgres.py), a real ``mss
serve`` process, smtplib clients sending a bounded burst on the MX, IMAP sessions. While
the database is away clients get 4xx (never a 250 for what is not committed); every 250
is in the store afterwards; the node resumes by itself (no mss restart); the audit chain
verifies (``mss audit verify``).
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.node import (
    DOMAIN,
    PASSWORD,
    Node,
    database_of,
    deliver_from_this_process,
    make_node,
    point_at,
    read_all,
)
from tests.postgres import HOST, PgCluster, new_cluster, new_standby, wait_streaming

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
CLINIC = "clinique.test"  # an institution's server on the relay listener (mss relay add)
CLINIC_DN = "CN=smtp.clinique.test,OU=1750000099,O=CLINIQUE TEST,ST=Paris (75),C=FR"
THREADS = 4
PER_THREAD = 1000  # bound of each sender's loop (it stops earlier when told)


@dataclass
class Burst:
    """Senders on the MX, each on one SMTP session (a new one when the server closed it),
    counting every reply: a 250 is *acknowledged* and must be stored."""

    node: Node
    acknowledged: list[tuple[float, str]] = field(default_factory=list)
    temporary: list[tuple[float, int]] = field(default_factory=list)  # 4xx replies
    permanent: list[tuple[int, bytes]] = field(default_factory=list)  # 5xx: never
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._sender, args=(w,), daemon=True)
                        for w in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads)

    def acked_since(self, instant: float) -> int:
        with self.lock:
            return sum(1 for at, _ in self.acknowledged if at >= instant)

    def first_ack_after(self, instant: float) -> float | None:
        with self.lock:
            later = [at for at, _ in self.acknowledged if at >= instant]
        return min(later) if later else None

    def wait_acks(self, count: int, since: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_since(since) < count:
            assert time.monotonic() < deadline, f"fewer than {count} acks in {timeout} s"
            assert not self.permanent, self.permanent
            time.sleep(0.02)

    def _connect(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.node.ports["mx"], timeout=15)
        client.starttls(context=self.node.mx_client_context())
        return client

    def _sender(self, worker: int) -> None:
        client: smtplib.SMTP | None = None
        for i in range(PER_THREAD):
            if self.stop.is_set():
                break
            msgid = f"<site-{worker}-{i}-{time.time_ns()}@test>"
            body = (f"From: {REMOTE}\r\nTo: {BOB}\r\nSubject: burst\r\n"
                    f"Message-ID: {msgid}\r\n\r\nburst {worker} {i}\r\n").encode()
            try:
                if client is None:
                    client = self._connect()
                client.sendmail(REMOTE, [BOB], body)
            except smtplib.SMTPResponseException as exc:
                self._refused(exc.smtp_code, exc.smtp_error)
                client = self._reset(client)
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[BOB]
                self._refused(code, text)
                client = self._reset(client)
                continue
            except (OSError, smtplib.SMTPException):  # closed by the server (421): again
                client = None
                time.sleep(0.05)
                continue
            with self.lock:
                self.acknowledged.append((time.monotonic(), msgid))
        if client is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()

    def _refused(self, code: int, text: bytes) -> None:
        with self.lock:
            if 400 <= code < 500:
                self.temporary.append((time.monotonic(), code))
            else:
                self.permanent.append((code, text))
        time.sleep(0.1)  # the database is away: a real client waits longer

    @staticmethod
    def _reset(client: smtplib.SMTP | None) -> smtplib.SMTP | None:
        if client is None:
            return None
        try:
            client.rset()
        except (OSError, smtplib.SMTPException):
            return None
        return client


def imap_login(node: Node, user: str = BOB) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=15)
    client.starttls(ssl_context=node.client_context())
    client.login(user, PASSWORD)
    return client


def check_stored(node: Node, burst: Burst) -> None:
    """Every acknowledged message is in the store, and the audit chain verifies."""
    stored = b"\n".join(read_all(node, BOB))
    missing = [m for _, m in burst.acknowledged if m.encode() not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    assert burst.permanent == []
    out = node.cli("audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert node.log_path is not None  # each lost connection was seen for what it is:
    log = node.log_path.read_text()  # no traceback of a "bug", no error masking another
    for sign in ("PendingRollbackError", '"session error"', '"command failed"',
                 '"session failed"'):
        assert sign not in log, sign


@pytest.mark.parametrize("query, ok", [
    ("host=127.0.0.1:5432&host=127.0.0.1:5433&target_session_attrs=read-write", True),
    ("host=10.0.0.1,10.0.0.2&port=5432,5433&target_session_attrs=read-write", True),
    ("host=127.0.0.1:5432,127.0.0.1:5433", False)])
def test_multi_host_database_url(tmp_path: Path, query: str, ok: bool) -> None:
    """The forms SQLAlchemy 2 turns into libpq's host and port lists are accepted and
    reach the driver as such; a host list with ports inside is refused at load time."""
    from sqlalchemy import make_url

    from mss.config import ConfigError, parse_config
    from mss.db import make_engine

    url = f"postgresql+psycopg://mss@/mss?{query}"
    raw = {"database": {"url": url}}
    if not ok:
        with pytest.raises(ConfigError, match=r"database\.url: a host list with ports"):
            parse_config(raw, tmp_path / "mss.toml")
        return
    assert parse_config(raw, tmp_path / "mss.toml").database_url == url
    engine = make_engine(url)
    _, params = engine.dialect.create_connect_args(make_url(url))
    engine.dispose()
    assert len(params["host"].split(",")) == len(params["port"].split(",")) == 2
    assert params["target_session_attrs"] == "read-write"


def test_database_away_is_told_from_a_bug() -> None:
    """What counts as "the database is away" (4xx, NO [UNAVAILABLE]) and what does not: a
    server never reached, shut down or read-only (a standby), SQLite busy; not a row SQLite
    cannot decode (a corrupt page: the login fails as before), a constraint, a timeout."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

    from mss.db import unavailable

    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorname = "SQLITE_BUSY"
    away = [OperationalError("q", {}, psycopg.OperationalError("connection failed")),
            OperationalError("q", {}, psycopg.errors.AdminShutdown("terminating")),
            OperationalError("q", {}, psycopg.errors.CannotConnectNow("starting up")),
            DBAPIError("q", {}, psycopg.errors.ReadOnlySqlTransaction("read-only")),
            OperationalError("q", {}, busy)]
    not_away = [OperationalError("q", {}, sqlite3.OperationalError("Could not decode")),
                IntegrityError("q", {}, psycopg.errors.UniqueViolation("duplicate")),
                OperationalError("q", {}, psycopg.errors.QueryCanceled("timeout")),
                ValueError("no database error")]
    assert [unavailable(e) for e in away] == [True] * len(away)
    assert [unavailable(e) for e in not_away] == [False] * len(not_away)


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = new_cluster()
    yield cluster
    cluster.stop("immediate")


def _outage(burst: Burst, interrupt: Callable[[], None],
            resume: Callable[[], None], during: Callable[[], None] = lambda: None) -> float:
    """Traffic, *interrupt* the database, wait for 4xx replies, check *during*, *resume*
    it; the seconds from the database back to the first 250 (resumed by itself)."""
    burst.wait_acks(10, since=time.monotonic())
    interrupt()
    down = time.monotonic()
    deadline = down + 30
    while not [at for at, _ in burst.temporary if at >= down]:
        assert time.monotonic() < deadline, "no 4xx while the database was away"
        time.sleep(0.02)
    during()
    resume()
    back = time.monotonic()
    burst.wait_acks(10, since=back)
    first = burst.first_ack_after(back)
    assert first is not None
    return first - back


def _during_outage(node: Node, selected: imaplib.IMAP4) -> None:
    """While the database is away: an IMAP session answers NO [UNAVAILABLE] or BYE (RFC
    5530 §3, RFC 3501 §7.1.5), a new login NO [UNAVAILABLE], a submission AUTH 454 4.7.0
    (RFC 4954 §6), never a permanent failure."""
    try:
        typ, data = selected.noop()
        assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
    except imaplib.IMAP4.abort as exc:  # BYE, then closed
        assert "Database unavailable" in str(exc), exc
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        imap_login(node)
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15) as client:
        client.starttls(context=node.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(ALICE, PASSWORD)
        assert refused.value.smtp_code == 454
    ctx = node.client_context()  # the relay's certificate is looked up at MAIL FROM
    ctx.load_cert_chain(*node.operator_certificate("clinic", CLINIC_DN))
    with smtplib.SMTP("127.0.0.1", node.ports["relay"], timeout=15) as client:
        client.starttls(context=ctx)
        client.ehlo("smtp.clinique.test")
        code, reply = client.mail(f"dr.house@{CLINIC}")
        assert (code, reply) == (421, b"4.3.0 Database unavailable, try again later")


def test_postgresql_restarted_mid_burst(tmp_path: Path, cluster: PgCluster) -> None:
    """``pg_ctl restart`` (fast: sessions ended), then a crash (``-m immediate``), under a
    burst on the MX: 4xx while away, every 250 stored, the node resumes by itself. An IDLE
    session of before the outages is still woken by another process's commit after them:
    the change watcher took a new connection (the IDLE safety poll is set to 30 s)."""
    node = make_node(tmp_path, backend="postgresql", pg_cluster=cluster,
                     extra_config="\n[imap]\nidle_poll = 30.0\n")
    # the test process's commit sends no NOTIFY: the node sees it at its next full round
    # (database.notify_poll, 10 s by default: as long as the wait below)
    node.config.write_text(node.config.read_text().replace(
        "[database]\n", "[database]\nnotify_poll = 1.0\n", 1))
    node.cli("domain", "add", CLINIC)
    node.cli("relay", "add", "clinic", "--cert-dn", CLINIC_DN, "--domains", CLINIC)
    node.start()
    idle = imap_login(node, ALICE)
    assert idle.select("INBOX")[0] == "OK"
    idle.send(b"i IDLE\r\n")
    assert idle.readline().startswith(b"+")
    burst = Burst(node)
    burst.start()
    try:
        for mode in ("fast", "immediate"):
            selected = imap_login(node)
            assert selected.select("INBOX")[0] == "OK"
            resumed = _outage(burst, lambda m=mode: cluster.stop(m),  # type: ignore[misc]
                              cluster.start, lambda s=selected: _during_outage(node, s))
            print(f"\nstop -m {mode}: node resumed {resumed:.3f} s after PostgreSQL was "
                  f"back; {len(burst.acknowledged)} acknowledged, {len(burst.temporary)} 4xx")
    finally:
        burst.finish()
    assert node.process is not None and node.process.poll() is None  # never restarted
    deliver_from_this_process(node, ALICE, b"From: x@operator-a.mssante.fr\r\n\r\nhi\r\n",
                              mail_from=REMOTE)
    idle.sock.settimeout(10)  # the watcher's full round: every database.notify_poll (1 s)
    line = idle.readline()
    assert line.endswith(b"EXISTS\r\n"), line
    idle.send(b"DONE\r\n")
    while not idle.readline().startswith(b"i OK"):  # RECENT, then the tagged OK
        pass
    idle.logout()
    again = imap_login(node)
    assert again.select("INBOX")[0] == "OK"
    again.logout()
    check_stored(node, burst)
    node.stop()


def test_two_sites_failover_to_promoted_standby(tmp_path: Path, cluster: PgCluster) -> None:
    """Site A's primary streams to site B's hot standby with synchronous commit; the node's
    URL lists both servers with target_session_attrs=read-write. The primary crashes, the
    standby is promoted: the node answers 4xx meanwhile, then writes to the new primary by
    itself; every message acknowledged before the crash is there; the chain verifies."""
    node = make_node(tmp_path, backend="postgresql", pg_cluster=cluster)
    standby = new_standby(cluster, "site_b")
    try:
        wait_streaming(cluster, "site_b")
        cluster.require_synchronous("site_b")
        assert cluster.psql("SELECT sync_state FROM pg_stat_replication "
                            "WHERE application_name = 'site_b'").strip() == "sync"
        database = database_of(node.config).rsplit("/", 1)[1]
        point_at(node.config, f"postgresql+psycopg://mss@/{database}?host={HOST}:"
                  f"{cluster.port}&host={HOST}:{standby.port}&target_session_attrs=read-write")
        node.start()
        burst = Burst(node)
        burst.start()
        try:
            resumed = _outage(burst, cluster.crash, standby.promote)
        finally:
            burst.finish()
        print(f"\nfailover: node resumed {resumed:.3f} s after the promotion; "
              f"{len(burst.acknowledged)} acknowledged, {len(burst.temporary)} 4xx")
        assert not standby.in_recovery()
        assert node.process is not None and node.process.poll() is None
        check_stored(node, burst)  # read through the multi-host URL: the new primary
        node.stop()
    finally:
        standby.stop("immediate")


def test_a_serving_node_leaves_no_transaction_open(tmp_path: Path) -> None:
    """Between its rounds a node holds no transaction open: one left "idle in transaction"
    (the change watcher's reader, once) holds back VACUUM and blocks DDL, so ``mss db
    upgrade`` on a running cluster would wait for ever. An IDLE session makes the watcher
    query the folders; then an ALTER TABLE (what a migration runs) gets its lock at once."""
    from tests.postgres import shared_cluster

    node = make_node(tmp_path, backend="postgresql", in_process=True)
    node.start()
    try:
        idle = imap_login(node, ALICE)
        assert idle.select("INBOX")[0] == "OK"
        idle.send(b"i IDLE\r\n")
        assert idle.readline().startswith(b"+")
        time.sleep(2.0)  # rounds of the change watcher, the queue worker, the elections
        database = database_of(node.config).rsplit("/", 1)[1]
        open_ones = shared_cluster().psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state = 'idle in transaction' AND now() - xact_start > interval '1 second'",
            database)
        assert open_ones.strip() == "0"
        shared_cluster().psql("SET lock_timeout = '3s'; "
                              "ALTER TABLE outbound_queue ADD COLUMN probe integer; "
                              "ALTER TABLE outbound_queue DROP COLUMN probe", database)
        idle.send(b"DONE\r\n")
        assert idle.readline().startswith(b"i OK")
        idle.logout()
    finally:
        node.stop()
