"""Sending limits (mss/sending.py, issue 17 #3): messages and recipients per window per
mailbox and per relay, IMAP APPEND bytes per window, counted in the database by every
worker; refused 451 4.7.1 / NO [LIMIT], audited once per sender, limit and window."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.events import Event
from audit.journal import AuditRecord
from mss import db
from mss.sending import Caps, Usage, audit_once, bump
from tests.node import BACKENDS, DOMAIN, PASSWORD, Node, make_cluster, make_node

BACKENDS = BACKENDS
ALICE, BOB, CAROL = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"
ATTACKER, OTHER = "127.0.34.1", "127.0.34.2"  # the compromised account's address, another
MESSAGES, RECIPIENTS, APPEND_BYTES = 20, 30, 20_000
WINDOW = 3600.0
RELAY, RELAY_DOMAIN, RELAY_MESSAGES = "hospital", "relay.demo.mssante.fr", 3
SENDING = (f"\n[limits.sending]\nwindow = {WINDOW}\nmessages_per_mailbox = {MESSAGES}\n"
           f"recipients_per_mailbox = {RECIPIENTS}\nmessages_per_relay = {RELAY_MESSAGES}\n"
           f"append_bytes_per_mailbox = {APPEND_BYTES}\n")


def test_caps_over() -> None:
    caps = Caps(messages=2, recipients=3, append_bytes=0)
    assert caps.over(Usage(1, 0, 0), messages=1) is None
    assert caps.over(Usage(2, 0, 0), messages=1) == "messages"
    assert caps.over(Usage(0, 3, 0), recipients=1) == "recipients"
    assert caps.over(Usage(0, 0, 10**12), append_bytes=10**9) is None  # 0: no limit
    assert Caps().off and not caps.off


def test_bump_and_audit_once_in_one_database(tmp_path: Path) -> None:
    """The conditional upsert adds only what fits; the audit mark is set once per limit."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    db.metadata.create_all(engine, tables=[db.send_counters, db.audit_log])
    caps = Caps(messages=2, recipients=3)
    with engine.begin() as conn:
        results = [bump(conn, "mailbox:a", 7, caps, 1, 1) for _ in range(3)]
        assert results == [Usage(1, 1, 0), Usage(2, 2, 0), None]
        assert bump(conn, "mailbox:b", 7, caps, 1, 4) is None  # over a window's cap at once
        assert bump(conn, "mailbox:a", 8, caps, 1, 3) == Usage(1, 3, 0)  # the next window
        marks = [audit_once(conn, "mailbox:a", 7, limit, AuditRecord(Event.LIMIT_EXCEEDED))
                 for limit in ("messages", "messages", "recipients")]
        assert marks == [True, False, True]
        rows = conn.execute(db.send_counters.select().order_by("window")).all()
        logged = conn.execute(db.audit_log.select()).all()
    assert [tuple(r) for r in rows] == [("mailbox:a", 7, 2, 2, 0, ",messages,recipients"),
                                        ("mailbox:a", 8, 1, 3, 0, "")]
    assert len(logged) == 2
    engine.dispose()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Node]:
    """Two worker processes on one database: the counts must add up across them."""
    node = make_node(tmp_path_factory.mktemp("limits"), extra_config=SENDING, backend=backend)
    text = node.config.read_text()
    node.config.write_text(text.replace('data_dir = "."', 'data_dir = "."\nworkers = 2', 1))
    node.cli("mailbox", "add", CAROL, "--type", "PER", "--rpps", "10000000003",
             "--password-stdin", input=PASSWORD + "\n")
    node.cli("domain", "add", RELAY_DOMAIN)
    node.cli("relay", "add", RELAY, "--domains", RELAY_DOMAIN, "--password-stdin",
             input=PASSWORD + "\n")
    node.start()
    one_window()
    yield node
    node.stop()


def one_window() -> None:
    """The sends that follow within one window (not across an hour's end)."""
    away = WINDOW - time.time() % WINDOW
    if away < 30:
        time.sleep(away + 0.5)


def submit(node: Node, login: str, source: str, port: str = "submission") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports[port], timeout=20,
                          source_address=(source, 0))
    client.starttls(context=node.client_context())
    client.login(login, PASSWORD)
    return client


def message(sender: str, rcpt: str, i: int) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: n{i}\r\n"
            f"Message-ID: <{i}.{time.time()}@test>\r\n\r\nbody {i}\r\n").encode()


def limit_records(node: Node, actor: str) -> list[dict[str, object]]:
    return [r for r in node.audit("--event", "limit.exceeded") if r["actor"] == actor]


def test_compromised_account_is_stopped_at_its_limit(node: Node) -> None:
    """100 messages in 2 s from 5 connections (spread over both workers): MESSAGES
    accepted, the rest 451 4.7.1 at MAIL FROM (or DATA for one that raced), nothing stored
    beyond; bob and mail to alice still served; one audit record."""
    replies: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 20  # bounded: 100 messages, 20 s at most

    def flood(k: int) -> None:
        with submit(node, ALICE, ATTACKER) as client:
            for i in range(20):
                if time.monotonic() > stop_at:
                    return
                try:
                    client.sendmail(ALICE, [BOB], message(ALICE, BOB, k * 100 + i))
                    code = 250
                except smtplib.SMTPSenderRefused as exc:
                    code = exc.smtp_code
                    assert exc.smtp_error.startswith(b"4.7.1 Sending limit reached")
                except smtplib.SMTPDataError as exc:  # a race lost at the commit
                    code = exc.smtp_code
                    assert exc.smtp_error.startswith(b"4.7.1")
                    client.rset()
                with lock:
                    replies.append(code)

    before = node_inbox(node, BOB)
    started = time.monotonic()
    threads = [threading.Thread(target=flood, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(replies) == 100, replies
    assert replies.count(250) == MESSAGES and replies.count(451) == 100 - MESSAGES
    assert time.monotonic() - started < 20
    assert node_inbox(node, BOB) == before + MESSAGES
    # another mailbox, from another address, is served; mail to alice too
    with submit(node, BOB, OTHER) as client:
        assert not client.sendmail(BOB, [ALICE], message(BOB, ALICE, 1))
    # the compromised one stays refused, and each refusal was not audited
    with submit(node, ALICE, ATTACKER) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(ALICE, [BOB], message(ALICE, BOB, 999))
        assert refused.value.smtp_code == 451
    assert node.wait_audit(lambda r: r["event"] == "limit.exceeded" and r["actor"] == ALICE)
    time.sleep(1.0)  # late duplicates, if any, would be committed by now
    records = limit_records(node, ALICE)
    assert len(records) == 1, records
    record = records[0]
    assert record["reason"] == "messages" and record["mailbox"] == ALICE
    assert record["outcome"] == 4 and record["remote_addr"] == ATTACKER
    detail = record["detail"]
    assert isinstance(detail, dict) and detail["limit"] == MESSAGES
    assert detail["window"] == WINDOW and detail["window_start"] % WINDOW == 0


def test_recipients_per_window_refused_at_rcpt(node: Node) -> None:
    """carol's recipients (30 per window): nine messages of 3, then one of 4 whose 4th
    recipient gets 451 4.7.1 at RCPT (the message goes to the other 3), then none."""
    four = [ALICE, BOB, f"secretariat@{DOMAIN}", "dr.martin@operator-a.mssante.fr"]
    with submit(node, CAROL, OTHER) as client:
        for i in range(RECIPIENTS // 3 - 1):
            assert client.sendmail(CAROL, four[:3], message(CAROL, ALICE, i)) == {}
        refused = client.sendmail(CAROL, four, message(CAROL, ALICE, 99))
        assert list(refused) == [four[3]]
        code, text = refused[four[3]]
        assert code == 451 and text.startswith(b"4.7.1 Recipient limit reached")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(CAROL, [ALICE], message(CAROL, ALICE, 4))
    assert node.wait_audit(lambda r: r["event"] == "limit.exceeded" and r["actor"] == CAROL
                           and r["reason"] == "recipients")
    assert len(limit_records(node, CAROL)) == 1


def test_relay_messages_per_window(node: Node) -> None:
    """The relay's own count: RELAY_MESSAGES, then 451 4.7.1; the mailboxes unaffected."""
    codes = []
    with submit(node, RELAY, OTHER, port="relay") as client:
        for i in range(RELAY_MESSAGES + 2):
            try:
                client.sendmail(f"lab@{RELAY_DOMAIN}", [BOB],
                                message(f"lab@{RELAY_DOMAIN}", BOB, i))
                codes.append(250)
            except smtplib.SMTPSenderRefused as exc:
                codes.append(exc.smtp_code)
    assert codes == [250] * RELAY_MESSAGES + [451, 451]
    assert node.wait_audit(lambda r: r["event"] == "limit.exceeded"
                           and r["actor"] == f"relay:{RELAY}")


class SourcedIMAP(imaplib.IMAP4):
    def __init__(self, node: Node, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", node.ports["imap"], timeout=10)
        self.starttls(ssl_context=node.client_context())

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def test_append_volume_per_window(node: Node) -> None:
    """bob's APPEND bytes: 3 x 6000 fit 20000, the 4th gets NO [LIMIT] (RFC 9051 §7.1),
    again after; alice's APPEND still works; one audit record."""
    big = b"Subject: a\r\n\r\n" + b"x" * (6000 - 16) + b"\r\n"
    answers = []
    client = SourcedIMAP(node, OTHER)
    try:
        client.login(BOB, PASSWORD)
        for _ in range(5):
            typ, data = client.append("INBOX", None, None, big)
            answers.append((typ, data[0]))
    finally:
        client.logout()
    assert [a[0] for a in answers] == ["OK"] * 3 + ["NO", "NO"]
    assert answers[3][1] == b"[LIMIT] APPEND volume limit reached, try again later"
    other = SourcedIMAP(node, OTHER)
    try:
        other.login(ALICE, PASSWORD)
        assert other.append("INBOX", None, None, big)[0] == "OK"
    finally:
        other.logout()
    assert node.wait_audit(lambda r: r["event"] == "limit.exceeded" and r["actor"] == BOB
                           and r["reason"] == "append_bytes")
    assert len([r for r in limit_records(node, BOB) if r["reason"] == "append_bytes"]) == 1


def node_inbox(node: Node, address: str) -> int:
    from tests.node import inbox_count

    return inbox_count(node, address)


@pytest.mark.backends("postgresql")
def test_two_nodes_share_one_count(tmp_path: Path, backend: str) -> None:
    """Two nodes on one PostgreSQL database: alice sends through both at once; the cap
    holds for the sum, and the limit is audited once for the cluster."""
    nodes = make_cluster(tmp_path, 2, extra_config=SENDING)
    for n in nodes:
        n.start()
    one_window()
    try:
        replies: list[int] = []
        lock = threading.Lock()

        def send(n: Node) -> None:
            with submit(n, ALICE, ATTACKER) as client:
                for i in range(15):
                    try:
                        client.sendmail(ALICE, [BOB], message(ALICE, BOB, i))
                        code = 250
                    except smtplib.SMTPSenderRefused as exc:
                        code = exc.smtp_code
                    except smtplib.SMTPDataError as exc:
                        code = exc.smtp_code
                        client.rset()
                    with lock:
                        replies.append(code)

        threads = [threading.Thread(target=send, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(replies) == [250] * MESSAGES + [451] * (30 - MESSAGES)
        assert nodes[0].wait_audit(lambda r: r["event"] == "limit.exceeded")
        time.sleep(1.0)
        assert len(limit_records(nodes[0], ALICE)) == 1
    finally:
        for n in nodes:
            n.stop()
