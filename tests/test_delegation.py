"""Delegation (issue 16 part 3): a grantee sends as an ORG/APP mailbox it was granted with
the send right (``mss mailbox grant A U --send``), the message carrying ``Sender:`` the
grantee (RFC 5322 §3.6.2), both identities audited; without the right, or once the
shared mailbox is not usable, ``553`` as before. Real smtplib clients on a served node;
the stored copy read back from the recipient's mailbox."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from mss import db
from mss.app import open_app
from mss.mailstore import grants, mailboxes
from tests.node import DOMAIN, PASSWORD, Node, make_node, read_all

ALICE, BOB, SHARED = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"secretariat@{DOMAIN}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("delegation"))
    n.start()
    yield n
    n.stop()


def grant(node: Node, *args: str) -> str:
    return node.cli("mailbox", "grant", SHARED, ALICE, *args).stdout


def submission(node: Node) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30)
    client.starttls(context=node.client_context())
    client.ehlo("client.test")
    client.login(ALICE, PASSWORD)
    return client


def letter(tag: str, author: str = SHARED, sender: str | None = None) -> bytes:
    head = f"From: Secretariat <{author}>\r\nTo: <{BOB}>\r\n"
    if sender is not None:
        head += f"Sender: <{sender}>\r\n"
    return (head + f"Subject: rdv\r\nMessage-ID: <{tag}@test.example>\r\n"
            "Date: Thu, 03 Dec 2026 09:00:00 +0000\r\n\r\nBonjour.\r\n").encode()


def received(node: Node, tag: str) -> email.message.EmailMessage:
    found = [m for m in read_all(node, BOB) if f"<{tag}@test.example>".encode() in m]
    assert len(found) == 1
    return email.message_from_bytes(found[0], policy=email.policy.default)  # type: ignore[return-value]


def send(node: Node, mail_from: str, data: bytes) -> dict[str, tuple[int, bytes]]:
    with submission(node) as client:
        return client.sendmail(mail_from, [BOB], data)


def test_grant_cli_adds_and_withdraws_the_send_right(node: Node) -> None:
    assert "(no send right)" in grant(node)
    again = node.cli("mailbox", "grant", SHARED, ALICE, check=False)
    assert again.returncode == 2 and again.stderr == (
        f"mss: error: {ALICE} already has access to {SHARED} (no send right)\n")
    assert "and may send as it" in grant(node, "--send")
    twice = node.cli("mailbox", "grant", SHARED, ALICE, "--send", check=False)
    assert twice.returncode == 2 and "with the send right" in twice.stderr
    records = node.audit("--event", "admin.mailbox.grant")
    assert [r["detail"]["can_send"] for r in records[-2:]] == [False, True]  # type: ignore[index]
    assert "(no send right)" in grant(node)  # withdrawn: access stays
    node.cli("mailbox", "revoke", SHARED, ALICE)


def test_without_the_send_right_553_as_before(node: Node) -> None:
    grant(node)  # access over IMAP only
    try:
        with submission(node) as client:
            code, _ = client.mail(SHARED)
            assert code == 553
            client.rset()
            assert client.mail(ALICE)[0] == 250
            assert client.rcpt(BOB)[0] == 250
            code, text = client.data(letter(f"nosend{time.time_ns()}"))
            assert (code, text) == (550, b"5.7.1 From address not allowed for this login")
    finally:
        node.cli("mailbox", "revoke", SHARED, ALICE)


def test_with_the_send_right_the_message_gets_sender_the_grantee(node: Node) -> None:
    grant(node, "--send")
    try:
        tag = f"send{time.time_ns()}"
        assert send(node, SHARED, letter(tag)) == {}
        stored = received(node, tag)
        assert stored.get_all("Sender") == [ALICE] and SHARED in str(stored["From"])
        assert f"Sender: <{ALICE}>\r\n".encode() in stored.as_bytes(policy=email.policy.SMTP)
        [delegated] = [r for r in node.audit("--event", "smtp.delegated")
                       if tag in str(r.get("message_id"))]
        assert delegated["actor"] == ALICE and delegated["mailbox"] == SHARED
        assert delegated["mail_from"] == SHARED
        assert delegated["detail"]["sender_added"] is True  # type: ignore[index]
        [accepted] = [r for r in node.audit("--event", "smtp.message.accepted")
                      if tag in str(r.get("message_id"))]
        assert accepted["actor"] == ALICE
        assert accepted["detail"]["on_behalf_of"] == SHARED  # type: ignore[index]

        # a Sender: that names the grantee is kept as it is, not added twice
        tag = f"kept{time.time_ns()}"
        assert send(node, ALICE, letter(tag, sender=ALICE.upper())) == {}
        assert received(node, tag).get_all("Sender") == [ALICE.upper()]
        [delegated] = [r for r in node.audit("--event", "smtp.delegated")
                       if tag in str(r.get("message_id"))]
        assert delegated["detail"]["sender_added"] is False  # type: ignore[index]

        # a Sender: naming anyone else on a message from the shared mailbox: refused
        before = len(node.audit("--event", "smtp.message.refused"))
        with submission(node) as client, pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SHARED, [BOB], letter(f"other{time.time_ns()}", sender=BOB))
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error == b"5.7.1 Sender address not allowed for this login"
        rows = node.wait_audit(lambda r: r["event"] == "smtp.message.refused",
                               count=before + 1)
        assert "header_sender_not_allowed: Sender" in str(rows[-1]["reason"])

        # the author is the grantee herself: no delegation, no Sender: added
        tag = f"own{time.time_ns()}"
        assert send(node, ALICE, letter(tag, author=ALICE)) == {}
        assert received(node, tag).get_all("Sender") is None
    finally:
        node.cli("mailbox", "revoke", SHARED, ALICE)


def _set_suspended(node: Node, when: float | None) -> None:
    """The state 'mss mailbox suspend' leaves (issue 16 part 1: another change)."""
    app = open_app(node.config)
    try:
        with app.engine.begin() as conn:
            conn.execute(update(db.mailboxes).where(db.mailboxes.c.address == SHARED)
                         .values(suspended_at=when))
    finally:
        app.close()


def test_a_suspended_shared_mailbox_is_reached_through_no_grant(node: Node) -> None:
    grant(node, "--send")
    _set_suspended(node, time.time())
    try:
        app = open_app(node.config)
        try:
            with app.reader.connect() as conn:
                shared = mailboxes.require_mailbox(conn, SHARED)
                alice = mailboxes.require_mailbox(conn, ALICE)
                assert shared.state == "suspended"
                assert not grants.has_grant(conn, shared.id, alice.id)
                assert grants.granted_mailboxes(conn, alice.id) == []
                assert grants.send_as(conn, alice.id) == []
        finally:
            app.close()
        with submission(node) as client:
            assert client.mail(SHARED)[0] == 553
    finally:
        _set_suspended(node, None)
        node.cli("mailbox", "revoke", SHARED, ALICE)
