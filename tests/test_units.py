"""Unit tests of pure logic: crypto, message helpers, policy decisions, config, committer."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, select

from audit.events import CATALOGUE, Event, catalogue_table
from audit.journal import GENESIS, AuditRecord, append, chain_hash
from mss import crypto, db
from mss import message as rfc5322
from mss.committer import GroupCommitter
from mss.config import ConfigError, parse_config
from mss.db import scratch
from mss.passwords import hash_password, verify_password
from trustspace import policy
from trustspace.dn import parse_dn
from trustspace.whitelist import Whitelist, WhitelistEntry

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- crypto

def test_seal_open_roundtrip_and_binding() -> None:
    key = AESGCM(AESGCM.generate_key(bit_length=256))
    sealed = crypto.seal_message(key, "mailbox:1", "m1", b"secret body")
    assert b"secret" not in sealed.body_blob + sealed.key_blob
    assert crypto.open_message(key, "mailbox:1", "m1", sealed.key_blob, sealed.body_blob) \
        == b"secret body"
    for owner, mid in (("mailbox:2", "m1"), ("mailbox:1", "m2")):
        with pytest.raises(crypto.TamperedError):
            crypto.open_message(key, owner, mid, sealed.key_blob, sealed.body_blob)
    with pytest.raises(crypto.TamperedError):
        crypto.open_message(key, "mailbox:1", "m1", sealed.key_blob, sealed.body_blob[:-1])
    # two seals of the same text differ (fresh key and nonce)
    again = crypto.seal_message(key, "mailbox:1", "m1", b"secret body")
    assert again.body_blob != sealed.body_blob


def test_key_file_permissions_and_format(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    crypto.new_master_key_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    provider = crypto.FileKeyProvider(path)
    assert provider.versions() == [1]
    crypto.write_key_file(path, {1: provider.key(1), 2: os.urandom(32)})  # a new KEK line
    provider.reload()
    assert provider.versions() == [1, 2] and provider.current_version() == 2
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.chmod(0o640)
    with pytest.raises(crypto.MasterKeyError, match="chmod 600"):
        crypto.FileKeyProvider(path)
    path.chmod(0o600)
    path.write_text("1:not-base64!\n")
    with pytest.raises(crypto.MasterKeyError, match="line 1"):
        crypto.FileKeyProvider(path)


# --------------------------------------------------------------------------- messages

def test_header_helpers() -> None:
    msg = b"Subject: hi\r\nMessage-ID:\r\n <abc@x>\r\nFrom: a@b\r\n\r\nMessage-ID: <body@x>\r\n"
    assert rfc5322.message_id(msg) == "<abc@x>"
    assert rfc5322.find_header(msg, "from") == "a@b"
    assert rfc5322.find_header(msg, "To") is None
    assert rfc5322.find_header(b"\r\nMessage-ID: <b@x>\r\n", "Message-ID") is None


def test_author_check_reads_the_fields_imap_shows() -> None:
    """Issue 13 #2, one MIME reader: the stdlib parser stopped the header at a line that is
    no field, so a second From: after it escaped the author check while the recipient's
    IMAP ENVELOPE (mss.mime) shows both addresses; both now read the same fields."""
    from proxy.imap.mime import parse_message

    hidden = b"From: alice@demo\r\nnot a field\r\nFrom: dg@ars.sante.fr\r\n\r\nbody\r\n"
    assert b"dg" in parse_message(hidden).envelope()
    found = rfc5322.authors(hidden)
    assert found.problem is not None and "2 From fields" in found.problem
    assert rfc5322.authors(b"Sender: a@b\r\nFrom: a@b\r\n\r\n").from_ == ("a@b",)
    # RFC 5322 §4.5.3 obs-optional: white space before the colon is still the field
    assert rfc5322.find_header(b"X-MSS-INS : 123\r\n\r\n", "x-mss-ins") == "123"
    assert rfc5322.header_block(b"A: b\r\n c\r\n\r\nbody") == b"A: b\r\n c\r\n"


@given(st.binary(max_size=200))
def test_bare_cr_lf_detection(data: bytes) -> None:
    expected = data.replace(b"\r\n", b"").count(b"\r") > 0 or \
        data.replace(b"\r\n", b"").count(b"\n") > 0
    assert rfc5322.has_bare_cr_or_lf(data) == expected


@given(st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=8))
def test_longest_line(lengths: list[int]) -> None:
    data = b"".join(b"a" * n + b"\r\n" for n in lengths)
    assert rfc5322.longest_line(data) == max(lengths) + 2


def test_received_header_is_ascii_and_sanitised() -> None:
    header = rfc5322.received_header(helo="evil\r\nX: y", peer_ip="127.0.0.1",
                                     hostname="mx.demo", protocol="ESMTPS", queue_id="q1",
                                     recipient="a@b")
    assert header.count(b"\r\n") == 4 and b"evil??X:?y" in header


# --------------------------------------------------------------------------- policy

def whitelist() -> Whitelist:
    return Whitelist(7, [WhitelistEntry("operator-a.mssante.fr", "CN=a", "", "", "", "")])


def facts(address: str, hosted: bool, exists: bool = True, enabled: bool = True
          ) -> policy.RecipientFacts:
    return policy.RecipientFacts(address, address.split("@")[1], hosted, exists, enabled)


def test_policy_decisions_and_reply_table() -> None:
    wl = whitelist()
    peer = policy.PeerCertificate("CN=a", parse_dn("cn=A"))  # the certificate's DN, listed
    d = policy.mx_sender("x@gmail.com", wl, peer)
    assert not d.accepted and str(d.reply) == "550 5.7.1 Sender outside the MSSante trust space"
    assert d.whitelist_version == 7 and "gmail.com" in d.reason
    assert policy.mx_sender("x@OPERATOR-A.mssante.fr".lower(), wl, peer).accepted
    assert policy.mx_sender("", wl, peer).accepted  # delivery report from a listed operator
    assert str(policy.mx_sender("x@operator-a.mssante.fr", wl).reply) == \
        "550 5.7.1 Client certificate required"  # the MX requires one
    stranger = policy.PeerCertificate("CN=b", parse_dn("CN=b"))
    assert policy.mx_sender("", wl, stranger).reply.code == 550
    assert policy.mx_recipient(facts("a@demo", True, False), wl).reply.enhanced == "5.1.1"
    disabled = policy.mx_recipient(facts("a@demo", True, True, False), wl)
    assert disabled.reply.enhanced == "5.1.1" and "disabled" in disabled.reason
    assert policy.submission_recipient(facts("b@operator-a.mssante.fr", False), wl).accepted
    out = policy.submission_recipient(facts("b@gmail.com", False), wl)
    assert (out.reply.code, out.reply.enhanced) == (550, "5.7.1")
    assert policy.submission_sender("b@demo", "a@demo", frozenset({"a@demo"})).reply.code == 553
    for verdict in policy.Verdict:
        if verdict is not policy.Verdict.ACCEPT:
            assert verdict in policy.REPLIES  # one table covers every outcome
    empty = Whitelist.empty()
    assert not policy.submission_recipient(facts("b@operator-a.mssante.fr", False),
                                           empty).accepted  # default deny


# --------------------------------------------------------------------------- config

def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    good = parse_config({}, cfg)
    assert good.listeners["mx"].port == 2525 and good.smtp.max_message_size == 50 * 1024 * 1024
    bad = [
        ({"smtp": {"max_message_size": "big"}}, "smtp.max_message_size"),
        ({"smtp": {"session_timeout": -1}}, "smtp.session_timeout"),
        ({"listeners": {"mx": {"port": 70000}}}, "listeners.mx.port"),
        ({"listeners": {"pop3": {}}}, "listeners.pop3"),
        ({"logging": {"level": "loud"}}, "logging.level"),
        ({"database": {"url": "mysql://x"}}, "database.url"),
        ({"whitelist": {"max_shrink_ratio": 2.0}}, "whitelist.max_shrink_ratio"),
    ]
    for raw, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config(raw, cfg)


def test_example_config_parses() -> None:
    import tomllib

    raw = tomllib.loads((REPO / "config" / "mss.toml").read_text())
    parse_config(raw, REPO / "config" / "mss.toml")


# --------------------------------------------------------------------------- audit

def test_catalogue_doc_matches_code() -> None:
    doc = (REPO / "docs" / "audit-events.md").read_text()
    assert catalogue_table() in doc
    with pytest.raises(ValueError):
        AuditRecord("not.an.event")
    assert all(k.action in "CRUDE" for k in CATALOGUE.values())


def test_event_members_are_the_catalogue() -> None:
    """One Event member per catalogue entry, in the catalogue's order, and back: the
    catalogue is keyed by the members (issue 13 #8)."""
    assert list(CATALOGUE) == list(Event)
    assert all(isinstance(k, Event) and CATALOGUE[k].name is k for k in CATALOGUE)
    assert AuditRecord("server.start").event is Event.SERVER_START  # read back from the DB


def sqlite_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = db.make_engine(f"sqlite:///{tmp_path}/t.db")
    db.create_schema(engine)
    return engine


def test_hash_chain(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    with engine.begin() as conn:
        append(conn, [AuditRecord("server.start"), AuditRecord("server.stop", actor="x")])
    with engine.begin() as conn:
        append(conn, [AuditRecord("audit.read")])
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(db.audit_log))]
    assert rows[0]["prev_hash"] == GENESIS
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row["prev_hash"] == prev["hash"]
    for row in rows:
        assert chain_hash(row["prev_hash"], row) == row["hash"]


# --------------------------------------------------------------------------- committer

async def test_group_commit_batches_and_isolates_failures(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    committer = GroupCommitter(engine)
    await committer.start()
    try:
        def good(i: int):  # type: ignore[no-untyped-def]
            return lambda conn: conn.execute(insert(db.meta).values(key=f"k{i}", value="v"))

        def bad(conn):  # type: ignore[no-untyped-def]
            conn.execute(insert(db.meta).values(key="dup", value="1"))
            conn.execute(insert(db.meta).values(key="dup", value="2"))  # unique violation

        results = await asyncio.gather(*(committer.run(good(i)) for i in range(200)),
                                       committer.run(bad), return_exceptions=True)
        assert sum(isinstance(r, Exception) for r in results) == 1
        assert committer.batches < 200  # concurrent jobs shared commits
    finally:
        await committer.stop(time.monotonic() + 10)
    with engine.connect() as conn:
        keys = set(conn.execute(select(db.meta.c.key)).scalars())
    assert len(keys) == 200 and "dup" not in keys


async def test_committer_scratch_space_lives_one_transaction(tmp_path: Path) -> None:
    """The committer owns a per-transaction scratch space (issue 13 #2): shared by the jobs
    of a batch, fresh for each transaction (a rolled-back batch leaves nothing behind, so
    the journal's cached chain head never outlives its transaction), None elsewhere."""
    engine = sqlite_engine(tmp_path)
    committer = GroupCommitter(engine)

    def job(i: int):  # type: ignore[no-untyped-def]
        def work(conn):  # type: ignore[no-untyped-def]
            space = scratch(conn)
            assert space is not None
            space.setdefault("jobs", []).append(i)
            append(conn, [AuditRecord("server.start", detail={"i": i})])
            return list(space["jobs"])
        return work

    def failing(conn):  # type: ignore[no-untyped-def]
        space = scratch(conn)
        assert space is not None
        space["jobs"] = ["stale"]
        append(conn, [AuditRecord("server.stop")])
        raise RuntimeError("rolled back")

    await committer.start()
    try:
        first = await asyncio.gather(*(committer.run(job(i)) for i in range(50)))
        second = await asyncio.gather(*(committer.run(job(i)) for i in range(50, 60)),
                                      committer.run(failing), return_exceptions=True)
    finally:
        await committer.stop(time.monotonic() + 10)
    assert any(len(jobs) > 1 for jobs in first)  # the jobs of a batch share one space
    assert isinstance(second[-1], RuntimeError)
    assert all("stale" not in jobs for jobs in second[:-1])  # type: ignore[operator]
    with engine.begin() as conn:
        assert scratch(conn) is None  # not the committer's transaction
        rows = [dict(r._mapping) for r in conn.execute(select(db.audit_log)
                                                        .order_by(db.audit_log.c.id))]
    assert len(rows) == 60 and rows[0]["prev_hash"] == GENESIS
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row["prev_hash"] == prev["hash"]  # the chain survived the rolled-back job


def test_passwords() -> None:
    stored = hash_password("s3cret pass")
    assert verify_password("s3cret pass", stored)
    assert not verify_password("other", stored)
    assert not verify_password("x", None)
    assert not verify_password("x", "$md5$garbage")
    assert os.environ.get("MSS_TEST_NEVER_SET") is None


def test_logging_file_gets_the_json_lines(tmp_path: Path) -> None:
    import json

    import structlog

    from mss.logs import configure

    target = tmp_path / "mss.log"
    try:
        configure("info", target)
        structlog.get_logger("mss.test").info("ready", worker=0)
    finally:
        configure("info")  # back to stderr for the other tests
    line = json.loads(target.read_text().splitlines()[-1])
    assert line["event"] == "ready" and line["worker"] == 0 and line["level"] == "info"
