"""Encryption at rest and durability, proven on a real served node."""

from __future__ import annotations

import contextlib
import imaplib
import json
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from mss import crypto, db
from mss.app import open_app
from mss.mailstore import mailboxes, messages
from tests.node import BACKENDS, DOMAIN, PASSWORD, Node, make_node, read_all

BACKENDS = BACKENDS  # keys, durability, workers on both; SQLite-bound tests are marked

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
# The Message-ID is recorded in the audit trail on purpose: the marker is everywhere else.
MARKER = "ZQXJ-MARKER-7f3a9c"



def send_marker_mail(node: Node) -> str:
    """Submit the marker mail; its Message-ID (audited in clear, unlike the rest)."""
    message_id = f"<m1.{time.time_ns()}@demo>"
    body = (f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {MARKER} subject\r\n"
            f"X-Dossier: {MARKER}-header\r\nMessage-ID: {message_id}\r\n\r\n"
            f"Patient {MARKER} body line\r\n").encode()
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    client.starttls(context=node.client_context())
    client.login(ALICE, PASSWORD)
    assert client.sendmail(ALICE, [BOB, REMOTE], body) == {}
    client.quit()
    return message_id


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# SQLite: the database and its WAL are files in the data dir (PostgreSQL's are the
# server's)
@pytest.mark.backends("sqlite")
def test_no_plaintext_on_disk(fresh_node: Node) -> None:
    fresh_node.start()
    send_marker_mail(fresh_node)
    # the message is readable through the store, decrypted in memory
    assert any(MARKER.encode() in m for m in read_all(fresh_node, BOB))
    # WAL not yet checkpointed: grep the raw bytes of everything, -wal included
    wal = fresh_node.data_dir / "mss.db-wal"
    assert wal.exists() and wal.stat().st_size > 0
    assert files_containing(fresh_node.data_dir, MARKER.encode()) == []
    # also case and encoding variants a careless log might produce
    assert files_containing(fresh_node.data_dir, MARKER.lower().encode()) == []
    fresh_node.stop()
    assert files_containing(fresh_node.data_dir, MARKER.encode()) == []


@pytest.mark.backends("postgresql")
def test_no_plaintext_in_the_postgresql_database(fresh_node: Node) -> None:
    """The same on PostgreSQL: neither the rows of the node's database nor the server's
    write-ahead log (the bytes that reached its disk) hold the content; nor the data dir."""
    from tests.databases import postgresql_dump, postgresql_wal
    from tests.node import database_of

    fresh_node.start()
    message_id = send_marker_mail(fresh_node).encode()
    assert any(MARKER.encode() in m for m in read_all(fresh_node, BOB))
    url = database_of(fresh_node.config)
    rows, wal = postgresql_dump(url), postgresql_wal(url)
    assert message_id in rows and message_id in wal  # the search sees this mail's rows
    for needle in (MARKER.encode(), MARKER.lower().encode()):
        assert needle not in rows and needle not in wal
        assert files_containing(fresh_node.data_dir, needle) == []
    fresh_node.stop()


def test_key_rotation_keeps_old_mail_readable(fresh_node: Node) -> None:
    fresh_node.start()
    send_marker_mail(fresh_node)
    before = read_all(fresh_node, BOB)
    out = fresh_node.cli("keys", "rotate").stdout
    assert "master key version 2" in out
    status = {row["version"]: row for row in fresh_node.cli_json("keys", "status")}
    assert status[2]["current"] and status[2]["keys"] > 0
    assert status[1]["keys"] == 0  # every key re-wrapped
    assert read_all(fresh_node, BOB) == before
    send_marker_mail(fresh_node)  # the running server keeps working after rotation
    fresh_node.stop()
    assert len(read_all(fresh_node, BOB)) == 2
    rows = fresh_node.audit()
    assert any(r["event"] == "admin.keys.rotate" and r["outcome"] == 0 for r in rows)


def test_tampered_blob_detected(fresh_node: Node) -> None:
    fresh_node.start()
    send_marker_mail(fresh_node)
    fresh_node.stop()
    app = open_app(fresh_node.config)
    try:
        with app.engine.begin() as conn:
            row = conn.execute(select(db.messages.c.id, db.messages.c.body_blob)).first()
            assert row is not None
            blob = bytearray(row.body_blob)
            blob[40] ^= 0x01
            conn.execute(update(db.messages).where(db.messages.c.id == row.id)
                         .values(body_blob=bytes(blob)))
        with app.reader.connect() as conn, pytest.raises(crypto.TamperedError):
            mailbox = mailboxes.require_mailbox(conn, BOB)
            messages.read_message(conn, app.keyring, mailbox.id, 1)
        # a blob moved to another mailbox does not open either (AD binds the owner)
        with app.reader.connect() as conn:
            bob = mailboxes.require_mailbox(conn, BOB)
            alice = mailboxes.require_mailbox(conn, ALICE)
            good = conn.execute(select(db.messages).where(db.messages.c.mailbox_id == bob.id)
                                ).first()
            assert good is not None
            alice_key = app.keyring.key(crypto.mailbox_key_id(alice.id))
            with pytest.raises(crypto.TamperedError):
                crypto.open_message(alice_key, crypto.mailbox_key_id(alice.id), good.id,
                                    good.key_blob, good.body_blob)
    finally:
        app.close()


def test_wrong_or_missing_master_key_stops_startup(fresh_node: Node) -> None:
    key_file = fresh_node.data_dir / "keys" / "master.key"
    original = key_file.read_bytes()
    crypto.write_key_file(key_file, {1: b"\x01" * 32})
    out = fresh_node.cli("serve", check=False)
    assert out.returncode == 2
    assert "does not match this database" in out.stderr and len(out.stderr.splitlines()) == 1
    key_file.unlink()
    out = fresh_node.cli("serve", check=False)
    assert out.returncode == 2 and "is missing" in out.stderr
    key_file.write_bytes(original)
    key_file.chmod(0o644)
    out = fresh_node.cli("mailbox", "list", check=False)
    assert out.returncode == 2 and "chmod 600" in out.stderr
    key_file.chmod(0o600)
    assert fresh_node.cli("mailbox", "list").returncode == 0


def test_kill_9_during_burst_loses_no_acknowledged_message(fresh_node: Node) -> None:
    fresh_node.start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        ctx = fresh_node.mx_client_context()
        for i in range(200):  # bounded
            if stop.is_set():
                return
            msgid = f"<burst-{worker}-{i}@test>"
            body = (f"From: {REMOTE}\r\nTo: {BOB}\r\nSubject: burst\r\n"
                    f"Message-ID: {msgid}\r\n\r\nburst {worker} {i}\r\n").encode()
            try:
                client = smtplib.SMTP("127.0.0.1", fresh_node.ports["mx"], timeout=5)
                client.starttls(context=ctx)
                client.sendmail(REMOTE, [BOB], body)
            except (OSError, smtplib.SMTPException):
                return
            with lock:
                acknowledged.append(msgid)
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    fresh_node.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acknowledged) >= 60
    stored = b"\n".join(read_all(fresh_node, BOB))
    missing = [m for m in acknowledged if m.encode() not in stored]
    assert missing == []


def test_sigterm_exits_zero_and_audits_stop(fresh_node: Node) -> None:
    fresh_node.start()
    assert fresh_node.stop() == 0
    events = [r["event"] for r in fresh_node.audit()]
    assert events.count("server.start") == 1 and events.count("server.stop") == 1


def test_two_workers_share_the_ports(fresh_node: Node) -> None:
    text = fresh_node.config.read_text().replace('data_dir = "."', 'data_dir = "."\nworkers = 2')
    fresh_node.config.write_text(text)
    fresh_node.start()
    deadline = time.monotonic() + 15
    assert fresh_node.log_path is not None
    while fresh_node.log_path.read_text().count('"event": "ready"') < 2:
        assert time.monotonic() < deadline, "second worker not ready"
        time.sleep(0.05)
    for _ in range(6):
        send_marker_mail(fresh_node)
    assert fresh_node.stop() == 0
    assert len(read_all(fresh_node, BOB)) == 6
    events = [r["event"] for r in fresh_node.audit()]
    assert events.count("server.start") == 2 and events.count("server.stop") == 2
    rows = fresh_node.audit()
    for prev, row in zip(rows, rows[1:], strict=False):  # one chain across processes
        assert row["prev_hash"] == prev["hash"]


@pytest.mark.backends("sqlite")  # process handling only
def test_workers_stop_when_their_parent_is_killed(fresh_node: Node) -> None:
    """kill -9 of the ``mss serve`` that forked the workers (a signal it cannot forward):
    the workers stop by themselves instead of serving on as orphans."""
    text = fresh_node.config.read_text().replace('data_dir = "."', 'data_dir = "."\nworkers = 2')
    fresh_node.config.write_text(text)
    fresh_node.start()
    assert fresh_node.process is not None and fresh_node.log_path is not None
    deadline = time.monotonic() + 15
    while fresh_node.log_path.read_text().count('"event": "ready"') < 2:
        assert time.monotonic() < deadline, "second worker not ready"
        time.sleep(0.05)
    parent = fresh_node.process.pid
    workers = [int(pid) for pid in
               Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    assert len(workers) == 2
    fresh_node.process.kill()
    fresh_node.process.wait()
    fresh_node.process = None

    def gone(pid: int) -> bool:
        try:
            return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()  # exited
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in workers):
        assert time.monotonic() < deadline, "orphaned workers still serving"
        time.sleep(0.1)


def test_sigterm_finishes_data_in_flight(fresh_node: Node) -> None:
    fresh_node.start()
    tls = fresh_node.mx_tls_socket()
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO mx.operator-a.fr\r\n")
    while not tf.readline().startswith(b"250 "):
        pass
    tls.sendall(f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
    assert [tf.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    tls.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
    assert fresh_node.process is not None
    fresh_node.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the server is stopping, the transaction is still open
    tls.sendall(b"second half\r\n.\r\n")
    assert tf.readline().startswith(b"250 2.0.0")
    tls.close()
    assert fresh_node.process.wait(timeout=30) == 0
    fresh_node.process = None
    assert any(b"second half" in m for m in read_all(fresh_node, BOB))


# the SMTP session timer: no database in it
@pytest.mark.backends("sqlite")
def test_idle_session_times_out(fresh_node: Node) -> None:
    import socket

    text = fresh_node.config.read_text().replace("max_message_size = 52428800",
                                                  "max_message_size = 52428800\n"
                                                  "session_timeout = 1.0")
    fresh_node.config.write_text(text)
    fresh_node.start()
    sock = socket.create_connection(("127.0.0.1", fresh_node.ports["mx"]), timeout=10)
    assert sock.recv(1024).startswith(b"220")
    t0 = time.monotonic()
    # RFC 5321 §3.8: the server may close an idle session with a 421, then closes it
    assert sock.recv(1024).startswith(b"421 4.4.2 ")
    assert sock.recv(1024) == b""  # closed by the server
    assert 0.5 < time.monotonic() - t0 < 5
    sock.close()
    fresh_node.stop()


def test_disabled_mailbox_cannot_login_or_receive(fresh_node: Node) -> None:
    fresh_node.cli("mailbox", "disable", ALICE)
    fresh_node.start()
    client = smtplib.SMTP("127.0.0.1", fresh_node.ports["submission"], timeout=10)
    client.starttls(context=fresh_node.client_context())
    with pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(ALICE, PASSWORD)
    client.quit()
    client = smtplib.SMTP("127.0.0.1", fresh_node.ports["mx"], timeout=10)
    client.starttls(context=fresh_node.mx_client_context())
    client.ehlo("mx.operator-a.fr")
    assert client.mail(REMOTE)[0] == 250
    code, reply = client.rcpt(ALICE)
    assert (code, reply[:5]) == (550, b"5.1.1")
    client.quit()
    rows = fresh_node.wait_audit(lambda r: r["event"] == "smtp.auth" and r["outcome"] == 8)
    assert rows and rows[-1]["reason"] == "mailbox disabled"
    fresh_node.stop()


# SQLite: a TEXT column holding bytes that are not UTF-8 (PostgreSQL refuses to store them)
@pytest.mark.backends("sqlite")
def test_corrupt_password_hash_row_never_reaches_the_log(fresh_node: Node) -> None:
    """A mailboxes row whose password_hash is not valid UTF-8 (a corrupt page, a bad
    restore): SQLite's decode error quotes the column's text, so it must never be logged;
    the login fails like a wrong password (535 / NO) and the server goes on."""
    import imaplib
    import sqlite3

    db_file = fresh_node.data_dir / "mss.db"
    with sqlite3.connect(db_file) as conn:
        (stored,) = conn.execute("SELECT password_hash FROM mailboxes WHERE address = ?",
                                 (ALICE,)).fetchone()
        corrupt = stored.encode() + b"\xff\xfe"
        conn.execute("UPDATE mailboxes SET password_hash = CAST(? AS TEXT) WHERE address = ?",
                     (corrupt, ALICE))
    fresh_node.start()
    with smtplib.SMTP("127.0.0.1", fresh_node.ports["submission"], timeout=30) as client:
        client.starttls(context=fresh_node.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(ALICE, PASSWORD)
        assert refused.value.smtp_code == 535
    with imaplib.IMAP4_SSL("127.0.0.1", fresh_node.ports["imaps"],
                           ssl_context=fresh_node.client_context(), timeout=30) as imap, \
            pytest.raises(imaplib.IMAP4.error):
        imap.login(ALICE, PASSWORD)
    with smtplib.SMTP("127.0.0.1", fresh_node.ports["submission"], timeout=30) as client:
        client.starttls(context=fresh_node.client_context())
        client.login(f"bob@{DOMAIN}", PASSWORD)  # the server is fine for everyone else
    fresh_node.stop()
    assert fresh_node.log_path is not None
    log = fresh_node.log_path.read_text(errors="replace")
    salt_and_digest = stored.split("$", 3)[3]
    assert salt_and_digest not in log and "$scrypt$" not in log
    rows = [r for r in fresh_node.audit("--event", "smtp.auth")
            if r["mailbox"] == ALICE]
    assert rows and rows[-1]["outcome"] != 0
    assert salt_and_digest not in json.dumps(fresh_node.audit())


def test_log_redaction_of_driver_quoted_values_and_hashes() -> None:
    from mss.logs import redact
    from mss.passwords import hash_password, verify_password

    stored = hash_password("a password")
    line = ("OperationalError(\"(sqlite3.OperationalError) Could not decode to UTF-8 column "
            f"'password_hash' with text '{stored}\ufffd'\") [parameters: ('alice@x.fr',)]")
    clean = redact(line)
    assert stored not in clean and stored.split("$")[-1] not in clean
    assert "column 'password_hash' with text <redacted>" in clean and "alice@x.fr" in clean
    assert redact(f"hash={stored} next") == "hash=<redacted> next"
    for corrupt in (stored.replace("ln=14", "ln=99999999999"), stored.replace("ln=14", "ln=x"),
                    stored.rsplit("$", 1)[0], b"bytes", 42):
        assert verify_password("a password", corrupt) is False  # type: ignore[arg-type]


def test_in_process_nodes_do_not_share_state(tmp_path: Path) -> None:
    """Two in-process nodes, one after the other in this process, copied from one template
    (same folder ids, same UIDVALIDITY): the second never serves the first's folder
    snapshot, though its INBOX reaches the same UIDNEXT and HIGHESTMODSEQ."""
    flags = []
    for name, flag in (("first", "\\Flagged"), ("second", "")):
        node = make_node(tmp_path / name, with_whitelist=False, in_process=True)
        node.start()
        try:
            m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"],
                                  ssl_context=node.client_context(), timeout=10)
            m.login(BOB, PASSWORD)
            m.append("INBOX", f"({flag})" if flag else None, None,
                     f"From: {ALICE}\r\nSubject: s\r\n\r\nx\r\n".encode())
            m.select("INBOX")
            typ, data = m.fetch("1", "(FLAGS)")
            assert typ == "OK"
            flags.append(data[0])
            m.logout()
        finally:
            assert node.stop() == 0
    assert b"\\Flagged" in flags[0]
    assert b"\\Flagged" not in flags[1], flags
