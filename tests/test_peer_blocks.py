"""Local peer blocks (``mss peer block|unblock|list``, trustspace/blocks.py, issue 16): the
CLI and its bad input, the MX and submission refusals with real smtplib clients on a
served node, and outbound with a second operator (tests/outbound_pair.py, on this
module's loopback range 127.0.44.0/24): rows held while the peer's domain is blocked and
released by the unblock, a peer MX presenting a blocked DN never given mail, a peer that
blocks us answering 450 then taking the mail once it unblocks."""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Iterator

import pytest

from tests.node import (
    BACKENDS,
    DOMAIN,
    OPERATOR_A_DN,
    PASSWORD,
    Node,
    make_node,
    read_all,
    wait_for,
)
from tests.outbound_pair import (
    A_DOMAIN,
    B_DOMAIN,
    SUBJECTS,
    Pair,
    make_pair,
    message,
    submit,
    with_tag,
)
from trustspace import policy
from trustspace.blocks import PeerBlock, PeerBlocks
from trustspace.dn import parse_dn
from trustspace.whitelist import Whitelist, WhitelistEntry

PEER = "operator-a.mssante.fr"  # whitelisted for OPERATOR_A_DN, the MX client's certificate
OTHER = "operator-b.mssante.fr"
ALICE = f"alice@{DOMAIN}"
BACKENDS = BACKENDS  # the single-node tests on SQLite and PostgreSQL (the pair: SQLite)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("blocks"), backend=backend)
    n.start()
    yield n
    n.stop()


def loaded(node: Node, version: tuple[int, int], timeout: float = 20.0) -> bool:
    """The serving node logged that it loaded the blocks of *version* (its watch runs
    every whitelist.reload_interval = 0.5 s in tests)."""
    assert node.log_path is not None

    def seen() -> bool:
        for line in node.log_path.read_text(errors="replace").splitlines():  # type: ignore[union-attr]
            if '"peer blocks loaded"' in line and json.loads(line).get("version") == \
                    list(version):
                return True
        return False
    return wait_for(seen, timeout, 0.05)


def version(node: Node) -> tuple[int, int]:
    rows = node.cli_json("peer", "list", "--all")
    return (max((r["id"] for r in rows), default=0),
            sum(1 for r in rows if r["ended_at"] is not None))


def change(node: Node, *args: str) -> str:
    """A block or unblock through the CLI, applied by the serving node; its output."""
    out = node.cli("peer", *args).stdout
    assert loaded(node, version(node)), f"mss peer {' '.join(args)} not picked up"
    return out


def mx_mail_from(node: Node, sender: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", node.ports["mx"], timeout=30) as client:
        client.starttls(context=node.mx_client_context())
        client.ehlo("mx.operator-a.fr")
        return client.mail(sender)


def count(node: Node, event: str) -> int:
    return len(node.audit("--event", event))


def last(node: Node, event: str, before: int = 0) -> dict[str, object]:
    """The newest *event* record once there are more than *before* (refusals are
    committed after their reply)."""
    rows = node.wait_audit(lambda r: r["event"] == event, count=before + 1)
    assert len(rows) > before, f"no new {event} record"
    return rows[-1]


# --------------------------------------------------------------------------- CLI

@pytest.mark.parametrize(("args", "words"), [
    ((), "name a DOMAIN or a --cert-dn"),
    ((PEER, "--cert-dn", OPERATOR_A_DN), "name a DOMAIN or a --cert-dn"),
    (("no_such..domain",), "invalid domain"),
    (("--cert-dn", "not a dn"), "--cert-dn: not type=value"),
    ((DOMAIN,), f"domain {DOMAIN} is hosted here"),
    ((PEER, "--until", "2001-01-01"), "is not in the future"),
    ((PEER, "--until", "soon"), "--until: not a duration"),
    ((PEER, "--reason", "x" * 501), "--reason: one line of at most 500"),
])
def test_block_bad_input_is_one_line_exit_2_nothing_changed(node: Node, args: tuple[str, ...],
                                                           words: str) -> None:
    before = len(node.audit("--event", "admin.peer"))
    bad = node.cli("peer", "block", *args, check=False)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("mss: error: ") and words in bad.stderr
    assert node.cli_json("peer", "list") == []
    assert len(node.audit("--event", "admin.peer")) == before


def test_unblock_or_block_twice_is_a_conflict(node: Node) -> None:
    bad = node.cli("peer", "unblock", OTHER, check=False)
    assert bad.returncode == 2 and bad.stderr == f"mss: error: domain {OTHER} is not blocked\n"
    node.cli("peer", "block", OTHER.upper() + ".", "--until", "1h")  # any spelling: one domain
    try:
        twice = node.cli("peer", "block", OTHER, check=False)
        assert twice.returncode == 2 and "is already blocked" in twice.stderr
        rows = node.cli_json("peer", "list")
        assert [(r["domain"], r["state"]) for r in rows] == [(OTHER, "active")]
    finally:
        node.cli("peer", "unblock", OTHER)


# --------------------------------------------------------------------------- MX

def test_domain_block_refuses_the_peer_on_the_mx_until_unblocked(node: Node) -> None:
    assert mx_mail_from(node, f"dr@{PEER}")[0] == 250
    out = change(node, "block", PEER, "--reason", "incident 42")
    assert f"domain {PEER} blocked" in out and "until unblocked" in out
    before = count(node, "smtp.sender.refused")
    code, text = mx_mail_from(node, f"dr@{PEER}")
    assert (code, text) == (550, b"5.7.1 Sender not accepted by local policy")
    refused = last(node, "smtp.sender.refused", before)
    detail = refused["detail"]
    assert isinstance(detail, dict) and detail["check"] == "peer_blocked"
    assert "local block #" in str(refused["reason"]) and "incident 42" in str(refused["reason"])
    assert refused["outcome"] == 4
    block = last(node, "admin.peer.block")
    assert block["detail"]["domain"] == PEER and block["reason"] == "incident 42"  # type: ignore[index]
    [row] = node.cli_json("peer", "list")
    assert row["domain"] == PEER and row["state"] == "active" and row["until"] is None
    table = node.cli("peer", "list").stdout
    assert PEER in table and "incident 42" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    out = change(node, "unblock", PEER)
    assert f"domain {PEER} unblocked" in out
    assert mx_mail_from(node, f"dr@{PEER}")[0] == 250
    ended = [r for r in node.cli_json("peer", "list", "--all") if r["domain"] == PEER]
    assert ended[-1]["state"] == "ended" and str(ended[-1]["ended_by"]).startswith("cli:")
    assert node.cli_json("peer", "list") == []
    assert last(node, "admin.peer.unblock")["detail"]["domain"] == PEER  # type: ignore[index]


def test_temporary_dn_block_answers_450_even_to_the_null_sender(node: Node) -> None:
    # the DN as another publisher would write it: X.500 order, other case and spacing
    spelled = "c=FR, st=Paris (75), o=OPERATOR A, ou=312345678, cn=MX.OPERATOR-A.FR"
    out = change(node, "block", "--cert-dn", spelled, "--until", "2h")
    assert "blocked (block #" in out and "until 20" in out
    before = count(node, "smtp.sender.refused")
    for sender in (f"dr@{PEER}", "<>"):
        code, text = mx_mail_from(node, sender)
        assert (code, text) == (450, b"4.7.1 Sender temporarily not accepted, try again later")
    refused = last(node, "smtp.sender.refused", before + 1)
    assert refused["detail"]["check"] == "peer_blocked"  # type: ignore[index]
    assert "certificate DN" in str(refused["reason"]) and "until" in str(refused["reason"])
    change(node, "unblock", "--cert-dn", OPERATOR_A_DN)  # compared parsed: the same DN
    assert mx_mail_from(node, "<>")[0] == 250


# --------------------------------------------------------------------------- submission

def test_submission_refuses_a_recipient_of_a_domain_blocked_for_good(node: Node) -> None:
    change(node, "block", OTHER)
    change(node, "block", PEER, "--until", "1h")
    before = count(node, "smtp.recipient.refused")
    try:
        with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30) as client:
            client.starttls(context=node.client_context())
            client.ehlo("client.test")
            client.login(ALICE, PASSWORD)
            assert client.mail(ALICE)[0] == 250
            assert client.rcpt(f"dr@{OTHER}") == (
                550, b"5.7.1 Recipient not accepted by local policy")
            # a block with an end: accepted and queued, the worker holds it until then
            assert client.rcpt(f"dr@{PEER}")[0] == 250
        refused = last(node, "smtp.recipient.refused", before)
        assert refused["rcpt"] == f"dr@{OTHER}" and "peer_blocked" in str(refused["reason"])
        assert refused["detail"]["check"] == "recipient-blocked"  # type: ignore[index]
    finally:
        change(node, "unblock", OTHER)
        change(node, "unblock", PEER)


# --------------------------------------------------------------------------- units

def _block(n: int, *, domain: str | None = None, dn: str | None = None,
           until: float | None = None) -> PeerBlock:
    return PeerBlock(n, domain, dn, until, "why", 0.0, "cli:test")


def test_blocks_match_any_spelling_and_end_by_the_clock() -> None:
    blocks = PeerBlocks((2, 0), [_block(1, domain="xn--hpital-ixa.test", until=100.0),
                                 _block(2, dn="CN=mx.b,O=B,C=FR")])
    assert blocks.domain_block("HÔPITAL.test.", now=99.0) is not None
    assert blocks.domain_block("hôpital.test", now=100.0) is None  # ended by itself
    assert blocks.domain_block("not a domain", now=0.0) is None
    assert blocks.dn_block(parse_dn("c=fr,o=b,cn=MX.B"), now=1e12) is not None
    assert blocks.dn_block(parse_dn("CN=mx.b,O=B,C=DE")) is None
    assert PeerBlocks.empty().dn_block(parse_dn("CN=x")) is None and len(blocks) == 2


def test_mx_sender_local_block_comes_before_the_whitelist() -> None:
    dn_a = "CN=mx.a,O=A,C=FR"
    whitelist = Whitelist(7, [WhitelistEntry("a.test", dn_a, "", "", "", "")])
    peer = policy.PeerCertificate(dn_a, parse_dn(dn_a))
    assert policy.mx_sender("x@a.test", whitelist, peer, PeerBlocks.empty()).accepted
    by_domain = policy.mx_sender("x@a.test", whitelist, peer,
                                 PeerBlocks((1, 0), [_block(1, domain="a.test")]))
    assert by_domain.verdict is policy.Verdict.PEER_BLOCKED
    assert str(by_domain.reply) == "550 5.7.1 Sender not accepted by local policy"
    assert by_domain.whitelist_version == 7 and by_domain.reason.startswith("peer_blocked: ")
    by_dn = policy.mx_sender("", whitelist, peer,
                             PeerBlocks((1, 0), [_block(1, dn=dn_a, until=time.time() + 60)]))
    assert by_dn.verdict is policy.Verdict.PEER_BLOCKED_TEMPORARILY
    assert by_dn.reply.code == 450 and "certificate DN" in by_dn.reason
    # not on the whitelist and blocked: the block is the reason recorded
    assert policy.mx_sender("x@b.test", whitelist, peer, PeerBlocks(
        (1, 0), [_block(1, domain="b.test")])).verdict is policy.Verdict.PEER_BLOCKED


# --------------------------------------------------------------------------- two operators

@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = make_pair(tmp_path_factory.mktemp("pair"), hosts=("127.0.44.2", "127.0.44.3"),
                  max_attempts=8)
    for n in p.nodes():
        n.start()
    yield p
    p.close()


def queued_row(node: Node, rcpt: str, tag: str) -> dict[str, object] | None:
    rows = [r for r in node.cli_json("queue", "list", "--status", "queued")
            if r["rcpt"] == rcpt and tag in str(r["message_id"])]
    return rows[-1] if rows else None


def test_outbound_to_a_blocked_domain_is_held_then_released_by_unblock(pair: Pair) -> None:
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    change(a, "block", B_DOMAIN, "--until", "1h", "--reason", "peer incident")
    tag = f"held{time.time_ns()}"
    submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
    held = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt
                        and tag in str(r.get("message_id", "")), pair.schedule.first_try())
    assert held and str(held[-1]["reason"]).startswith(f"peer_blocked: recipient domain "
                                                       f"{B_DOMAIN}: local block #")
    row = queued_row(a, rcpt, tag)
    assert row is not None and row["attempts"] == 0  # no attempt made, none counted
    assert float(row["next_attempt_at"]) > time.time() + 3000  # type: ignore[arg-type]
    assert not with_tag(read_all(b, rcpt), tag)
    out = a.cli("peer", "unblock", B_DOMAIN).stdout
    assert "1 queued row(s) due now" in out
    assert wait_for(lambda: with_tag(read_all(b, rcpt), tag), pair.schedule.first_try())
    assert a.audit("--event", "admin.peer.unblock")[-1]["detail"]["released"] == 1  # type: ignore[index]


def test_a_peer_mx_presenting_a_blocked_dn_never_gets_the_mail(pair: Pair) -> None:
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    change(a, "block", "--cert-dn", SUBJECTS["operator-b"])
    try:
        tag = f"dn{time.time_ns()}"
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
        rows = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt
                            and tag in str(r.get("message_id", "")),
                            pair.schedule.first_try())
        assert rows and "peer_blocked: certificate DN" in str(rows[-1]["reason"])
        assert "OPERATEUR B" in str(rows[-1]["reason"])
        assert not with_tag(read_all(b, rcpt), tag)
    finally:
        out = a.cli("peer", "unblock", "--cert-dn", SUBJECTS["operator-b"]).stdout
    assert "due now" in out
    assert wait_for(lambda: with_tag(read_all(b, rcpt), tag), pair.schedule.next_try(2))


def test_a_peer_blocking_us_defers_our_mail_until_it_unblocks(pair: Pair) -> None:
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    change(b, "block", A_DOMAIN, "--until", "1h")
    tag = f"mx{time.time_ns()}"
    try:
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
        rows = a.wait_audit(lambda r: r["event"] == "queue.deferred" and r["rcpt"] == rcpt
                            and tag in str(r.get("message_id", "")),
                            pair.schedule.first_try())
        assert rows and "450 4.7.1" in str(rows[-1]["reason"])
        refused = [r for r in b.audit("--event", "smtp.sender.refused")
                   if r["mail_from"] == f"alice@{A_DOMAIN}"]
        assert refused and refused[-1]["detail"]["check"] == "peer_blocked"  # type: ignore[index]
    finally:
        change(b, "unblock", A_DOMAIN)
    assert wait_for(lambda: with_tag(read_all(b, rcpt), tag), pair.schedule.next_try(3))


def test_a_peer_blocking_us_for_good_bounces_with_a_dsn(pair: Pair) -> None:
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    change(b, "block", A_DOMAIN)
    tag = f"bounce{time.time_ns()}"
    try:
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, tag))
        rows = a.wait_audit(lambda r: r["event"] == "queue.bounced" and r["rcpt"] == rcpt,
                            pair.schedule.first_try())
        assert rows and "550 5.7.1" in str(rows[-1]["reason"])
        assert wait_for(lambda: [m for m in read_all(a, f"alice@{A_DOMAIN}")
                                 if f"rfc822; {rcpt}".encode() in m
                                 and b"Status: 5.7.1" in m], 30)
    finally:
        change(b, "unblock", A_DOMAIN)
