"""Mailbox and domain lifecycle (issue 16 part 1, docs/lifecycle.md): each transition
through the CLI, then over the real protocols: IMAP logins refused and logged-in sessions
ended, inbound mail deferred, kept or refused as the state and lifecycle.suspended_inbound
say; rename then login and read; delete, undelete and the purge (the job of mss serve, and
its round with a clock the test gives)."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss import crypto, db
from mss.app import open_app
from mss.mailstore import lifecycle
from tests.node import (
    BACKENDS,
    DOMAIN,
    PASSWORD,
    Node,
    inbox_count,
    make_node,
    read_all,
    wait_for,
)
from tests.node import mx_session as mx
from tests.node import simple_message as message

IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)
BACKENDS = BACKENDS  # the purge's one transaction on PostgreSQL too
ENABLED_CHECK = 2.0
# the refused logins the tests try come from 127.0.0.1: no lockout of that address
NODE_CONFIG = (f"\n[imap]\nenabled_check = {ENABLED_CHECK}\nlogin_failures = 1000\n"
               "\n[lifecycle]\npurge_interval = 0.5\ndelete_grace = 3600.0\n")
REMOTE = "dr.martin@operator-a.mssante.fr"
OTHER_DOMAIN = "cabinet-exemple.mssante.fr"


# --------------------------------------------------------------------------- helpers

def one_line_error(proc: object) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)  # type: ignore[attr-defined]
    lines = proc.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("mss: error: "), lines
    return lines[0]


def add(node: Node, address: str, password: str = PASSWORD, kind: str = "PER") -> None:
    node.cli("mailbox", "add", address, "--type", kind, "--password-stdin",
             input=password + "\n")




def rcpt_reply(node: Node, rcpt: str) -> tuple[int, bytes]:
    with mx(node) as client:
        assert client.mail(REMOTE)[0] == 250
        return client.rcpt(rcpt)


def deliver(node: Node, rcpt: str, subject: str = "Compte rendu") -> bytes:
    data = message(REMOTE, rcpt, subject)
    with mx(node) as client:
        assert client.sendmail(REMOTE, [rcpt], data) == {}
    return data


def imap_login(node: Node, user: str, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=10)
    m.login(user, password)
    return m


def login_refused(node: Node, user: str, password: str = PASSWORD) -> bool:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=10)
    try:
        m.login(user, password)
    except imaplib.IMAP4.error as exc:
        assert "AUTHENTICATIONFAILED" in str(exc)
        return True
    finally:
        m.shutdown()
    return False


class Idle:
    """A raw IMAP session logged in, INBOX selected, in IDLE (RFC 2177)."""

    def __init__(self, node: Node, user: str, password: str = PASSWORD) -> None:
        sock = socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=10)
        self.sock: ssl.SSLSocket = node.client_context().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")
        self.command(b'l LOGIN ' + user.encode() + b' "' + password.encode() + b'"')
        self.command(b"s SELECT INBOX")
        self.sock.sendall(b"i IDLE\r\n")
        assert self.file.readline().startswith(b"+ ")

    def command(self, line: bytes) -> None:
        tag = line.split(b" ", 1)[0]
        self.sock.sendall(line + b"\r\n")
        while not (reply := self.file.readline()).startswith(tag + b" "):
            assert reply
        assert reply.startswith(tag + b" OK"), reply

    def ended_within(self, seconds: float) -> float:
        """Seconds until the server's BYE and close (no command sent meanwhile)."""
        start = time.monotonic()
        self.sock.settimeout(seconds)
        lines = []
        while (line := self.file.readline()) and not line.startswith(b"* BYE"):
            lines.append(line)
        assert line.startswith(b"* BYE"), lines
        assert self.file.readline() == b""  # then the connection closes
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()


def audited(node: Node, event: str, mailbox: str | None = None,
            outcome: int = 0) -> list[dict[str, object]]:
    return [r for r in node.audit("--event", event)
            if r["outcome"] == outcome and (mailbox is None or r["mailbox"] == mailbox)]


def state(node: Node, address: str) -> str:
    return str(node.cli_json("mailbox", "show", address)["state"])


@pytest.fixture(scope="module")
def node(running_node: Node) -> Node:
    return running_node


@pytest.fixture(scope="module")
def other_domain(node: Node) -> str:
    node.cli("domain", "add", OTHER_DOMAIN)
    return OTHER_DOMAIN


# --------------------------------------------------------------------------- add, CAB

@pytest.mark.backends("sqlite")  # the CLI's refusals and one column: no purge, no backend SQL
def test_add_refuses_a_mailbox_nobody_can_log_in_to(node: Node) -> None:
    address = f"personne@{DOMAIN}"
    error = one_line_error(node.cli("mailbox", "add", address, "--type", "PER", check=False))
    assert "nobody could log in" in error and "--no-password" in error
    both = node.cli("mailbox", "add", address, "--type", "PER", "--no-password",
                    "--password-stdin", input=PASSWORD + "\n", check=False)
    assert "choose one" in one_line_error(both)
    assert address not in [m["address"] for m in node.cli_json("mailbox", "list")]
    node.cli("mailbox", "add", address, "--type", "PER", "--rpps", "10000000077",
             "--no-password")  # logs in with a token (Pro Santé Connect) only
    assert node.cli_json("mailbox", "show", address)["password"] == "none"


def test_cab_mailbox_end_to_end(node: Node, tmp_path: Path) -> None:
    cab = f"cabinet@{DOMAIN}"
    node.cli("mailbox", "add", cab, "--type", "cab", "--finess", "750000099", "--no-password")
    assert {"address": cab, "type": "CAB", "state": "active", "rpps": None,
            "finess": "750000099"} in node.cli_json("mailbox", "list")
    node.cli("mailbox", "grant", cab, f"bob@{DOMAIN}")  # the practice's staff share it
    deliver(node, cab)
    with imap_login(node, f"bob@{DOMAIN}") as m:
        typ, data = m.select(f'"Shared/{cab}/INBOX"')
        assert typ == "OK" and int(data[0] or 0) == 1
    ldif = tmp_path / "out.ldif"
    node.cli("directory", "export", "--ldif", str(ldif))
    entry = ldif.read_text().split(f"dn: uid={cab},")[1].split("\n\n")[0]
    assert "mssMailboxType: CAB" in entry or ": CAB" in entry


# --------------------------------------------------------------------------- passwd

def test_passwd_ends_sessions_of_the_old_password(node: Node) -> None:
    carol = f"carol@{DOMAIN}"
    add(node, carol)
    idle = Idle(node, carol)
    try:
        node.cli("mailbox", "passwd", carol, input="a brand new secret\n")
        assert idle.ended_within(10) < ENABLED_CHECK  # at once: not at its next state check
    finally:
        idle.close()
    assert login_refused(node, carol, PASSWORD)
    with imap_login(node, carol, "a brand new secret") as m:
        assert m.noop()[0] == "OK"
    [record] = audited(node, "admin.mailbox.passwd", carol)
    assert record["detail"] == {"password": "set"} and "brand new" not in str(record)
    assert "shorter than 8" in one_line_error(
        node.cli("mailbox", "passwd", carol, input="short\n", check=False))
    unknown = one_line_error(node.cli("mailbox", "passwd", f"ghost@{DOMAIN}",
                                      input="long enough\n", check=False))
    assert "no mailbox" in unknown
    refused = audited(node, "admin.mailbox.passwd", f"ghost@{DOMAIN}", outcome=4)
    assert refused and "no mailbox" in str(refused[-1]["reason"])
    with imap_login(node, carol, "a brand new secret") as m:  # nothing changed
        assert m.noop()[0] == "OK"


# --------------------------------------------------------------------------- suspend

def test_suspend_and_resume(node: Node) -> None:
    dave = f"dave@{DOMAIN}"
    add(node, dave)
    idle = Idle(node, dave)
    try:
        node.cli("mailbox", "suspend", dave)
        assert idle.ended_within(10) < ENABLED_CHECK  # at once, IDLE included
    finally:
        idle.close()
    assert state(node, dave) == "suspended"
    assert login_refused(node, dave)
    code, reply = rcpt_reply(node, dave)  # lifecycle.suspended_inbound = "defer"
    assert (code, reply[:5]) == (450, b"4.2.1") and b"dave" not in reply
    refusal = wait_for(lambda: [r for r in node.audit("--event", "smtp.recipient.refused")
                                if r["rcpt"] == dave])
    assert refusal
    rows = [r for r in node.audit("--event", "smtp.recipient.refused") if r["rcpt"] == dave]
    assert rows[-1]["detail"] == {"check": "recipient-suspended"}
    assert "suspended" in str(rows[-1]["reason"])
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10) as client:
        client.starttls(context=node.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(dave, PASSWORD)
    assert "not active" in one_line_error(node.cli("mailbox", "suspend", dave, check=False))
    [record] = audited(node, "admin.mailbox.suspend", dave)
    assert record["detail"] == {"inbound": "defer"}

    node.cli("mailbox", "resume", dave)
    assert state(node, dave) == "active"
    assert "not suspended" in one_line_error(node.cli("mailbox", "resume", dave, check=False))
    assert audited(node, "admin.mailbox.resume", dave, outcome=4)
    with imap_login(node, dave) as m:
        assert m.noop()[0] == "OK"
    before = inbox_count(node, dave)
    deliver(node, dave)
    assert inbox_count(node, dave) == before + 1


def test_a_session_waiting_for_its_next_command_gets_bye(node: Node) -> None:
    erin = f"erin.s@{DOMAIN}"
    add(node, erin)
    with imap_login(node, erin) as m:
        node.cli("mailbox", "suspend", erin)
        time.sleep(0.5)  # its registry row marked ended: BYE at the process's next round
        with pytest.raises(imaplib.IMAP4.abort, match="Session ended by the administrator"):
            m.noop()
    node.cli("mailbox", "resume", erin)


# --------------------------------------------------------------------------- disable, enable

def test_disable_then_enable(node: Node) -> None:
    fred = f"fred@{DOMAIN}"
    add(node, fred)
    node.cli("mailbox", "disable", fred)
    assert login_refused(node, fred)
    assert rcpt_reply(node, fred)[0] == 550
    assert state(node, fred) == "disabled"
    assert "is disabled" in one_line_error(node.cli("mailbox", "suspend", fred, check=False))
    node.cli("mailbox", "enable", fred)
    assert state(node, fred) == "active"
    assert "not disabled" in one_line_error(node.cli("mailbox", "enable", fred, check=False))
    with imap_login(node, fred) as m:
        assert m.noop()[0] == "OK"
    assert audited(node, "admin.mailbox.enable", fred)


# --------------------------------------------------------------------------- rename

def test_rename_keeps_mail_and_credentials(node: Node, other_domain: str) -> None:
    old, new, moved = f"gina@{DOMAIN}", f"gina.dupont@{DOMAIN}", f"gina@{other_domain}"
    add(node, old)
    sent = [deliver(node, old, f"Resultats {i}") for i in range(2)]
    with imap_login(node, old) as m:
        m.select("INBOX")
        m.store("1", "+FLAGS", "\\Flagged")
    idle = Idle(node, old)
    try:
        node.cli("mailbox", "rename", old, new)
        assert idle.ended_within(10) <= ENABLED_CHECK * 2 + 1  # it knew the old address
    finally:
        idle.close()
    assert login_refused(node, old)
    assert rcpt_reply(node, old)[0] == 550
    with imap_login(node, new) as m:
        assert m.select("INBOX")[1] == [b"2"]
        typ, data = m.fetch("1:2", "(FLAGS BODY.PEEK[])")
        bodies = [part[1] for part in data if isinstance(part, tuple)]
        # every ciphertext opened: the AD binds the mailbox id (a Received: line prepended)
        assert len(bodies) == 2 and all(b.endswith(d) for b, d in zip(bodies, sent, strict=True))
        assert b"\\Flagged" in data[0][0]  # type: ignore[index]
    node.cli("mailbox", "rename", new, moved)  # into another hosted domain
    stored = read_all(node, moved)
    assert len(stored) == 2 and all(b.endswith(d) for b, d in zip(stored, sent, strict=True))
    deliver(node, moved)
    assert inbox_count(node, moved) == 3
    [first, second] = audited(node, "admin.mailbox.rename")[-2:]
    assert (first["mailbox"], first["detail"]) == (old, {"new_address": new})
    assert (second["mailbox"], second["detail"]) == (new, {"new_address": moved})
    for args, text in ((["mailbox", "rename", moved, f"alice@{DOMAIN}"], "already exists"),
                       (["mailbox", "rename", moved, "x@not-hosted.fr"], "not hosted"),
                       (["mailbox", "rename", moved, "no-at-sign"], "invalid address"),
                       (["mailbox", "rename", f"ghost@{DOMAIN}", f"g@{DOMAIN}"], "no mailbox")):
        assert text in one_line_error(node.cli(*args, check=False)), args
    assert inbox_count(node, moved) == 3  # nothing changed


# --------------------------------------------------------------------------- delete

def sql(node: Node, statement: str, **params: object) -> list[tuple[object, ...]]:
    """A statement on the node's database (either backend), committed; its rows."""
    from sqlalchemy import text

    app = open_app(node.config)
    try:
        with app.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        app.close()


def rows_of(node: Node, mailbox_id: int) -> dict[str, int]:
    """The rows left of a mailbox, table by table (read from the database directly)."""
    out = {}
    for table, where in (("mailboxes", "id = :m"), ("messages", "mailbox_id = :m"),
                         ("folders", "mailbox_id = :m"), ("app_passwords", "mailbox_id = :m"),
                         ("mailbox_certificates", "mailbox_id = :m"),
                         ("mailbox_grants", "mailbox_id = :m OR grantee_id = :m"),
                         ("keyring", "key_id = :key")):
        [(count,)] = sql(node, f"SELECT count(*) FROM {table} WHERE {where}", m=mailbox_id,
                         key=f"mailbox:{mailbox_id}")
        out[table] = int(count)  # type: ignore[call-overload]
    return out


def mailbox_id(node: Node, address: str) -> int:
    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            from mss.mailstore.mailboxes import require_mailbox

            return require_mailbox(conn, address).id
    finally:
        app.close()


def test_delete_grace_undelete_and_purge(node: Node, tmp_path: Path, backend: str) -> None:
    hugo = f"hugo@{DOMAIN}"
    add(node, hugo)
    node.cli("mailbox", "grant", f"secretariat@{DOMAIN}", hugo)
    node.cli("mailbox", "app-password", "add", hugo, "--label", "phone")
    deliver(node, hugo)
    ident = mailbox_id(node, hugo)
    idle = Idle(node, hugo)
    try:
        out = node.cli("mailbox", "delete", hugo).stdout
        assert "purged after" in out and "undelete" in out
        assert idle.ended_within(10) <= ENABLED_CHECK * 2 + 1
    finally:
        idle.close()
    shown = node.cli_json("mailbox", "show", hugo)
    assert shown["state"] == "deleting" and shown["delete_after"] > time.time() + 3000
    assert login_refused(node, hugo)
    assert (rcpt_reply(node, hugo)[0], rcpt_reply(node, hugo)[1][:5]) == (550, b"5.1.1")
    ldif = tmp_path / "out.ldif"
    node.cli("directory", "export", "--ldif", str(ldif))
    assert hugo not in ldif.read_text()  # unpublished at once
    assert "already being deleted" in one_line_error(
        node.cli("mailbox", "delete", hugo, check=False))
    for command in ("passwd", "rename", "enable"):
        extra = [f"h@{DOMAIN}"] if command == "rename" else []
        proc = node.cli("mailbox", command, hugo, *extra, input="long enough pw\n",
                        check=False)
        assert "being deleted" in one_line_error(proc), command

    node.cli("mailbox", "undelete", hugo)  # during the grace period
    assert state(node, hugo) == "active"
    assert "not being deleted" in one_line_error(
        node.cli("mailbox", "undelete", hugo, check=False))
    with imap_login(node, hugo) as m:
        assert m.select("INBOX")[1] == [b"1"]

    node.cli("mailbox", "delete", hugo)
    copy = tmp_path / "before-purge.db"
    if backend == "sqlite":
        backup(node, copy)
    app = open_app(node.config)
    try:  # the job's round with the test's clock: not due yet, then due
        assert lifecycle.purge_due(app.engine, app.keyring, now=time.time() + 60) == []
        [purged] = lifecycle.purge_due(app.engine, app.keyring, now=time.time() + 3700)
    finally:
        app.close()
    assert purged.mailbox.address == hugo and purged.messages == 1
    assert rows_of(node, ident) == dict.fromkeys(rows_of(node, ident), 0)
    assert hugo not in [m["address"] for m in node.cli_json("mailbox", "list")]
    assert "no mailbox" in one_line_error(node.cli("mailbox", "show", hugo, check=False))
    [record] = audited(node, "mailbox.purge", hugo)
    assert record["actor"] == "mss" and record["detail"] == {
        "type": "PER", "messages": 1, "bytes": purged.bytes, "folders": purged.folders,
        "grants": 1, "app_passwords": 1, "certificates": 0, "portal_sessions": 0}
    assert sql(node, "SELECT count(*) FROM key_shreds WHERE key_id = :k",
               k=f"mailbox:{ident}") == [(1,)]
    assert audited(node, "admin.mailbox.add", hugo)  # the audit trail stays
    assert rcpt_reply(node, hugo)[0] == 550
    app = open_app(node.config)
    try:
        with app.reader.connect() as conn, pytest.raises(crypto.KeyringError):
            app.keyring.key(crypto.mailbox_key_id(ident), conn)
    finally:
        app.close()
    if backend == "sqlite":
        RESULTS["purged_copy"] = (copy, ident)


def backup(node: Node, target: Path) -> None:
    """A consistent copy of the node's SQLite database (its WAL included)."""
    source, copy = sqlite3.connect(node.data_dir / "mss.db"), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()


RESULTS: dict[str, tuple[Path, int]] = {}  # a test's result another reads (module order)


@pytest.mark.backends("sqlite")  # a copy of the SQLite file (tests/test_shred.py: pg_dump)
def test_a_copy_taken_before_the_purge_cannot_be_opened(node: Node, tmp_path: Path) -> None:
    """The purge ratcheted the node's key-encryption key (docs/keys.md): the copy's master
    versions are wrapped by a generation the node erased, so neither the node's CLI nor a
    keyring over the copy opens the purged mailbox's key (the other mailboxes of the copy
    only with their keys as the live database holds them: tests/test_shred.py)."""
    copy, ident = RESULTS["purged_copy"]
    old = sqlite3.connect(copy)  # the copy still holds the rows
    assert old.execute("SELECT count(*) FROM messages WHERE mailbox_id = ?", (ident,)
                       ).fetchone() == (1,)
    old.close()
    key_file = node.data_dir / "keys" / "master.key"
    assert [line.split(":")[0] for line in key_file.read_text().splitlines()
            if line and not line.startswith("#")] == ["2"]  # generation 1 erased
    config = tmp_path / "old.toml"  # the node's keys and config, the old copy's database
    config.write_text(node.config.read_text()
                      .replace('data_dir = "."', f'data_dir = "{node.data_dir}"', 1)
                      .replace('url = "sqlite:///mss.db"', f'url = "sqlite:///{copy}"', 1))
    with pytest.raises(crypto.MasterKeyError, match="erased by a crypto-shred"):
        open_app(config)
    engine = db.make_engine(f"sqlite:///{copy}", writer=False)
    try:
        keyring = crypto.Keyring(engine, crypto.FileKeyProvider(key_file))
        with engine.connect() as conn, pytest.raises(crypto.KeyringError, match="erased"):
            keyring.key(crypto.mailbox_key_id(ident), conn)
    finally:
        engine.dispose()


def test_delete_refused_under_legal_hold(node: Node) -> None:
    ivan = f"ivan@{DOMAIN}"
    add(node, ivan)
    # mss mailbox hold is issue 16 part 5 (its own branch): the hold as it leaves it
    sql(node, "UPDATE mailboxes SET held_at = :t, hold_reason = 'case 42' WHERE address = :a",
        t=time.time(), a=ivan)
    assert "legal hold" in one_line_error(node.cli("mailbox", "delete", ivan, check=False))
    assert "legal hold" in one_line_error(
        node.cli("mailbox", "delete", ivan, "--now", "--yes", check=False))
    assert state(node, ivan) == "active"
    assert audited(node, "admin.mailbox.delete", ivan, outcome=4)


def test_delete_now(node: Node) -> None:
    jules = f"jules@{DOMAIN}"
    add(node, jules)
    deliver(node, jules)
    assert "--yes" in one_line_error(node.cli("mailbox", "delete", jules, "--now",
                                              check=False))
    assert state(node, jules) == "active"
    refused = audited(node, "admin.mailbox.delete", jules, outcome=4)
    assert refused and "--yes" in str(refused[-1]["reason"])
    ident = mailbox_id(node, jules)
    assert "purged" in node.cli("mailbox", "delete", jules, "--now", "--yes").stdout
    assert rows_of(node, ident) == dict.fromkeys(rows_of(node, ident), 0)
    [record] = audited(node, "mailbox.purge", jules)
    assert record["detail"]["messages"] == 1  # type: ignore[index]


def test_the_purge_job_of_serve(node: Node) -> None:
    """mss serve's elected job purges a mailbox once its grace ends (here a config whose
    delete_grace is 0, on the node's own database)."""
    kim = f"kim@{DOMAIN}"
    add(node, kim)
    ident = mailbox_id(node, kim)
    now_config = node.data_dir / "grace0.toml"
    now_config.write_text(node.config.read_text().replace("delete_grace = 3600.0",
                                                          "delete_grace = 0.0"))
    proc = node.cli("--config", str(now_config), "mailbox", "delete", kim)  # the last wins
    assert proc.returncode == 0
    assert wait_for(lambda: audited(node, "mailbox.purge", kim), timeout=20)
    assert rows_of(node, ident)["mailboxes"] == 0 and rows_of(node, ident)["keyring"] == 0


# --------------------------------------------------------------------------- domains

@pytest.mark.backends("sqlite")  # the CLI's refusals and one column: no purge, no backend SQL
def test_domain_set_relay(node: Node, other_domain: str) -> None:
    node.cli("domain", "set", other_domain, "--relay-to", "mail.cabinet.example:2525")
    listed = {d["domain"]: d for d in node.cli_json("domain", "list")}
    assert listed[other_domain]["relay_to"] == "mail.cabinet.example:2525"
    for args, text in ((["--relay-to", "mail.cabinet.example:2525"], "already relayed"),
                       ([], "one of"), (["--relay-to", "h:1", "--no-relay"], "one of"),
                       (["--relay-to", "bad host:x"], "")):
        proc = node.cli("domain", "set", other_domain, *args, check=False)
        assert text in one_line_error(proc), args
    assert "not hosted" in one_line_error(
        node.cli("domain", "set", "ghost.example", "--no-relay", check=False))
    node.cli("domain", "set", other_domain, "--no-relay")
    listed = {d["domain"]: d for d in node.cli_json("domain", "list")}
    assert listed[other_domain]["relay_to"] is None
    records = audited(node, "admin.domain.relay")
    assert records[-1]["detail"] == {"domain": other_domain, "relay_to": None,
                                     "previous": "mail.cabinet.example:2525"}


def test_domain_suspend_resume_remove(node: Node) -> None:
    domain = "clinique-suspendue.mssante.fr"
    node.cli("domain", "add", domain)
    lea = f"lea@{domain}"
    add(node, lea)
    idle = Idle(node, lea)
    try:
        node.cli("domain", "suspend", domain)
        assert idle.ended_within(10) <= ENABLED_CHECK * 2 + 1
    finally:
        idle.close()
    listed = {d["domain"]: d for d in node.cli_json("domain", "list")}
    assert listed[domain]["state"] == "suspended" and listed[domain]["mailboxes"] == 1
    assert login_refused(node, lea)
    code, reply = rcpt_reply(node, lea)
    assert (code, reply[:5]) == (450, b"4.2.1")
    assert "already suspended" in one_line_error(
        node.cli("domain", "suspend", domain, check=False))
    node.cli("domain", "resume", domain)
    assert "not suspended" in one_line_error(node.cli("domain", "resume", domain, check=False))
    with imap_login(node, lea) as m:
        assert m.noop()[0] == "OK"
    assert rcpt_reply(node, lea)[0] == 250
    assert "still has 1 mailbox" in one_line_error(
        node.cli("domain", "remove", domain, check=False))
    assert audited(node, "admin.domain.remove", outcome=4)
    node.cli("mailbox", "delete", lea, "--now", "--yes")
    node.cli("domain", "remove", domain)
    assert domain not in [d["domain"] for d in node.cli_json("domain", "list")]
    assert "not hosted" in one_line_error(node.cli("domain", "remove", domain, check=False))
    assert rcpt_reply(node, lea)[0] == 550
    assert [r["detail"] for r in audited(node, "admin.domain.remove")] == [{"domain": domain}]


# --------------------------------------------------------------------------- keep

@pytest.fixture(scope="module")
def keeping_node(tmp_path_factory: pytest.TempPathFactory, node: Node) -> Iterator[Node]:
    """A second node (a subprocess: one in-process node at a time) keeping the mail of
    suspended mailboxes."""
    other = make_node(tmp_path_factory.mktemp("keep"), extra_config=(
        '\n[lifecycle]\nsuspended_inbound = "keep"\n'))
    other.start()
    yield other
    other.stop()


@pytest.mark.backends("sqlite")  # the SMTP exchange: protocol only
def test_suspended_inbound_keep(keeping_node: Node) -> None:
    bob = f"bob@{DOMAIN}"
    keeping_node.cli("mailbox", "suspend", bob)
    before = inbox_count(keeping_node, bob)
    deliver(keeping_node, bob)  # accepted, stored for when it is resumed
    assert inbox_count(keeping_node, bob) == before + 1
    assert login_refused(keeping_node, bob)
    [record] = audited(keeping_node, "admin.mailbox.suspend", bob)
    assert record["detail"] == {"inbound": "keep"}
    keeping_node.cli("mailbox", "resume", bob)
    with imap_login(keeping_node, bob) as m:
        assert m.select("INBOX")[1] == [str(before + 1).encode()]


# --------------------------------------------------------------------------- mss report

def test_report_counts_mailboxes_by_lifecycle_state() -> None:
    """mss report's mailbox section follows the lifecycle records (pure part)."""
    from mss.report import indicators

    def r(event: str, mailbox: str, outcome: int = 0, **detail: object) -> dict[str, object]:
        return {"event": event, "outcome": outcome, "mailbox": mailbox, "detail": detail}

    d = "hopital.test"
    rows = [r("admin.mailbox.add", f"a@{d}", type="PER"),
            r("admin.mailbox.add", f"b@{d}", type="PER"),
            r("admin.mailbox.add", f"c@{d}", type="CAB"),
            r("admin.mailbox.add", f"e@{d}", type="ORG"),
            r("admin.mailbox.add", f"f@{d}", type="PER"),
            r("admin.mailbox.suspend", f"a@{d}"),
            r("admin.mailbox.resume", f"a@{d}", outcome=4),  # refused: still suspended
            r("admin.mailbox.suspend", f"b@{d}"), r("admin.mailbox.resume", f"b@{d}"),
            r("admin.mailbox.rename", f"b@{d}", new_address=f"b2@{d}"),
            r("admin.mailbox.delete", f"c@{d}"),
            r("admin.mailbox.suspend", f"e@{d}"), r("admin.mailbox.delete", f"e@{d}"),
            r("admin.mailbox.undelete", f"e@{d}"),  # back to suspended
            r("admin.mailbox.delete", f"f@{d}", now=True), r("mailbox.purge", f"f@{d}")]
    counts = {(x["item"], x["qualifier"]): x["count"]
              for x in indicators("2020-11", rows, []) if x["section"] == "mailboxes"}
    assert counts == {("PER", "suspended"): 1, ("PER", "enabled"): 1,
                      ("CAB", "deleting"): 1, ("ORG", "suspended"): 1}
