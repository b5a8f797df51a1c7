"""Keys several nodes share, in hardware (issue 14 point 3): key providers (a key file, a
PKCS#11 token in a real SoftHSM2), master versions held in the shared database, rotation
seen by every node without a restart, a wrong key refused at start-up with one line,
crypto-shredding seen by the other nodes, and databases made before providers still open.
"""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeSensitive, KeyUnextractable
from sqlalchemy import delete, insert, select

from mss import crypto, db
from mss.app import App, open_app
from mss.mailstore import mailboxes, messages
from mss.pkcs11 import Pkcs11KeyProvider, generate_kek, open_session
from mss.runtime import Runtime
from tests.node import (
    BACKENDS,
    DOMAIN,
    PASSWORD,
    Node,
    database_of,
    make_node,
    point_at,
    read_all,
)
from tests.older import as_made_by_main
from tests.softhsm import Token, softhsm

BACKENDS = BACKENDS  # the upgrade test (fresh_node) on both

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


# --------------------------------------------------------------------------- helpers

def submit(node: Node, to: str, subject: str) -> None:
    body = (f"From: <{ALICE}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@keys.test>\r\n\r\n{subject} body\r\n").encode()
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        assert client.sendmail(ALICE, [to], body) == {}


def imap_bodies(node: Node, user: str = BOB, password: str = PASSWORD) -> list[bytes]:
    """Every INBOX message of *user* read over IMAPS from *node* (what a client sees)."""
    with imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"],
                           ssl_context=node.client_context(), timeout=15) as m:
        m.login(user, password)
        status, data = m.select("INBOX", readonly=True)
        assert status == "OK", data
        if int(data[0] or 0) == 0:
            return []
        status, fetched = m.fetch("1:*", "(BODY.PEEK[])")
        assert status == "OK", fetched
        return [part[1] for part in fetched if isinstance(part, tuple)]


def use_token(node: Node, token: Token, key_label: str = "mss-kek") -> None:
    text_ = node.config.read_text()
    assert "[keys]\n" in text_
    node.config.write_text(text_.replace("[keys]\n", "[keys]\n" + token.toml(key_label), 1))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mss: error: "), lines
    return lines[0]


async def _runtime(app: App) -> Runtime:
    return Runtime.build(app)  # in an event loop, as mss serve does (not started here)


def share_database(first: Node, other: Node) -> None:
    """*other* serves *first*'s database with the same key file (a node added to it)."""
    point_at(other.config, database_of(first.config))
    shutil.copy(first.data_dir / "keys" / "master.key", other.data_dir / "keys" / "master.key")


# --------------------------------------------------------------------------- providers

def test_wrap_unwrap_round_trip_on_both_providers(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    crypto.new_master_key_file(key_file)
    token = softhsm().token()
    generate_kek(token.config())
    providers: list[crypto.KeyProvider] = [crypto.FileKeyProvider(key_file),
                                           Pkcs11KeyProvider(token.config())]
    secret = AESGCM.generate_key(bit_length=256)
    for provider in providers:
        blob = provider.wrap(secret, b"mss:master:v1|7")
        assert secret not in blob and provider.wrap(secret, b"mss:master:v1|7") != blob
        assert provider.unwrap(blob, b"mss:master:v1|7") == secret
        with pytest.raises(crypto.MasterKeyError, match="does not match"):
            provider.unwrap(blob, b"mss:master:v1|8")  # bound to its version
        tampered = blob[:-1] + bytes([blob[-1] ^ 1])
        with pytest.raises(crypto.MasterKeyError):
            provider.unwrap(tampered, b"mss:master:v1|7")
    assert providers[1].kek_id == f"pkcs11:{token.label}/mss-kek"
    # each provider refuses the other's blobs with one line naming the setting
    with pytest.raises(crypto.MasterKeyError, match="provider"):
        providers[0].unwrap(providers[1].wrap(secret, b"x"), b"x")
    # a file-wrapped version still opens on a node moving to the token (the key file kept)
    moving = Pkcs11KeyProvider(token.config(), previous=providers[0])
    assert moving.unwrap(providers[0].wrap(secret, b"x"), b"x") == secret


def test_kek_is_not_extractable(tmp_path: Path) -> None:
    token = softhsm().token()
    generate_kek(token.config())
    with pytest.raises(crypto.MasterKeyError, match="already exists"):
        generate_kek(token.config())  # never a second KEK under the same label
    session = open_session(token.config(), rw=True)
    try:
        kek = session.get_key(object_class=ObjectClass.SECRET_KEY, label="mss-kek")
        assert kek[Attribute.EXTRACTABLE] is False and kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.NEVER_EXTRACTABLE] is True and kek[Attribute.TOKEN] is True
        with pytest.raises(AttributeSensitive):
            kek[Attribute.VALUE]  # noqa: B018 - the token refuses to show the value
        wrapper = session.generate_key(KeyType.AES, 256, store=False,
                                       template={Attribute.WRAP: True})
        with pytest.raises(KeyUnextractable):  # nor to export it wrapped by another key
            wrapper.wrap_key(kek, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        with pytest.raises(pkcs11.PKCS11Error):  # nor to make it extractable afterwards
            kek[Attribute.EXTRACTABLE] = True
    finally:
        session.close()


def test_wrong_pin_or_token_refused_in_one_line(tmp_path: Path) -> None:
    hsm = softhsm()
    token = hsm.token()
    node = make_node(tmp_path)
    use_token(node, token)
    assert "generated" in node.cli("keys", "init-hsm").stdout
    key_file = node.data_dir / "keys" / "master.key"
    key_file.rename(key_file.with_suffix(".away"))  # versions in use are the file's still
    line = one_line_error(node.cli("mailbox", "list", check=False))
    assert "not wrapped by a PKCS#11 token" in line
    key_file.with_suffix(".away").rename(key_file)
    assert "re-wrapped" in node.cli("keys", "rotate").stdout  # every key under the token
    key_file.unlink()  # the token alone opens everything now
    assert node.cli("mailbox", "list").returncode == 0
    # the same labels on another token: another KEK, which does not unwrap this database
    other = hsm.token()
    generate_kek(other.config())
    node.config.write_text(node.config.read_text().replace(token.label, other.label)
                           .replace(str(token.pin_file), str(other.pin_file)))
    line = one_line_error(node.cli("serve", check=False))
    assert "does not match this database" in line
    # a wrong PIN: one line, and the PIN is never shown
    other.pin_file.write_text("0000-wrong\n")
    proc = node.cli("mailbox", "list", check=False)
    assert "login refused" in one_line_error(proc) and "0000" not in proc.stderr


# --------------------------------------------------------------------------- one node

def test_node_on_the_pkcs11_provider_serves(tmp_path: Path) -> None:
    token = softhsm().token()
    node = make_node(tmp_path)
    node.start()
    submit(node, BOB, "before the token")  # under the key file's KEK
    node.stop()
    use_token(node, token)
    node.cli("keys", "init-hsm")
    node.cli("keys", "rotate")  # the upgrade path: every key moves under the token's KEK
    status = {row["version"]: row for row in node.cli_json("keys", "status")}
    assert status[2]["kek_in_use"] == f"pkcs11:{token.label}/mss-kek" and status[2]["current"]
    assert status[2]["wrapped_by"] == f"pkcs11:{token.label}/mss-kek"
    assert status[1]["keys"] == 0
    (node.data_dir / "keys" / "master.key").unlink()
    # two serving processes, forked after the parent checked the keys: each logs in itself
    config = node.config.read_text()
    node.config.write_text(config.replace('[server]\ndata_dir = "."\n',
                                          '[server]\ndata_dir = "."\nworkers = 2\n', 1))
    assert node.config.read_text() != config
    node.start()
    try:
        submit(node, BOB, "under the token")
        bodies = imap_bodies(node)
        assert [b"before the token body" in b for b in bodies] == [True, False]
        assert b"under the token body" in bodies[1]
    finally:
        node.stop()
    audit = node.audit("--event", "admin.keys.init_hsm")
    assert len(audit) == 1 and audit[0]["outcome"] == 0


# --------------------------------------------------------------------------- several nodes

def test_rotation_and_shredding_seen_by_other_nodes(tmp_path: Path) -> None:
    backend = "postgresql"  # several nodes: one PostgreSQL database
    first = make_node(tmp_path / "1", backend=backend)
    second = make_node(tmp_path / "2", backend=backend)
    share_database(first, second)
    first.start()
    second.start()
    try:
        submit(first, BOB, "old mail")
        assert len(imap_bodies(second)) == 1  # node 2 has bob's key in its cache now
        assert "master key version 2" in first.cli("keys", "rotate").stdout
        # a mailbox made after the rotation: its key is wrapped by version 2, which node 2
        # has never seen: unwrapped from the database on first use, no restart
        first.cli("mailbox", "add", f"carol@{DOMAIN}", "--type", "PER", "--rpps",
                  "10000000003", "--password-stdin", input=PASSWORD + "\n")
        submit(first, BOB, "new mail")
        submit(first, f"carol@{DOMAIN}", "carol mail")
        bodies = imap_bodies(second)
        assert b"old mail body" in bodies[0] and b"new mail body" in bodies[1]
        assert b"carol mail body" in imap_bodies(second, f"carol@{DOMAIN}")[0]
        # a node started later works too
        third = make_node(tmp_path / "3", backend=backend)
        share_database(first, third)
        third.start()
        try:
            assert len(imap_bodies(third)) == 2
        finally:
            third.stop()
        # node 2's process has bob's key cached: the shred must reach it
        app = open_app(second.config)  # a serving process of node 2's, in this test
        try:
            watcher = asyncio.run(_runtime(app)).changes  # as mss serve builds it
            watcher.check()
            with app.reader.connect() as conn:
                bob = mailboxes.require_mailbox(conn, BOB)
                assert b"old mail body" in messages.read_message(conn, app.keyring, bob.id, 1)
            refused = first.cli("keys", "shred", BOB, check=False)
            assert "--yes" in one_line_error(refused)
            assert "key destroyed" in first.cli("keys", "shred", BOB, "--yes").stdout
            watcher.check()  # what the serving process's watcher does every change_poll
            with app.reader.connect() as conn, pytest.raises(crypto.KeyringError):
                messages.read_message(conn, app.keyring, bob.id, 1)
            watcher._close()
        finally:
            app.close()
        # the running node 2: bob is gone there as well, carol is untouched
        with pytest.raises(imaplib.IMAP4.error):
            imap_bodies(second)
        assert len(imap_bodies(second, f"carol@{DOMAIN}")) == 1
    finally:
        first.stop()
        second.stop()
    with pytest.raises(crypto.KeyringError):  # and no process can read it any more
        read_all(first, BOB)
    events = [(r["event"], r["outcome"]) for r in first.audit("--event", "admin.keys.shred")]
    assert events == [("admin.keys.shred", 4), ("admin.keys.shred", 0)]


def test_node_with_another_key_file_refuses_to_start(tmp_path: Path) -> None:
    backend = "postgresql"
    first = make_node(tmp_path / "1", backend=backend)
    first.cli("keys", "rotate")
    other = make_node(tmp_path / "2", backend=backend)
    point_at(other.config, database_of(first.config))
    crypto.new_master_key_file(other.data_dir / "keys" / "master.key")  # not the shared one
    for command in (("serve",), ("mailbox", "list"), ("keys", "status")):
        line = one_line_error(other.cli(*command, check=False))
        assert "does not match this database" in line, line


# --------------------------------------------------------------------------- upgrade

def test_database_made_before_providers_keeps_opening(fresh_node: Node) -> None:
    fresh_node.start()
    submit(fresh_node, BOB, "made by main")
    fresh_node.stop()
    before = read_all(fresh_node, BOB)
    as_made_by_main(fresh_node)
    refused = fresh_node.cli("keys", "status", check=False)
    assert refused.returncode == 2 and "run mss db upgrade" in refused.stderr
    fresh_node.cli("db", "upgrade")  # revision 0002 adds what the keys need
    status = {row["version"]: row for row in fresh_node.cli_json("keys", "status")}
    assert status[1]["wrapped_by"] == "key file"
    assert read_all(fresh_node, BOB) == before
    fresh_node.cli("keys", "rotate")
    status = {row["version"]: row for row in fresh_node.cli_json("keys", "status")}
    assert status[2]["keys"] > 0 and status[1]["keys"] == 0
    assert str(status[2]["wrapped_by"]).startswith("file:1:")
    assert read_all(fresh_node, BOB) == before  # the mailbox keys themselves unchanged
    fresh_node.cli("mailbox", "add", f"dan@{DOMAIN}", "--type", "PER", "--rpps",
                   "10000000004", "--no-password")  # a new key, under the database-held version
    status = {row["version"]: row for row in fresh_node.cli_json("keys", "status")}
    assert status[2]["keys"] == 5


def test_master_versions_are_cached_per_process(tmp_path: Path) -> None:
    """The token is asked once per master version a process uses, not per mailbox key nor
    per message: every other unwrap is AES-GCM in memory under the cached master key."""
    token = softhsm().token()
    generate_kek(token.config())

    class Counting(Pkcs11KeyProvider):
        calls = 0

        def unwrap(self, blob: bytes, ad: bytes) -> bytes:
            Counting.calls += 1
            return super().unwrap(blob, ad)

    url = f"sqlite:///{tmp_path / 'mss.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    writer = crypto.Keyring(engine, Pkcs11KeyProvider(token.config()))
    with engine.begin() as conn:
        for i in range(20):
            writer.create_key(conn, f"mailbox:{i}")
    reader = crypto.Keyring(engine, Counting(token.config()))
    with engine.connect() as conn:
        reader.verify_master(conn)
        for i in range(20):
            reader.key(f"mailbox:{i}", conn)
    assert Counting.calls == 1
    with engine.begin() as conn:
        conn.execute(insert(db.key_shreds).values(key_id="mailbox:3", shredded_at=0.0))
        conn.execute(delete(db.keyring).where(db.keyring.c.key_id == "mailbox:3"))
    with engine.connect() as conn:
        reader.poll(conn)
        with pytest.raises(crypto.KeyringError):
            reader.key("mailbox:3", conn)
        assert reader.key("mailbox:4", conn) is reader.key("mailbox:4", conn)
    engine.dispose()


def test_migration_adds_and_removes_the_keys_schema(tmp_path: Path, backend: str) -> None:
    """mss/migrations/versions/0002_keys.py run by Alembic's operations on a master_keys table
    of main's schema (a row in it): up, down, up again, on this backend."""
    import importlib.util

    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    spec = importlib.util.spec_from_file_location(
        "keys_revision", Path(__file__).parents[1] / "mss/migrations/versions/0002_keys.py")
    assert spec is not None and spec.loader is not None
    revision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(revision)
    assert (revision.revision, revision.down_revision) == ("0002", "0001")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        from tests.postgres import shared_cluster

        cluster = shared_cluster()
        url = cluster.url(cluster.create_database("keysrev"))
    engine = sa.create_engine(url)
    old = sa.MetaData()
    sa.Table("master_keys", old, sa.Column("version", sa.Integer, primary_key=True),
             sa.Column("check_value", sa.LargeBinary, nullable=False),
             sa.Column("created_at", sa.Float, nullable=False))
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["master_keys"].insert().values(
            version=1, check_value=b"\x01", created_at=1.0))

    def run(step: str) -> tuple[list[str], bool]:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn, opts={"render_as_batch": True})
            with Operations.context(context):
                getattr(revision, step)()
        inspector = sa.inspect(engine)
        return ([c["name"] for c in inspector.get_columns("master_keys")],
                inspector.has_table("key_shreds"))

    try:
        assert run("upgrade") == (["version", "check_value", "created_at", "wrapped", "kek"],
                                  True)
        assert run("downgrade") == (["version", "check_value", "created_at"], False)
        assert run("upgrade")[1]
        with engine.begin() as conn:  # the row kept; the tombstones numbered by the database
            conn.execute(db.key_shreds.insert().values(key_id="mailbox:1", shredded_at=1.0))
            assert conn.execute(select(db.key_shreds.c.seq)).scalar_one() == 1
            assert conn.execute(select(db.master_keys.c.version, db.master_keys.c.wrapped)
                                ).all() == [(1, None)]
    finally:
        engine.dispose()
