"""Retention and legal hold (issue 16 part 5): [[retention.rules]] applied by the round
function with a clock the test controls and by the elected job of a serving node on the real
clock, seen by real IMAP clients (imaplib: EXPUNGE reported, HIGHESTMODSEQ moved); legal
hold set and released by the real CLI, then EXPUNGE, UID EXPUNGE, CLOSE, MOVE out of the
mailbox and DELETE of a folder tried over IMAP, retention and key shredding tried by the
operator; every refusal one line, exit 2, nothing changed, audited."""

from __future__ import annotations

import datetime as dt
import imaplib
import json
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import imapclient
import pytest
from sqlalchemy import select, update

from mss import db
from mss.app import App, open_app
from mss.config import ConfigError, parse_config
from mss.mailstore import mailboxes
from mss.mailstore.retention import DAY, Report, run_round
from tests.node import (
    BACKENDS,
    DOMAIN,
    PASSWORD,
    Node,
    deliver_from_this_process,
    make_node,
    read_all,
    wait_for,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
ORG = f"secretariat@{DOMAIN}"
OLD = "Projets/Ancien"  # a sealed folder name (mss/mailstore/names.py), named by a rule
JUNK_DAYS = 2.0 / DAY  # the serving job, on the real clock: Junk expires after 2 s
NODE_CONFIG = f"""
[imap]
enabled_check = 0.5

[retention]
interval = 0.3

[[retention.rules]]
domain = "{DOMAIN}"
folder = "Junk"
days = {JUNK_DAYS!r}

[[retention.rules]]
folder = "\\\\trash"
days = 30

[[retention.rules]]
folder = "{OLD}"
days = 10

[[retention.rules]]
domain = "{DOMAIN}"
days = 0
"""
BACKENDS = BACKENDS  # SQLite and PostgreSQL (the writer's lock, READ COMMITTED)


def message(subject: str, sender: str = ALICE, rcpt: str = BOB) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg["Message-ID"] = f"<{time.time_ns()}@test.example>"
    msg.set_content("Bonjour.\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def imaps(node: Node, user: str) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=10)
    m.login(user, PASSWORD)
    return m


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("retention"), in_process=True,
                  extra_config=NODE_CONFIG, backend=backend)
    n.start()
    yield n
    if n.running:
        n.stop()


@pytest.fixture(scope="module")
def app(node: Node) -> Iterator[App]:
    """The node's database and keys opened by the test process (the operator's side)."""
    opened = open_app(node.config)
    yield opened
    opened.close()


def round_at(app: App, now: float) -> Report:
    """One round of the rules as of *now* (the clock the test controls)."""
    return run_round(app.engine, app.reader, app.keyring, app.config.retention, now,
                     actor="test")


def uids(m: imaplib.IMAP4, folder: str) -> list[int]:
    assert m.select(f'"{folder}"')[0] == "OK"
    typ, data = m.uid("SEARCH", "ALL")
    assert typ == "OK"
    return [int(u) for u in data[0].split()]


def append(m: imaplib.IMAP4, folder: str, subject: str, when: dt.datetime | None = None,
           flags: str = "") -> None:
    typ, _ = m.append(f'"{folder}"', flags, when or dt.datetime.now(dt.UTC),
                      message(subject))
    assert typ == "OK"


def modseq(m: imaplib.IMAP4, folder: str) -> int:
    typ, data = m.status(f'"{folder}"', "(HIGHESTMODSEQ)")
    assert typ == "OK"
    found = re.search(rb"HIGHESTMODSEQ (\d+)", data[0])
    assert found
    return int(found.group(1))


def expunged(m: imaplib.IMAP4) -> list[bytes]:
    """The EXPUNGE responses a NOOP brings (another process's change), with those of the
    commands since the last SELECT."""
    assert m.noop()[0] == "OK"
    return list(m.untagged_responses.get("EXPUNGE", []))


def message_count(node: Node, address: str) -> int:
    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            return mailboxes.mailbox_counts(conn, mailboxes.require_mailbox(conn, address).id)[0]
    finally:
        app.close()


def error_line(node: Node, *args: str) -> str:
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2 and proc.stdout == "", proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- configuration

@pytest.mark.backends("sqlite")  # no database
def test_rules_are_checked_at_start(tmp_path: Path) -> None:
    def parse(rules: str) -> None:
        parse_config(json.loads(rules), tmp_path / "mss.toml")

    with pytest.raises(ConfigError, match=r"retention\.rules\[1\]: never applies: "
                       r"rules\[0\] before it"):
        parse('{"retention": {"rules": [{"folder": "\\\\Trash", "days": 30}, '
              '{"domain": "demo.mssante.fr", "folder": "\\\\Trash", "days": 5}]}}')
    with pytest.raises(ConfigError, match=r"retention\.rules\[0\]\.folder: '\\\\Bin' is not "
                       "a special-use attribute"):
        parse('{"retention": {"rules": [{"folder": "\\\\Bin", "days": 30}]}}')
    with pytest.raises(ConfigError, match=r"retention\.rules\[0\]\.days: must be a number >= 0"):
        parse('{"retention": {"rules": [{"folder": "Trash", "days": -1}]}}')
    with pytest.raises(ConfigError, match=r"retention\.rules\[0\]\.days: required"):
        parse('{"retention": {"rules": [{"folder": "Trash"}]}}')
    with pytest.raises(ConfigError, match=r"retention\.rules\[0\]\.domain: "):
        parse('{"retention": {"rules": [{"domain": "not a domain", "days": 1}]}}')
    config = parse_config({"retention": {"rules": [
        {"domain": "Demo.MSSante.fr", "folder": "inbox", "days": 1},
        {"folder": "\\junk", "days": 2}, {"days": 0}]}}, tmp_path / "mss.toml")
    assert [(r.domain, r.folder, r.days) for r in config.retention.rules] == [
        ("demo.mssante.fr", "INBOX", 1.0), ("", "\\Junk", 2.0), ("", "", 0.0)]


# --------------------------------------------------------------------------- retention

def test_round_with_a_controlled_clock_seen_by_imap_sessions(node: Node, app: App) -> None:
    m = imaps(node, ALICE)
    watcher = imaps(node, ALICE)
    try:
        assert m.create(f'"{OLD}"')[0] == "OK" and m.create('"Projets/Recent"')[0] == "OK"
        for i in range(3):
            append(m, "Trash", f"trash {i}")
        append(m, OLD, "old project")
        append(m, "Projets/Recent", "recent project")
        append(m, "INBOX", "kept", dt.datetime(2020, 1, 2, tzinfo=dt.UTC))
        # received in 2020, moved to Trash now: its 30 days count from the move
        moved = uids(m, "INBOX")[-1]
        assert m.uid("MOVE", str(moved), "Trash")[0] == "OK"
        append(m, "INBOX", "kept too", dt.datetime(2020, 1, 3, tzinfo=dt.UTC))
        trash, inbox = uids(m, "Trash"), uids(m, "INBOX")
        assert len(trash) == 4
        before = modseq(m, "Trash")
        assert watcher.select("Trash")[0] == "OK"
        start = time.time()

        report = round_at(app, start + 9 * DAY)  # nothing old enough yet
        assert report.messages == 0 and report.mailboxes >= 3

        report = round_at(app, start + 11 * DAY)  # the named folder's 10 days
        assert [(f.mailbox, f.special_use, f.rule, f.messages) for f in report.folders] == \
            [(ALICE, None, 2, 1)]
        assert uids(m, OLD) == [] and len(uids(m, "Projets/Recent")) == 1
        assert expunged(watcher) == []  # Trash untouched so far

        report = round_at(app, start + 31 * DAY)
        assert [(f.mailbox, f.special_use, f.rule, f.messages) for f in report.folders] == \
            [(ALICE, "\\Trash", 1, 4)]
        assert uids(m, "Trash") == [] and uids(m, "INBOX") == inbox  # domain rule: kept
        assert len(uids(m, "Projets/Recent")) == 1  # no rule but the domain's days = 0
        assert modseq(m, "Trash") > before  # RFC 7162: the expunge moved HIGHESTMODSEQ
        assert wait_for(lambda: len(expunged(watcher)) == 4, timeout=10)
    finally:
        m.logout()
        watcher.logout()
    rows = [r for r in node.audit("--event", "retention.expunge") if r["mailbox"] == ALICE
            and r["actor"] == "test"]
    assert [(r["detail"]["special_use"], r["detail"]["rule"], r["detail"]["messages"])
            for r in rows] == [(None, 2, 1), ("\\Trash", 1, 4)]
    assert all(r["detail"]["bytes"] > 0 and "folder_id" in r["detail"] for r in rows)
    text = json.dumps(rows, ensure_ascii=False)
    assert "Projets" not in text and "Ancien" not in text  # names are content: never audited


def test_a_session_watching_the_folder_gets_expunge(node: Node, app: App) -> None:
    m = imaps(node, BOB)
    try:
        for i in range(2):
            append(m, "Trash", f"bob trash {i}")
        assert m.select("Trash")[0] == "OK"
        count = len(uids(m, "Trash"))
        assert count >= 2
        report = round_at(app, time.time() + 31 * DAY)
        assert sum(f.messages for f in report.folders if f.mailbox == BOB) == count
        assert wait_for(lambda: len(expunged(m)) == count, timeout=10)
    finally:
        m.logout()


def test_rows_from_before_schema_0010_count_from_their_internal_date(node: Node,
                                                                     app: App) -> None:
    m = imaps(node, ALICE)
    try:
        append(m, "Trash", "pre-0010", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        append(m, "Trash", "new", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        first, second = uids(m, "Trash")[-2:]
    finally:
        m.logout()
    with app.engine.begin() as conn:  # a row as migration 0010 leaves it: saved_at NULL
        alice = mailboxes.require_mailbox(conn, ALICE)
        trash = conn.execute(select(db.folders.c.id).where(
            (db.folders.c.mailbox_id == alice.id) & (db.folders.c.name == "Trash"))).scalar()
        assert conn.execute(update(db.messages).where(
            (db.messages.c.folder_id == trash) & (db.messages.c.uid == first))
            .values(saved_at=None)).rowcount == 1
    # 2026-01-01 + 30 days is past on the real clock too: the serving job may come first
    round_at(app, time.time() + DAY)
    m = imaps(node, ALICE)
    try:
        assert uids(m, "Trash") == [second]  # the other one: 30 days from its APPEND
    finally:
        m.logout()
    assert [r for r in node.audit("--event", "retention.expunge", "--mailbox", ALICE)
            if r["detail"]["folder_id"] == trash and r["detail"]["messages"] == 1]


def test_the_serving_job_applies_the_rules_on_the_real_clock(node: Node) -> None:
    """The elected job of the node (retention.interval 0.3 s, Junk after 2 s) expunges on
    its own; an IDLE session (imapclient) is woken with the EXPUNGE."""
    client = imapclient.IMAPClient("127.0.0.1", port=node.ports["imaps"], ssl=True,
                                   ssl_context=node.client_context(), timeout=10)
    try:
        client.login(ALICE, PASSWORD)
        client.append("Junk", message("spam"))
        client.select_folder("Junk")
        assert client.search("ALL")  # there, for now
        client.idle()
        seen: list[object] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(b"EXPUNGE" in r for r in seen
                                                      if isinstance(r, tuple)):
            seen += client.idle_check(timeout=1)
        client.idle_done()
        assert any(r[1] == b"EXPUNGE" for r in seen if isinstance(r, tuple)), seen
        assert client.search("ALL") == []
    finally:
        client.logout()
    rows = node.wait_audit(lambda r: r["event"] == "retention.expunge" and r["actor"] == "mss")
    assert rows and rows[-1]["detail"]["rule"] == 0 and rows[-1]["detail"]["messages"] == 1
    assert rows[-1]["detail"]["special_use"] == "\\Junk"


# --------------------------------------------------------------------------- legal hold

def test_hold_blocks_every_removal_until_released(node: Node, app: App) -> None:
    out = node.cli("mailbox", "hold", BOB, "--reason", "Dossier TGI 2026/117").stdout
    assert out.startswith(f"mailbox {BOB} under legal hold since 20")
    shown = node.cli_json("mailbox", "show", BOB)
    assert shown["hold"] > 0 and shown["hold_reason"] == "Dossier TGI 2026/117"
    text = node.cli("mailbox", "show", BOB).stdout
    assert re.search(r"hold:\s+since 20\d\d-\d\d-\d\d \S+\s+reason:\s+Dossier TGI 2026/117",
                     text)  # legal hold, and its reason
    assert re.search(r"hold:\s+none\s+reason:\s+-", node.cli("mailbox", "show", ALICE).stdout)
    m = imaps(node, BOB)
    try:
        append(m, "INBOX", "evidence", flags="\\Deleted")
        append(m, "INBOX", "evidence 2")
        held = uids(m, "INBOX")
        assert m.uid("STORE", str(held[-1]), "+FLAGS", "(\\Deleted)")[0] == "OK"
        typ, data = m.expunge()
        assert typ == "NO" and data[0].startswith(b"[CANNOT] Mailbox is under legal hold")
        typ, data = m.uid("EXPUNGE", str(held[-1]))
        assert typ == "NO" and b"[CANNOT]" in data[0]
        assert uids(m, "INBOX") == held
        assert m.close()[0] == "OK"  # RFC 3501 §6.4.2: closes, removes nothing
        assert uids(m, "INBOX") == held
        # MOVE between its own folders keeps the message: allowed
        assert m.uid("MOVE", str(held[0]), "Archive")[0] == "OK"
        assert len(uids(m, "Archive")) >= 1
        # DELETE of a folder holding messages: refused; of an empty one: done
        assert m.create("Dossier")[0] == "OK" and m.create("Vide")[0] == "OK"
        append(m, "Dossier", "in a folder")
        typ, data = m.delete("Dossier")
        assert typ == "NO" and b"[CANNOT]" in data[0]
        assert m.delete("Vide")[0] == "OK"
        append(m, "Trash", "held trash")
        trash = uids(m, "Trash")
    finally:
        m.logout()
    report = round_at(app, time.time() + 31 * DAY)
    assert all(f.mailbox != BOB for f in report.folders) and report.held >= 1
    assert error_line(node, "keys", "shred", BOB, "--yes") == \
        f"mss: error: mailbox {BOB} is under legal hold (mss mailbox release first)"
    assert message_count(node, BOB) == len(held) + 2 and read_all(node, BOB)  # key kept

    out = node.cli("mailbox", "release", BOB).stdout
    assert out.startswith(f"mailbox {BOB} released from legal hold (held since 20")
    assert node.cli_json("mailbox", "show", BOB)["hold"] is None
    report = round_at(app, time.time() + 31 * DAY)
    assert [f.messages for f in report.folders if f.mailbox == BOB] == [len(trash)]
    m = imaps(node, BOB)
    try:
        assert m.select("INBOX")[0] == "OK"
        assert m.expunge()[0] == "OK" and uids(m, "INBOX") == []
        assert m.delete("Dossier")[0] == "OK"
    finally:
        m.logout()
    audit = node.audit("--mailbox", BOB)
    assert [r["detail"]["reason"] for r in audit if r["event"] == "admin.mailbox.hold"] == \
        ["Dossier TGI 2026/117"]
    assert [r["outcome"] for r in audit if r["event"] == "admin.mailbox.release"] == [0]
    refused = [(r["event"], r["reason"]) for r in audit if r["outcome"] == 4]
    assert refused.count(("imap.expunge", "legal hold")) == 2
    assert ("imap.folder.delete", "legal hold") in refused
    assert ("admin.keys.shred", "legal hold") in refused


def test_hold_blocks_a_move_out_of_a_shared_mailbox(node: Node) -> None:
    node.cli("mailbox", "grant", ORG, ALICE)
    deliver_from_this_process(node, ORG, message("for the secretariat", rcpt=ORG))
    node.cli("mailbox", "hold", ORG)
    m = imaps(node, ALICE)
    try:
        shared = f"Shared/{ORG}/INBOX"
        held = uids(m, shared)
        assert held
        typ, data = m.uid("MOVE", str(held[0]), "INBOX")
        assert typ == "NO" and b"[CANNOT]" in data[0]
        assert uids(m, shared) == held
        assert m.uid("COPY", str(held[0]), "INBOX")[0] == "OK"  # a copy removes nothing
        node.cli("mailbox", "release", ORG)
        assert m.select(f'"{shared}"')[0] == "OK"
        assert m.uid("MOVE", str(held[0]), "INBOX")[0] == "OK"
    finally:
        m.logout()
    refused = [r for r in node.audit("--mailbox", ORG, "--event", "imap.move")
               if r["outcome"] == 4]
    assert len(refused) == 1 and refused[0]["reason"] == "legal hold"


def test_hold_cli_refusals_are_one_line_audited_and_change_nothing(node: Node) -> None:
    nobody = f"nobody@{DOMAIN}"
    assert error_line(node, "mailbox", "hold", nobody) == f"mss: error: no mailbox {nobody}"
    assert error_line(node, "mailbox", "hold", "not-an-address").startswith(
        "mss: error: invalid address")
    assert error_line(node, "mailbox", "release", ALICE) == \
        f"mss: error: mailbox {ALICE} is not under legal hold"
    assert error_line(node, "mailbox", "hold", ALICE, "--reason", "a\nb") == \
        "mss: error: --reason: one line of at most 500 characters"
    node.cli("mailbox", "hold", ALICE, "--reason", "first")
    try:
        assert error_line(node, "mailbox", "hold", ALICE, "--reason", "second") == \
            f"mss: error: mailbox {ALICE} is already under legal hold (mss mailbox show " \
            f"{ALICE})"
        assert node.cli_json("mailbox", "show", ALICE)["hold_reason"] == "first"
    finally:
        node.cli("mailbox", "release", ALICE)
    failed = [(r["event"], r["mailbox"]) for r in node.audit("--outcome", "8")
              if r["event"].startswith("admin.mailbox.")]
    assert (("admin.mailbox.hold", nobody) in failed and
            ("admin.mailbox.release", ALICE) in failed and
            ("admin.mailbox.hold", ALICE) in failed)


# --------------------------------------------------------------------------- the CLI

@pytest.fixture
def quiet_node(tmp_path: Path, backend: str) -> Node:
    """A node that is not served, with a rule expiring INBOX mail after 0.5 s."""
    n = make_node(tmp_path, backend=backend, extra_config=f"""
[retention]
interval = 0

[[retention.rules]]
folder = "INBOX"
days = {0.5 / DAY!r}
""")
    return n


def test_retention_run_and_rules_commands(quiet_node: Node) -> None:
    n = quiet_node
    table = n.cli("retention", "rules").stdout
    assert re.search(r"0\s+\*\s+INBOX\s+5\.78", table) and "no job in mss serve" in table
    assert n.cli_json("retention", "rules") == [
        {"rule": 0, "domain": "*", "folder": "INBOX", "days": 0.5 / DAY}]
    for i in range(2):
        deliver_from_this_process(n, ALICE, message(f"inbox {i}", rcpt=ALICE))
    time.sleep(0.6)
    dry = n.cli_json("retention", "run", "--dry-run")
    assert [(r["mailbox"], r["messages"]) for r in dry] == [(ALICE, 2)]
    out = n.cli("retention", "run", "--dry-run").stdout
    assert "would expunge 2 message(s)" in out and max(map(len, out.splitlines())) <= 80
    assert message_count(n, ALICE) == 2
    out = n.cli("retention", "run").stdout
    assert re.search(rf"{re.escape(ALICE)}\s+#\d+\s+0\s+2\s+\d+", out), out
    assert "expunged 2 message(s)" in out
    assert message_count(n, ALICE) == 0
    rows = n.audit("--event", "retention.expunge")
    assert len(rows) == 1 and rows[0]["actor"].startswith("cli:")
    assert rows[0]["detail"]["messages"] == 2
    assert n.cli_json("retention", "run") == []  # nothing left


@pytest.mark.backends("sqlite")
def test_retention_run_without_rules_is_refused(tmp_path: Path) -> None:
    n = make_node(tmp_path)
    assert error_line(n, "retention", "run") == \
        "mss: error: no [[retention.rules]] in the configuration: nothing to apply"


def test_a_hold_set_during_a_round_stops_it_for_that_mailbox(quiet_node: Node) -> None:
    """Batches of one message: after the first commit the mailbox goes under hold (another
    transaction, as the CLI's); the round reads the hold again under the writer's lock
    before each batch and leaves the rest."""
    import dataclasses

    from mss.mailstore import holds

    n = quiet_node
    for i in range(3):
        deliver_from_this_process(n, ALICE, message(f"inbox {i}", rcpt=ALICE))
    time.sleep(0.6)
    app = open_app(n.config)
    try:
        cfg = dataclasses.replace(app.config.retention, batch=1)
        woken: list[int] = []

        def changed(mailbox_id: int) -> None:
            woken.append(mailbox_id)
            with app.engine.begin() as conn:
                holds.hold(conn, mailbox_id, ALICE, "during the round")

        report = run_round(app.engine, app.reader, app.keyring, cfg, changed=changed)
        with app.reader.connect() as conn:
            alice = mailboxes.require_mailbox(conn, ALICE)
    finally:
        app.close()
    assert woken == [alice.id] and alice.held_at is not None
    assert [(f.mailbox, f.messages) for f in report.folders] == [(ALICE, 1)]
    assert message_count(n, ALICE) == 2
