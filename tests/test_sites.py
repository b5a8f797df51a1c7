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

from tests.node import DOMAIN, PASSWORD, Node, make_node, read_all
from tests.postgres import PgCluster, new_cluster

BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
THREADS = 4
PER_THREAD = 400  # bound of each sender's loop (it stops earlier when told)


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
        time.sleep(0.05)  # the database is away: a real client waits longer

    @staticmethod
    def _reset(client: smtplib.SMTP | None) -> smtplib.SMTP | None:
        if client is None:
            return None
        try:
            client.rset()
        except (OSError, smtplib.SMTPException):
            return None
        return client


def imap_login(node: Node) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=15)
    client.starttls(ssl_context=node.client_context())
    client.login(BOB, PASSWORD)
    return client


def check_stored(node: Node, burst: Burst) -> None:
    """Every acknowledged message is in the store, and the audit chain verifies."""
    stored = b"\n".join(read_all(node, BOB))
    missing = [m for _, m in burst.acknowledged if m.encode() not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    assert burst.permanent == []
    out = node.cli("audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    cluster = new_cluster()
    yield cluster
    cluster.stop("immediate")


def _node_on(tmp_path: Path, cluster: PgCluster) -> Node:
    node = make_node(tmp_path, backend="postgresql", pg_cluster=cluster)
    node.start()
    return node


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
            client.login(f"alice@{DOMAIN}", PASSWORD)
        assert refused.value.smtp_code == 454


def test_postgresql_restarted_mid_burst(tmp_path: Path, cluster: PgCluster) -> None:
    """``pg_ctl restart`` (fast: sessions ended), then a crash (``-m immediate``), under a
    burst on the MX: 4xx while away, every 250 stored, the node resumes by itself."""
    node = _node_on(tmp_path, cluster)
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
    again = imap_login(node)
    assert again.select("INBOX")[0] == "OK"
    again.logout()
    check_stored(node, burst)
    node.stop()


def _deliver_from_this_process(node: Node, data: bytes) -> None:
    """A delivery to bob committed by the test process: only the node's change watcher
    (the database) tells its sessions about it."""
    from audit.journal import AuditRecord
    from mss.app import open_app
    from mss.mailstore import deliveries, mailboxes

    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            mailbox = mailboxes.require_mailbox(conn, BOB)
        copy = deliveries.seal_local(app.keyring, mailbox.id, BOB, data)
        record = AuditRecord("delivery.local", actor="mss", mailbox=BOB, rcpt=BOB,
                             detail={"store_id": copy.message_id, "size": copy.size})
        with app.engine.begin() as conn:
            deliveries.write_delivery(conn, deliveries.Delivery(
                mail_from=REMOTE, local=[copy], queued=[], audit=[record],
                header_message_id=None))
    finally:
        app.close()


def test_idle_woken_after_postgresql_restart(tmp_path: Path, cluster: PgCluster) -> None:
    """The change watcher's connection is lost with the server: it takes a new one, so an
    IDLE session of before the restart is woken by a commit of another process (the safety
    poll set to 30 s does not do it)."""
    node = make_node(tmp_path, backend="postgresql", pg_cluster=cluster,
                     extra_config="\n[imap]\nidle_poll = 30.0\n")
    node.start()
    client = imap_login(node)
    assert client.select("INBOX")[0] == "OK"
    client.send(b"i IDLE\r\n")
    assert client.readline().startswith(b"+")
    cluster.restart()
    _deliver_from_this_process(node, b"From: x@operator-a.mssante.fr\r\n\r\nafter\r\n")
    client.sock.settimeout(10)  # the watcher polls every database.change_poll (0.2 s)
    line = client.readline()
    assert line.endswith(b"EXISTS\r\n"), line
    client.send(b"DONE\r\n")
    while not client.readline().startswith(b"i OK"):  # RECENT, then the tagged OK
        pass
    client.logout()
    node.stop()
