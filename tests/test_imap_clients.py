"""IMAP end to end: the real server on loopback driven by imaplib, imapclient and aioimaplib.

Each test uses its own folder or its own messages so the module can share one node.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import imapclient
import pytest

from tests.node import (
    BACKENDS,
    DOMAIN,
    PASSWORD,
    Node,
    deliver_from_this_process,
    make_node,
    wait_for,
)
from tests.older import as_made_by_main

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
ORG = f"secretariat@{DOMAIN}"
ENABLED_CHECK = 0.5  # seconds: a disabled mailbox's session ends this soon (default 10)
NODE_CONFIG = f"\n[imap]\nenabled_check = {ENABLED_CHECK}\n"  # running_node's
IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)
# the store, folders, flags, grants, audit and two-process tests on both backends; those of
# the IMAP exchange alone ("protocol only") on SQLite
BACKENDS = BACKENDS


def message(subject: str, body: str = "Bonjour.\n", sender: str = ALICE, rcpt: str = BOB
            ) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg["Message-ID"] = f"<{time.time_ns()}@test.example>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def submit(node: Node, data: bytes, rcpt: str = BOB) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [rcpt], data) == {}


def imaps(node: Node, user: str = BOB) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=10)
    m.login(user, PASSWORD)
    return m


@pytest.fixture
def bob(running_node: Node) -> Iterator[imaplib.IMAP4_SSL]:
    m = imaps(running_node)
    yield m
    m.logout()


def new_folder(m: imaplib.IMAP4, name: str) -> str:
    assert m.create(name)[0] == "OK"
    return name


class Raw:
    """A raw TLS client for exact lines (pipelining, literals)."""

    def __init__(self, node: Node, source: str | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=10,
                                        source_address=(source, 0) if source else None)
        self.sock = node.client_context().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        assert self.line().startswith(b"* OK [CAPABILITY ")

    def line(self) -> bytes:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), data
        return data[:-2]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self, user: str = BOB) -> None:
        self.send(b"l LOGIN " + user.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
        assert self.until(b"l")[-1].startswith(b"l OK")

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- TLS and login

@pytest.mark.backends("sqlite")  # protocol only
def test_starttls_listener_hides_credentials_until_tls(running_node: Node) -> None:
    m = imaplib.IMAP4("127.0.0.1", running_node.ports["imap"], timeout=10)
    assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
    assert not any(c.startswith("AUTH=") for c in m.capabilities)
    typ, data = m._simple_command("LOGIN", BOB, f'"{PASSWORD}"')  # imaplib.login() refuses
    assert typ == "NO" and data[0].startswith(b"[PRIVACYREQUIRED]")
    m.starttls(ssl_context=running_node.client_context())
    assert "LOGINDISABLED" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
    assert m.login(BOB, PASSWORD)[0] == "OK"
    m.logout()


@pytest.mark.backends("sqlite")  # protocol only
def test_starttls_discards_commands_pipelined_in_clear(running_node: Node) -> None:
    """RFC 3501 §6.2.1 / CVE-2011-0411 class: a command sent in clear right behind STARTTLS
    must not be executed inside the TLS session."""
    sock = socket.create_connection(("127.0.0.1", running_node.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"* OK")
    sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert f.readline() == b"a OK Begin TLS negotiation now\r\n"
    tls = running_node.client_context().wrap_socket(sock)
    tls.sendall(b"c NOOP\r\n")
    tf = tls.makefile("rb")
    assert tf.readline() == b"c OK NOOP completed\r\n"
    tls.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_authenticate_plain_with_initial_response(running_node: Node) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", running_node.ports["imaps"],
                          ssl_context=running_node.client_context(), timeout=10)
    typ, _ = m.authenticate("PLAIN", lambda _: f"\0{BOB}\0{PASSWORD}".encode())
    assert typ == "OK"
    m.logout()
    rows = running_node.audit("--mailbox", BOB)
    assert any(r["event"] == "imap.login" and r["outcome"] == 0 for r in rows)


def test_wrong_password_is_refused_and_audited(running_node: Node) -> None:
    m = imaplib.IMAP4_SSL("127.0.0.1", running_node.ports["imaps"],
                          ssl_context=running_node.client_context(), timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(ALICE, "not the password")
    m.logout()
    rows = running_node.audit()
    assert any(r["event"] == "imap.login" and r["outcome"] == 8 and r["actor"] == ALICE
               for r in rows)


# --------------------------------------------------------------------------- core commands

def test_list_shows_special_use_folders(bob: imaplib.IMAP4_SSL) -> None:
    typ, data = bob.list()
    assert typ == "OK"
    lines = {d.decode() for d in data if isinstance(d, bytes)}
    for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                      ("Junk", "\\Junk"), ("Archive", "\\Archive")):
        assert any(line.endswith(f'"/" {name}') and use in line for line in lines), lines
    typ, data = bob._simple_command("LIST", '""', "*", "RETURN", "(SPECIAL-USE)")
    assert typ == "OK"
    typ, data = bob._untagged_response(typ, data, "LIST")
    lines = {d.decode() for d in data if isinstance(d, bytes)}
    assert any(line.endswith('"/" Sent') and "\\Sent" in line for line in lines), lines


def test_append_select_fetch_store_search_expunge(bob: imaplib.IMAP4_SSL) -> None:
    folder = new_folder(bob, "Core")
    raw = message("core test", "a body with the word pancreas\n")
    typ, data = bob.append(folder, "(\\Flagged)", imaplib.Time2Internaldate(time.time()), raw)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    bob.append(folder, None, None, message("second", "nothing here\n"))
    typ, data = bob.select(folder)
    assert typ == "OK" and data == [b"2"]
    typ, data = bob.uid("FETCH", "1", "(FLAGS RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == raw and b"\\Flagged" in data[0][0]
    assert f"RFC822.SIZE {len(raw)}".encode() in data[0][0]
    typ, data = bob.fetch("1:*", "(UID ENVELOPE)")
    assert typ == "OK" and b'"core test"' in data[0]
    typ, data = bob.search(None, "BODY", "pancreas")
    assert (typ, data) == ("OK", [b"1"])
    typ, data = bob.uid("SEARCH", "FLAGGED")
    assert data == [b"1"]
    typ, data = bob.store("2", "+FLAGS", "(\\Deleted)")
    assert typ == "OK" and b"\\Deleted" in data[0]
    typ, data = bob.expunge()
    assert (typ, data) == ("OK", [b"2"])
    typ, data = bob.fetch("1:*", "(UID)")
    assert data == [b"1 (UID 1)"]


def test_fetch_body_sets_seen_and_peek_does_not(bob: imaplib.IMAP4_SSL) -> None:
    folder = new_folder(bob, "Seen")
    bob.append(folder, None, None, message("seen"))
    bob.select(folder)
    bob.fetch("1", "(BODY.PEEK[HEADER])")
    assert b"\\Seen" not in bob.fetch("1", "(FLAGS)")[1][0]
    typ, data = bob.fetch("1", "(BODY[TEXT])")
    assert typ == "OK" and b"\\Seen" in data[0][0]


def test_copy_and_move_with_uidplus(bob: imaplib.IMAP4_SSL) -> None:
    src, dst = new_folder(bob, "Src"), new_folder(bob, "Dst")
    for i in range(3):
        bob.append(src, None, None, message(f"move {i}"))
    bob.select(src)
    typ, data = bob.uid("COPY", "1", dst)
    assert typ == "OK"
    code, values = bob.response("COPYUID")  # imaplib keeps response codes by name
    assert re.fullmatch(rb"\d+ 1 1", values[-1])
    typ, data = bob.uid("MOVE", "2:3", dst)
    assert typ == "OK"
    assert bob.select(src)[1] == [b"1"]
    assert bob.select(dst)[1] == [b"3"]
    typ, data = bob.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = sorted(d[1].strip() for d in data if isinstance(d, tuple))
    assert subjects == [b"Subject: move 0", b"Subject: move 1", b"Subject: move 2"]


def test_status_and_examine_is_read_only(bob: imaplib.IMAP4_SSL) -> None:
    folder = new_folder(bob, "Ro")
    bob.append(folder, None, None, message("ro"))
    typ, data = bob.status(folder, "(MESSAGES UNSEEN UIDNEXT)")
    assert data == [b"Ro (MESSAGES 1 UNSEEN 1 UIDNEXT 2)"]
    # UNSEEN counts messages without \Seen, whatever other flags or keywords they carry
    bob.append(folder, "(\\Seen $Seenish)", None, message("seen"))
    bob.append(folder, "($Seen \\Flagged)", None, message("keyword only"))
    bob.append(folder, "(\\Answered \\Seen)", None, message("answered"))
    typ, data = bob.status(folder, "(MESSAGES UNSEEN)")
    assert data == [b"Ro (MESSAGES 4 UNSEEN 2)"]
    bob.select(folder, readonly=True)
    typ, data = bob.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "NO" and data[0].startswith(b"[READ-ONLY]")


def test_unknown_mailbox_is_nonexistent(bob: imaplib.IMAP4_SSL) -> None:
    typ, data = bob.select("No/Such/Box")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]


def test_utf7_folder_names(bob: imaplib.IMAP4_SSL) -> None:
    assert bob.create('"Comptes-rendus &AOk-t&AOk-"')[0] == "OK"  # "Comptes-rendus été"
    typ, data = bob.list('""', "Comptes*")
    assert data == [b'(\\HasNoChildren) "/" "Comptes-rendus &AOk-t&AOk-"']
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        bob.create('"bad &Jjo!"')


# --------------------------------------------------------------------------- folder names at rest

def _raw_database(node: Node) -> bytes:
    """The database file and its WAL, as bytes on disk; read by another process: closing a
    descriptor of a file drops every POSIX lock this process holds on it, the in-process
    server's SQLite locks included (a later "disk I/O error", SQLite FAQ "How to corrupt").
    On PostgreSQL, every row of the node's database as ``pg_dump --data-only`` writes it
    (the server's files hold every test's databases)."""
    from tests.databases import postgresql_dump
    from tests.node import database_of

    url = database_of(node.config)
    if url.startswith("postgresql"):
        return postgresql_dump(url)
    files = [str(p) for p in sorted(node.data_dir.glob("mss.db*")) if p.is_file()]
    return subprocess.run(["cat", *files], capture_output=True, check=True).stdout


def _shipped(node: Node) -> bytes:
    """What audit shipping would send for every record (RFC 5424 + DICOM XML)."""
    from audit.dicom import audit_source
    from audit.shipper import syslog_message
    from mss.config import load_config

    source = audit_source(load_config(node.config))
    return b"".join(syslog_message(dict(r), source, "1") for r in node.audit())


def _listed(m: imaplib.IMAP4, pattern: str) -> set[str]:
    typ, data = m.list('""', pattern)
    assert typ == "OK"
    return {imapclient.imap_utf7.decode(re.sub(rb'^\(.*?\) "/" ', b"", line).strip(b'"'))
            for line in data if isinstance(line, bytes)}


def test_folder_names_are_encrypted_at_rest_and_never_audited(running_node: Node) -> None:
    """Issue 20 point 2: users name folders after patients; the name is content. CREATE,
    LIST (patterns matched after decryption), SELECT, APPEND, COPY, MOVE, RENAME and DELETE
    work, and neither the database file nor the audit trail nor what shipping sends holds
    the name."""
    m = imaps(running_node)
    assert m.create('"Dupont Jean"')[0] == "OK"
    assert m.create('"Patients/Dupont Marie"')[0] == "OK"  # and its superior "Patients"
    assert m.create('"Dupont Jean"')[0] == "NO"  # the keyed lookup keeps names unique
    assert _listed(m, "*Dupont*") == {"Dupont Jean", "Patients/Dupont Marie"}
    assert _listed(m, "Patients/%") == {"Patients/Dupont Marie"}
    assert m.append('"Dupont Jean"', None, None, message("compte rendu"))[0] == "OK"
    typ, data = m.select('"Dupont Jean"')
    assert typ == "OK" and data == [b"1"]
    assert m.copy("1", '"Patients/Dupont Marie"')[0] == "OK"
    assert m._simple_command("MOVE", "1", '"Patients/Dupont Marie"')[0] == "OK"
    m.close()
    assert m.status('"Patients/Dupont Marie"', "(MESSAGES)")[1] == [
        b'"Patients/Dupont Marie" (MESSAGES 2)']
    assert m.rename("Patients", '"Dupont Dossiers"')[0] == "OK"  # with its inferior
    assert _listed(m, "Dupont*") == {"Dupont Jean", "Dupont Dossiers",
                                     "Dupont Dossiers/Dupont Marie"}
    typ, data = m.select('"Dupont Dossiers/Dupont Marie"')
    assert typ == "OK" and data == [b"2"]
    m.close()
    assert m.delete('"Dupont Jean"')[0] == "OK"
    assert _listed(m, '"Dupont Jean"') == set()
    m.logout()
    for event in ("imap.folder.create", "imap.folder.rename", "imap.folder.delete",
                  "imap.move", "imap.select"):
        rows = running_node.audit("--event", event)
        assert rows and all("folder_id" in r["detail"] for r in rows  # type: ignore[operator]
                            if r["mailbox"] == BOB)
    assert b"Dupont" not in _raw_database(running_node)
    assert "Dupont" not in running_node.cli("audit", "list", "--json").stdout
    assert b"Dupont" not in _shipped(running_node)


@pytest.mark.backends("sqlite")  # SQLite: an older database file
def test_plaintext_folder_names_of_an_older_database_are_sealed_at_start(tmp_path: Path
                                                                         ) -> None:
    node = make_node(tmp_path)
    as_made_by_main(node)  # before migrations (tests/older.py), and older still:
    db = sqlite3.connect(node.data_dir / "mss.db")
    with db:  # the schema before names were sealed, with a folder
        db.execute("ALTER TABLE folders DROP COLUMN name_sealed")  # named in clear
        db.execute("INSERT INTO folders (mailbox_id, name, uidvalidity, uidnext, "
                   "highestmodseq, subscribed) SELECT id, 'Dupont Ancien', 1, 1, 1, 1 "
                   "FROM mailboxes WHERE address = ?", (BOB,))
    db.close()
    assert b"Dupont Ancien" in _raw_database(node)
    node.cli("db", "upgrade")  # serve refuses a schema older than its own
    node.start()
    try:
        m = imaps(node)
        assert _listed(m, "Dupont*") == {"Dupont Ancien"}
        assert m.select('"Dupont Ancien"')[0] == "OK"
        m.logout()
        assert b"Dupont" not in _raw_database(node)
    finally:
        node.stop()


# --------------------------------------------------------------------------- round trip

def test_smtp_submission_round_trip_is_byte_exact(running_node: Node,
                                                   bob: imaplib.IMAP4_SSL) -> None:
    raw = message("round trip", "ligne 1\nligne accentuée\n.\n..point\n")
    submit(running_node, raw)
    bob.select("INBOX")
    typ, data = bob.uid("SEARCH", "HEADER", "Message-ID",
                        re.search(rb"Message-ID: (<[^>]+>)", raw).group(1).decode())
    uid = data[0].split()[-1]
    typ, data = bob.uid("FETCH", uid, "(BODY.PEEK[])")
    fetched = data[0][1]
    assert fetched.endswith(raw)
    trace = fetched[:-len(raw)]
    assert trace.startswith(b"Received: ") and trace.endswith(b"\r\n")


# --------------------------------------------------------------------------- concurrency

def test_two_sessions_see_each_others_changes(running_node: Node) -> None:
    a, b = imaps(running_node), imaps(running_node)
    folder = new_folder(a, "Shared-view")
    a.append(folder, None, None, message("one"))
    a.append(folder, None, None, message("two"))
    a.select(folder)
    b.select(folder)
    b.store("1", "+FLAGS", "(\\Flagged)")
    b.append(folder, None, None, message("three"))
    a.noop()
    untagged = a.untagged_responses
    assert b"1 (UID 1 FLAGS (\\Flagged \\Recent))" in untagged.get("FETCH", []), untagged
    assert untagged.get("EXISTS", [])[-1:] == [b"3"]
    b.store("2", "+FLAGS", "(\\Deleted)")
    b.expunge()
    typ, data = a.noop()
    assert a.untagged_responses.get("EXPUNGE") == [b"2"]
    a.logout()
    b.logout()


async def _idle_sees_delivery(node: Node) -> float:
    client = aioimaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"],
                                  ssl_context=node.client_context(), timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(BOB, PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    idle = await client.idle_start(timeout=10)
    await asyncio.sleep(0.2)
    start = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, submit, node, message("idle"))
    sent = time.monotonic()
    pushed = await client.wait_server_push(timeout=5)
    seen = time.monotonic()
    assert any(b"EXISTS" in line if isinstance(line, bytes) else "EXISTS" in line
               for line in pushed), pushed
    client.idle_done()
    await asyncio.wait_for(idle, 5)
    await client.logout()
    del start
    return seen - sent


def test_idle_reports_smtp_delivery_within_one_second(running_node: Node) -> None:
    delay = asyncio.run(_idle_sees_delivery(running_node))
    assert delay < 1.0


def test_idle_sees_another_sessions_store_and_expunge(running_node: Node) -> None:
    other = imaps(running_node)
    folder = new_folder(other, "Idle-peer")
    other.append(folder, None, None, message("peer 1"))
    other.append(folder, None, None, message("peer 2"))
    raw = Raw(running_node)
    raw.login()
    raw.send(f"s SELECT {folder}\r\n".encode())
    raw.until(b"s")
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling"
    other.select(folder)
    started = time.monotonic()
    other.store("1", "+FLAGS", "(\\Flagged)")
    assert raw.line() == b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))"  # raw selected first
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    line = raw.line()
    if line.startswith(b"* 2 FETCH"):  # the \\Deleted flag, unless the expunge came first
        assert line == b"* 2 FETCH (UID 2 FLAGS (\\Deleted \\Recent))"
        line = raw.line()
    assert line == b"* 2 EXPUNGE"
    assert time.monotonic() - started < 2.0
    raw.send(b"DONE\r\n")
    assert raw.line() == b"i OK IDLE terminated"
    raw.close()
    other.logout()


def test_idle_sees_other_processes_commits_without_polling(tmp_path: Path) -> None:
    """Issue 20 #9: IDLE is woken by the commit (the process's change watcher for commits
    of other processes), not by re-reading the folder: with workers = 2 and the per-session
    safety poll at 30 s, every delivery (SMTP to either worker, or a commit of another
    process) is reported within a second."""
    node = make_node(tmp_path, extra_config="\n[imap]\nidle_poll = 30.0\n")
    node.config.write_text(node.config.read_text().replace(
        'data_dir = "."', 'data_dir = "."\nworkers = 2'))
    node.start()
    try:
        assert node.log_path is not None
        assert wait_for(lambda: node.log_path is not None  # type: ignore[union-attr]
                        and node.log_path.read_text().count('"event": "ready"') == 2, 15)
        raw = Raw(node)
        raw.login()
        raw.send(b"s SELECT INBOX\r\n")
        raw.until(b"s")
        raw.send(b"i IDLE\r\n")
        assert raw.line() == b"+ idling"
        delays = []
        for i in range(5):  # new SMTP connections: SO_REUSEPORT spreads them over both
            if i == 4:
                deliver_from_this_process(node, BOB, message("from elsewhere"))
            else:
                submit(node, message(f"idle {i}"))
            committed = time.monotonic()  # the 250 (or the commit) came back
            while (line := raw.line()) != b"* %d EXISTS" % (i + 1):
                assert line.endswith(b" RECENT"), line
            delays.append(time.monotonic() - committed)
        assert max(delays) < 1.0, delays
        raw.send(b"DONE\r\n")
        while (line := raw.line()) != b"i OK IDLE terminated":
            assert line.endswith(b" RECENT"), line  # RFC 3501 §7.3.2 after each EXISTS
        raw.close()
    finally:
        node.stop()


@pytest.mark.backends("sqlite")  # protocol only
def test_commands_pipelined_after_done(running_node: Node) -> None:
    raw = Raw(running_node)
    raw.login()
    raw.send(b"s SELECT INBOX\r\n")
    raw.until(b"s")
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling"
    raw.send(b"DONE\r\nn NOOP\r\nc CAPABILITY\r\nx LOGOUT\r\n")  # one write (iOS Mail)
    assert raw.until(b"i")[-1] == b"i OK IDLE terminated"
    assert raw.until(b"n")[-1] == b"n OK NOOP completed"
    assert raw.until(b"c")[-1] == b"c OK CAPABILITY completed"
    assert raw.until(b"x")[-2:] == [b"* BYE mss IMAP4rev1 server logging out",
                                    b"x OK LOGOUT completed"]
    raw.close()


# --------------------------------------------------------------------------- bad input

@pytest.mark.backends("sqlite")  # protocol only
def test_literal_too_large_refused_before_its_bytes(running_node: Node) -> None:
    raw = Raw(running_node)
    raw.login()
    raw.send(b"a APPEND INBOX {999999999999}\r\n")  # synchronising: no byte follows
    assert raw.line() == b"a BAD [TOOBIG] Literal too large"
    raw.send(b"b NOOP\r\n")
    assert raw.until(b"b")[-1] == b"b OK NOOP completed"
    raw.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_malformed_commands_get_bad_and_session_stays(running_node: Node) -> None:
    raw = Raw(running_node)
    raw.send(b"\r\n")
    assert raw.line() == b"* BAD Missing or invalid tag"
    raw.send(b"a1 FROB\r\n")
    assert raw.line() == b"a1 BAD Unknown command"
    raw.send(b"a2 SELECT INBOX\r\n")
    assert raw.line() == b"a2 BAD Command not valid in this state"
    raw.send(b"a3 LOGIN \"unterminated\r\n")
    assert raw.line() == b"a3 BAD Unterminated quoted string"
    raw.send(b"a4 " + b"X" * 70000 + b"\r\n")
    assert raw.line() == b"a4 BAD Command line too long"
    raw.login()
    raw.send(b"a5 SELECT INBOX\r\n")
    raw.until(b"a5")
    raw.send(b"a6 FETCH 1:x FLAGS\r\n")
    assert raw.line().startswith(b"a6 BAD ")
    raw.send(b"a7 SEARCH CHARSET KOI8-R ALL\r\n")
    assert raw.until(b"a7")[-1].startswith(b"a7 NO [BADCHARSET")
    raw.send(b"a8 NOOP\r\n")
    assert raw.until(b"a8")[-1] == b"a8 OK NOOP completed"
    raw.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_syntax_is_bad_before_any_output_or_refusal(running_node: Node) -> None:
    """Arguments are parsed before the command runs: an unknown STATUS item of LIST-STATUS
    (RFC 5819) is BAD with no LIST line sent first, even when no folder matches; a bad
    sequence set is BAD before STORE's read-only refusal."""
    raw = Raw(running_node)
    raw.login()
    raw.send(b'b1 LIST "" * RETURN (STATUS (MESSAGES BOGUS))\r\n')
    assert raw.until(b"b1") == [b"b1 BAD Unknown STATUS item BOGUS"]
    raw.send(b'b2 LIST "" NoSuchFolder* RETURN (STATUS (BOGUS))\r\n')
    assert raw.until(b"b2") == [b"b2 BAD Unknown STATUS item BOGUS"]
    raw.send(b"b3 EXAMINE INBOX\r\n")
    assert raw.until(b"b3")[-1].startswith(b"b3 OK [READ-ONLY]")
    raw.send(b"b4 STORE 1:x +FLAGS (\\Seen)\r\n")
    assert raw.until(b"b4")[-1].startswith(b"b4 BAD ")
    raw.close()


def test_corrupt_ciphertext_answers_no_and_is_audited(running_node: Node,
                                                      bob: imaplib.IMAP4_SSL) -> None:
    folder = new_folder(bob, "Tamper")
    bob.append(folder, None, None, message("tamper"))
    bob.append(folder, None, None, message("intact"))
    appended = [r for r in running_node.audit("--event", "imap.append")
                if r["mailbox"] == BOB][-2]  # "tamper": its store id (names are sealed)
    _flip_last_body_bit(running_node, str(appended["detail"]["store_id"]))  # type: ignore[index]
    bob.select(folder)
    typ, data = bob.uid("FETCH", "1:2", "(BODY.PEEK[])")
    assert typ == "NO"
    assert bob.uid("FETCH", "2", "(BODY.PEEK[])")[0] == "OK"
    rows = running_node.wait_audit(lambda r: r["event"] == "store.tampered")
    assert rows and rows[-1]["outcome"] == 12


def _flip_last_body_bit(node: Node, store_id: str) -> None:
    """Corrupt one stored message's ciphertext, through the node's own database URL."""
    from sqlalchemy import select, update

    from mss import db
    from mss.config import load_config

    engine = db.make_engine(load_config(node.config).database_url)
    try:
        with engine.begin() as conn:
            m = db.messages
            blob = bytearray(conn.execute(select(m.c.body_blob).where(m.c.id == store_id)
                                          ).scalar_one())
            blob[-1] ^= 0x01
            conn.execute(update(m).where(m.c.id == store_id).values(body_blob=bytes(blob)))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- sharing

def test_grant_and_revoke_shared_mailbox(running_node: Node) -> None:
    running_node.cli("mailbox", "grant", ORG, BOB)
    submit(running_node, message("pour le secrétariat", rcpt=ORG), rcpt=ORG)
    m = imaps(running_node)
    typ, data = m.list('""', "Shared/*")
    names = [d.decode() for d in data]
    assert f'(\\HasNoChildren) "/" Shared/{ORG}/INBOX' in names
    typ, data = m.select(f"Shared/{ORG}/INBOX")
    assert typ == "OK" and int(data[0]) >= 1
    rows = running_node.wait_audit(lambda r: r["event"] == "imap.delegated")
    assert rows and rows[-1]["actor"] == BOB and rows[-1]["mailbox"] == ORG
    running_node.cli("mailbox", "revoke", ORG, BOB)
    with pytest.raises(imaplib.IMAP4.abort):
        m.noop()  # BYE: access revoked
    m2 = imaps(running_node)
    assert m2.select(f"Shared/{ORG}/INBOX")[0] == "NO"
    m2.logout()
    proc = running_node.cli("mailbox", "grant", BOB, ALICE, check=False)
    assert proc.returncode == 2 and "only ORG, APP and CAB" in proc.stderr


def test_disabled_shared_mailbox_ends_the_grantees_session(running_node: Node) -> None:
    shared = f"direction@{DOMAIN}"
    running_node.cli("mailbox", "add", shared, "--type", "ORG", "--finess", "750000002",
                     "--no-password")
    running_node.cli("mailbox", "grant", shared, BOB)
    raw = Raw(running_node)
    raw.login()
    raw.send(f'e EXAMINE "Shared/{shared}/INBOX"\r\n'.encode())
    assert raw.until(b"e")[-1].startswith(b"e OK")
    running_node.cli("mailbox", "disable", shared)  # the grant stays, the access ends
    raw.send(b"n NOOP\r\n")
    assert raw.line() == b"* BYE Selected mailbox was deleted or access revoked"
    raw.close()
    m = imaps(running_node)
    assert m.select(f"Shared/{shared}/INBOX", readonly=True)[0] == "NO"
    m.logout()


def test_fetch_content_is_audited_before_it_leaves(running_node: Node) -> None:
    """A client that has read the first bytes of a large FETCH and stalls has already been
    recorded for all of it (Session.flush commits the records of content before writing
    it; over TLS the transport takes the whole batch at once, so the order itself is not
    observable from the client side)."""
    m = imaps(running_node)
    folder = new_folder(m, f"Big{time.time_ns()}")
    for i in range(8):  # 12 MB: more than the client's socket buffer holds
        assert m.append(folder, None, None, message(f"big {i}", ("y" * 75 + "\n") *
                                                     20_000))[0] == "OK"
    m.logout()
    folder_id = running_node.audit("--event", "imap.append")[-1]["detail"][  # type: ignore[index]
        "folder_id"]  # audit records name folders by id
    raw = Raw(running_node)
    raw.login()
    raw.send(f"s SELECT {folder}\r\n".encode())
    raw.until(b"s")
    raw.send(b"f UID FETCH 1:* BODY.PEEK[]\r\n")
    assert raw.file.read(4096)  # the first bytes of the content; then the client stalls
    rows = running_node.wait_audit(lambda r: r["event"] == "imap.fetch"
                                   and r["detail"].get("folder_id") == folder_id)  # type: ignore[union-attr]
    raw.close()
    assert rows and sum(len(r["detail"]["messages"]) for r in rows) == 8  # type: ignore[index]


# --------------------------------------------------------------------------- other clients

def test_imapclient(running_node: Node) -> None:
    client = imapclient.IMAPClient("127.0.0.1", port=running_node.ports["imaps"],
                                   ssl_context=running_node.client_context(), timeout=10)
    client.login(BOB, PASSWORD)
    assert b"MOVE" in client.capabilities()
    client.create_folder("Imapclient")
    client.append("Imapclient", message("via imapclient"), flags=[b"\\Seen"])
    info = client.select_folder("Imapclient")
    assert info[b"EXISTS"] == 1 and b"UIDVALIDITY" in info
    uids = client.search(["SUBJECT", "imapclient"])
    assert uids == [1]
    fetched = client.fetch(uids, ["ENVELOPE", "FLAGS", "BODYSTRUCTURE"])
    assert fetched[1][b"ENVELOPE"].subject == b"via imapclient"
    client.add_flags(uids, [b"$Label1"])
    assert b"$Label1" in client.get_flags(uids)[1]
    client.move(uids, "Archive")
    assert client.select_folder("Imapclient")[b"EXISTS"] == 0
    assert client.namespace().personal == (("", "/"),)
    client.logout()


async def _aioimaplib_session(node: Node) -> None:
    client = aioimaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"],
                                  ssl_context=node.client_context(), timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(BOB, PASSWORD)).result == "OK"
    assert (await client.create("Aio")).result == "OK"
    assert (await client.append(message("aio"), mailbox="Aio")).result == "OK"
    assert (await client.select("Aio")).result == "OK"
    response = await client.uid("fetch", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert response.result == "OK"
    assert any(b"Subject: aio" in bytes(line) for line in response.lines
               if isinstance(line, bytes | bytearray)), response.lines
    response = await client.uid_search("ALL")
    assert response.result == "OK"
    await client.logout()


@pytest.mark.backends("sqlite")  # protocol only
def test_aioimaplib(running_node: Node) -> None:
    asyncio.run(_aioimaplib_session(running_node))


# --------------------------------------------------------------------------- throttling (last)

@pytest.mark.backends("sqlite")  # protocol only
def test_login_throttling_per_address(running_node: Node) -> None:
    source = "127.0.0.9"  # its own client address: the rest of the module is not locked
    raw = Raw(running_node, source=source)
    for i in range(5):
        raw.send(b"t%d LOGIN nobody@%s wrong\r\n" % (i, DOMAIN.encode()))
        assert raw.until(b"t%d" % i)[-1] == b"t%d NO [AUTHENTICATIONFAILED] " \
            b"Authentication failed" % i
    raw.send(f't9 LOGIN {BOB} "{PASSWORD}"\r\n'.encode())  # right password, locked address
    assert raw.until(b"t9")[-1] == b"t9 NO [UNAVAILABLE] Too many failed logins, try again later"
    raw.close()
    rows = running_node.wait_audit(lambda r: r["event"] == "imap.login" and
                                   r["reason"] == "throttled")
    assert rows and rows[-1]["remote_addr"] == source
    ok = imaps(running_node)  # from 127.0.0.1 bob still logs in
    ok.logout()


@pytest.mark.backends("sqlite")  # protocol only
def test_login_throttling_per_user(running_node: Node) -> None:
    """Five failures for one user from five addresses lock the user, not the addresses."""
    user = f"alice@{DOMAIN}"  # may already have one failure (test_wrong_password_...)
    failures = 0
    for i in range(5):
        raw = Raw(running_node, source=f"127.0.0.{20 + i}")
        raw.send(f"u{i} LOGIN {user} wrong\r\n".encode())
        reply = raw.until(b"u%d" % i)[-1]
        raw.close()
        if reply.startswith(b"u%d NO [UNAVAILABLE]" % i):
            break
        assert reply.startswith(b"u%d NO [AUTHENTICATIONFAILED]" % i)
        failures += 1
    assert failures >= 4
    raw = Raw(running_node, source="127.0.0.30")
    raw.send(f'u9 LOGIN {user} "{PASSWORD}"\r\n'.encode())
    assert raw.until(b"u9")[-1] == b"u9 NO [UNAVAILABLE] Too many failed logins, try again later"
    raw.send(f'u8 LOGIN bob@{DOMAIN} "{PASSWORD}"\r\n'.encode())  # the address is not locked
    assert raw.until(b"u8")[-1].startswith(b"u8 OK")
    raw.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_tls_only_on_imaps(running_node: Node) -> None:
    """Plaintext on the implicit-TLS port gets no IMAP response (a TLS alert or a close)."""
    with socket.create_connection(("127.0.0.1", running_node.ports["imaps"]), timeout=5) as s:
        try:
            s.sendall(b"a CAPABILITY\r\n")
            data = s.recv(100)
        except OSError:  # reset by the server: no greeting either
            data = b""
    assert not data.startswith(b"* "), data


def test_preauth_and_idle_timeouts(tmp_path: object) -> None:
    """RFC 3501 §5.4 autologout: shortened timeouts on a node of its own."""
    from pathlib import Path

    from tests.node import make_node

    node = make_node(Path(str(tmp_path)), with_whitelist=False,
                     extra_config="\n[imap]\npreauth_timeout = 1.0\nsession_timeout = 2.0\n")
    node.start()
    try:
        raw = Raw(node)
        started = time.monotonic()
        assert raw.line() == b"* BYE Autologout; idle for too long"
        assert 0.8 < time.monotonic() - started < 5
        raw.close()
        raw = Raw(node)
        raw.login()
        raw.send(b"s SELECT INBOX\r\ni IDLE\r\n")
        raw.until(b"s")
        assert raw.line() == b"+ idling"
        started = time.monotonic()
        assert raw.line() == b"* BYE Autologout; idle for too long"
        assert 1.5 < time.monotonic() - started < 6
        raw.close()
    finally:
        node.stop()


def test_mbsync_over_starttls(tmp_path: object) -> None:
    """The mbsync two-way sync (tests/test_imap_mbsync.py) through the STARTTLS listener."""
    from tests import peers

    peers.require_peer("mbsync", "isync")  # skipped locally, failed under CI
    from pathlib import Path

    from tests.node import make_node
    from tests.test_imap_mbsync import Endpoint, deliver, two_way_sync

    base = Path(str(tmp_path))
    node = make_node(base / "n", with_whitelist=False)
    node.start()
    try:
        deliver(node, 100)
        endpoint = Endpoint(node.ports["imap"], BOB, PASSWORD,
                            (node.data_dir / "pki" / "server.crt").read_text(),
                            node.client_context(), starttls=True)
        (base / "sync").mkdir()
        two_way_sync(endpoint, base / "sync", 100)
    finally:
        node.stop()


def test_disabled_mailbox_sessions_end(running_node: Node) -> None:
    carol = f"carol@{DOMAIN}"
    running_node.cli("mailbox", "add", carol, "--type", "PER", "--rpps", "10000000003",
                     "--password-stdin", input=PASSWORD + "\n")
    raw = Raw(running_node)
    raw.login(carol)
    running_node.cli("mailbox", "disable", carol)
    # its registry row marked ended in the same transaction: BYE at once, unasked
    assert raw.line() == b"* BYE Session ended by the administrator"
    raw.close()
    m = imaplib.IMAP4_SSL("127.0.0.1", running_node.ports["imaps"],
                          ssl_context=running_node.client_context(), timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(carol, PASSWORD)
    m.logout()


@pytest.mark.backends("sqlite")  # protocol only
def test_too_many_bad_commands_end_the_session(running_node: Node) -> None:
    raw = Raw(running_node, source="127.0.0.40")
    raw.login()
    for i in range(19):
        raw.send(b"e%d NOOP extra\r\n" % i)  # BAD from the handler
        assert raw.line() == b"e%d BAD Wrong number of arguments" % i
    raw.send(b"e19 FROB\r\n")
    assert raw.line() == b"e19 BAD Unknown command"
    assert raw.line() == b"* BYE Too many invalid commands"
    assert raw.file.readline() == b""
    raw.close()


# --------------------------------------------------------------------------- store semantics

def _uidvalidity(m: imaplib.IMAP4) -> int:
    return int(m.response("UIDVALIDITY")[1][-1])


def test_recreated_folder_gets_new_uidvalidity_and_its_own_messages(running_node: Node
                                                                    ) -> None:
    """RFC 3501 §2.3.1.1: a folder deleted and recreated at once gets a higher UIDVALIDITY,
    and no session (this one or a new one) is served the deleted folder's message list."""
    a = imaps(running_node)
    folder = new_folder(a, "Recreated")
    a.append(folder, None, None, message("before delete", "avant\n"))
    a.select(folder)
    first = _uidvalidity(a)
    assert a.uid("FETCH", "1", "(BODY.PEEK[])")[1][0][1].endswith(b"avant\r\n")
    a.close()
    assert a.delete(folder)[0] == "OK"
    new_folder(a, folder)
    a.append(folder, None, None, message("after recreate", "apres\n"))
    for session in (a, imaps(running_node)):
        typ, data = session.select(folder)
        assert (typ, data) == ("OK", [b"1"])
        assert _uidvalidity(session) > first
        typ, data = session.uid("FETCH", "1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1].endswith(b"apres\r\n"), data
        assert session.search(None, "BODY", "apres") == ("OK", [b"1"])
        session.logout()


def _flags(m: imaplib.IMAP4, uid: str = "1") -> set[str]:
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    found = re.search(rb"FLAGS \(([^)]*)\)", data[-1] if isinstance(data[-1], bytes) else b"")
    assert typ == "OK" and found, data
    return set(found.group(1).decode().split())


def test_concurrent_stores_keep_each_others_flags(running_node: Node) -> None:
    """RFC 3501 §6.4.6: +FLAGS/-FLAGS change the flags the message has, not the flags a
    session last saw: two sessions' STOREs on one message both take effect."""
    a, b = imaps(running_node), imaps(running_node)
    folder = new_folder(a, "Store-race")
    a.append(folder, "(\\Seen)", None, message("race"))
    a.select(folder)
    b.select(folder)  # b's copy: \Seen only
    a.uid("STORE", "1", "+FLAGS.SILENT", "(\\Answered $Label1)")
    typ, data = b.uid("STORE", "1", "-FLAGS", "(\\Seen)")
    assert typ == "OK" and b"\\Answered" in b" ".join(d for d in data if d), data
    b.uid("STORE", "1", "+FLAGS.SILENT", "($Label2)")
    a.uid("STORE", "1", "-FLAGS.SILENT", "($Label1)")
    fresh = imaps(running_node)
    fresh.select(folder, readonly=True)
    assert _flags(fresh) == {"\\Answered", "$Label2"}
    # only the rows a STORE changes get a new MODSEQ (RFC 7162 §3.1.3)
    before = fresh.uid("FETCH", "1", "(MODSEQ)")[1][0]
    a.uid("STORE", "1", "+FLAGS.SILENT", "(\\Answered)")  # already set: no change
    fresh.noop()
    assert fresh.uid("FETCH", "1", "(MODSEQ)")[1][0] == before
    for m in (a, b, fresh):
        m.logout()


def test_deleting_the_selected_mailbox_keeps_the_session(running_node: Node) -> None:
    """RFC 3501 §6.3.4: DELETE of the selected mailbox (by this session or another) ends
    the selection, not the session: no BYE, the next commands are answered."""
    own, other = Raw(running_node), Raw(running_node)
    own.login()
    other.login()
    own.send(b'c CREATE "Gone-own"\r\nc2 CREATE "Gone-other"\r\ns SELECT "Gone-own"\r\n')
    own.until(b"s")
    own.send(b'd DELETE "Gone-own"\r\n')
    lines = own.until(b"d")
    assert lines == [b"* OK [CLOSED] Selected mailbox was deleted", b"d OK DELETE completed"]
    own.send(b"f FETCH 1 (FLAGS)\r\nn NOOP\r\ne EXAMINE \"Gone-other\"\r\n")
    assert own.until(b"f")[-1] == b"f BAD Command not valid in this state"
    assert own.until(b"n") == [b"n OK NOOP completed"]
    assert own.until(b"e")[-1].startswith(b"e OK [READ-ONLY]")
    other.send(b'd DELETE "Gone-other"\r\n')
    assert other.until(b"d")[-1] == b"d OK DELETE completed"
    own.send(b"n2 NOOP\r\nl LIST \"\" INBOX\r\n")
    assert own.until(b"n2") == [b"* OK [CLOSED] Selected mailbox was deleted",
                                b"n2 OK NOOP completed"]
    assert own.until(b"l")[-1] == b"l OK LIST completed"
    own.close()
    other.close()


def test_revoked_grant_serves_no_further_command(running_node: Node) -> None:
    """The grant is checked before a command on a delegated selection runs: after
    `mss mailbox revoke`, the next FETCH gets BYE and not one byte of the shared box."""
    shared = f"accueil@{DOMAIN}"
    running_node.cli("mailbox", "add", shared, "--type", "ORG", "--finess", "750000003",
                     "--no-password")
    running_node.cli("mailbox", "grant", shared, BOB)
    submit(running_node, message("Confidentiel accueil", rcpt=shared), rcpt=shared)
    raw = Raw(running_node)
    raw.login()
    raw.send(f'e EXAMINE "Shared/{shared}/INBOX"\r\n'.encode())
    assert raw.until(b"e")[-1].startswith(b"e OK")
    running_node.cli("mailbox", "revoke", shared, BOB)
    raw.send(b"f UID FETCH 1:* (BODY.PEEK[HEADER])\r\n")
    assert raw.line() == b"* BYE Selected mailbox was deleted or access revoked"
    assert raw.file.read() == b""  # closed: nothing of the message was sent
    raw.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_client_refusal_is_logged_at_info_not_error(running_node: Node) -> None:
    """A NO the client earned (CREATE of an existing folder) is an ordinary answer: the
    server log has it at info, no error line."""
    offset = running_node.log_path.stat().st_size
    m = imaps(running_node)
    new_folder(m, "Twice")
    typ, data = m.create("Twice")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    m.logout()
    assert wait_for(lambda: b"commit refused" in running_node.log_path.read_bytes()[offset:],
                    timeout=5)
    logged = running_node.log_path.read_bytes()[offset:].decode().splitlines()
    assert not [line for line in logged if '"level": "error"' in line], logged
    assert [line for line in logged if "commit refused" in line
            and '"level": "info"' in line], logged


def test_recent_is_seen_by_exactly_one_session(running_node: Node) -> None:
    """RFC 3501 §2.3.2: a new message is \\Recent for the first session that SELECTs the
    folder (or is told of it by EXISTS) after it arrived, and for no other; EXAMINE shows
    it without taking it. `* n RECENT`, FLAGS, SEARCH RECENT/NEW/OLD and STATUS agree."""
    a, b, c, d = (imaps(running_node) for _ in range(4))
    folder = new_folder(d, "Recent")
    d.append(folder, None, None, message("recent one"))
    assert d.status(folder, "(RECENT)")[1] == [b"Recent (RECENT 1)"]
    a.select(folder, readonly=True)  # EXAMINE: sees it, does not take it
    assert a.response("RECENT")[1] == [b"1"]
    assert "\\Recent" in _flags(a) and a.search(None, "RECENT") == ("OK", [b"1"])
    b.select(folder)  # the first SELECT takes it
    assert b.response("RECENT")[1] == [b"1"]
    assert "\\Recent" in _flags(b)
    assert b.search(None, "NEW") == ("OK", [b"1"]) and b.search(None, "OLD") == ("OK", [b""])
    c.select(folder)
    assert c.response("RECENT")[1] == [b"0"]
    assert "\\Recent" not in _flags(c) and c.search(None, "OLD") == ("OK", [b"1"])
    assert d.status(folder, "(RECENT)")[1] == [b"Recent (RECENT 0)"]
    d.append(folder, None, None, message("recent two"))
    c.noop()  # the first session told of the new message takes it
    assert c.response("EXISTS")[1][-1] == b"2" and c.response("RECENT")[1][-1] == b"1"
    assert "\\Recent" in _flags(c, "2")
    b.noop()
    assert b.response("RECENT")[1][-1] == b"1"  # still only its first one
    assert "\\Recent" not in _flags(b, "2") and b.search(None, "RECENT") == ("OK", [b"1"])
    typ, data = b.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    assert typ == "OK" and b"\\Recent" in data[0], data  # not stored, still reported
    for m in (a, b, c, d):
        m.logout()


def _keywords_announced_first(lines: list[bytes], announced: set[str]) -> set[str]:
    """RFC 3501 §7.2.6: every keyword a FETCH shows was in an earlier * FLAGS."""
    for line in lines:
        listed = re.match(rb"\* FLAGS \(([^)]*)\)", line)
        if listed:
            announced = set(listed.group(1).decode().split())
        shown = re.match(rb"\* \d+ FETCH .*FLAGS \(([^)]*)\)", line)
        if shown:
            keywords = {f for f in shown.group(1).decode().split() if not f.startswith("\\")}
            assert keywords <= announced, (line, announced, lines)
    return announced


def test_new_keywords_are_announced_before_fetch_shows_them(running_node: Node) -> None:
    d = imaps(running_node)
    folder = new_folder(d, "Keywords")
    d.append(folder, None, None, message("kw"))
    a, b = Raw(running_node), Raw(running_node)
    seen = {}
    for name, raw in (("a", a), ("b", b)):
        raw.login()
        raw.send(f"s SELECT {folder}\r\n".encode())
        seen[name] = _keywords_announced_first(raw.until(b"s"), set())
    a.send(b"k STORE 1 +FLAGS ($Alpha)\r\n")
    seen["a"] = _keywords_announced_first(a.until(b"k"), seen["a"])
    assert "$Alpha" in seen["a"]
    b.send(b"k STORE 1 +FLAGS ($Beta)\r\n")  # the answer shows a's $Alpha too
    lines = b.until(b"k")
    seen["b"] = _keywords_announced_first(lines, seen["b"])
    assert any(b"$Alpha" in line and b"FETCH" in line for line in lines), lines
    d.append(folder, "($Gamma)", None, message("kw 2"))
    for name, raw in (("a", a), ("b", b)):
        raw.send(b"n NOOP\r\nf FETCH 1:* (FLAGS)\r\n")
        seen[name] = _keywords_announced_first(raw.until(b"n") + raw.until(b"f"), seen[name])
        assert {"$Alpha", "$Beta", "$Gamma"} <= seen[name]
        raw.close()
    d.logout()


def test_recent_across_two_worker_processes(tmp_path: object, backend: str) -> None:
    """\\Recent is claimed in the database: with two serving processes (server.workers),
    each new message is still recent in exactly one of the sessions selecting it."""
    from pathlib import Path

    from tests.node import make_node

    node = make_node(Path(str(tmp_path)), backend=backend)
    node.config.write_text(node.config.read_text().replace('data_dir = "."',
                                                           'data_dir = "."\nworkers = 2'))
    node.start()
    try:
        writer = imaps(node)
        folder = new_folder(writer, "Recent-workers")
        for round_ in range(3):
            writer.append(folder, None, None, message(f"workers {round_}"))
            counts = []
            for _ in range(4):  # new connections: spread over both processes
                m = imaps(node)
                m.select(folder)
                counts.append(int(m.response("RECENT")[1][-1]))
                m.logout()
            assert sorted(counts) == [0, 0, 0, 1], counts
        writer.logout()
    finally:
        node.stop()

