"""mss backup: an online copy taken during an SMTP burst, verified, restored elsewhere."""

from __future__ import annotations

import json
import shutil
import smtplib
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from mss import crypto
from mss.app import open_app
from mss.backup import MANIFEST, pg_tool
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

BACKENDS = BACKENDS  # noqa: PLW0127 - both backends (tests/conftest.py)
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
BURST = 40  # messages of the submission burst (bounded)


@dataclass
class Burst:
    """Messages submitted one after another in a thread; a marker per acknowledged one."""

    node: Node
    acked: list[str] = field(default_factory=list)
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        run = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 60
        try:
            with smtplib.SMTP("127.0.0.1", self.node.ports["submission"], timeout=30) as c:
                c.starttls(context=self.node.client_context())
                c.login(ALICE, PASSWORD)
                for i in range(BURST):
                    if time.monotonic() > deadline:
                        break
                    marker = f"BACKUP-MARKER-{run}-{i:03d}"
                    c.sendmail(ALICE, [BOB], _message(marker))  # returns on 250
                    with self.lock:
                        self.acked.append(marker)
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            self.error = exc

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.acked)


def _message(marker: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "Compte rendu"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@test.example>"  # in clear (audit): not the marker
    msg.set_content(f"Résultats du patient: {marker}\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


@dataclass
class Taken:
    node: Node
    backend: str
    backup: Path
    before: list[str]  # acknowledged before 'mss backup create' started
    output: str


@pytest.fixture(scope="module")
def taken(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Taken]:
    """A served node, a submission burst, and a backup taken in the middle of it."""
    base = tmp_path_factory.mktemp(f"backup-{backend}")
    node = make_node(base, backend=backend)
    _awkward_record(node)
    node.cli("keys", "rotate")  # two master key versions; the keyring wrapped by the second
    node.start()
    try:
        burst = Burst(node)
        thread = threading.Thread(target=burst.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while len(burst.snapshot()) < 5 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        before = burst.snapshot()
        assert 5 <= len(before) < BURST, f"burst did not start: {burst.error!r}"
        proc = node.cli("backup", "create", str(base / "backup"))
        thread.join(90)
        assert not thread.is_alive() and burst.error is None, repr(burst.error)
        yield Taken(node, backend, base / "backup", before, proc.stdout)
    finally:
        node.stop()


def _awkward_record(node: Node) -> None:
    """A real audit record whose text needs escaping in a dump (PostgreSQL COPY text format:
    tab, newline, backslash) and is not ASCII: verify reads it back from the dump."""
    from audit.events import Event, Outcome
    from audit.journal import AuditRecord, append

    app = open_app(node.config)
    try:
        with app.engine.begin() as conn:
            append(conn, [AuditRecord(Event.ADMIN_QUEUE_RETRY, Outcome.MINOR_FAILURE,
                                      actor="cli:test", reason="tab\there\nline \\N é ✓",
                                      detail={"path": "C:\\queue\t1"})])
    finally:
        app.close()


def _manifest(backup: Path) -> dict[str, object]:
    manifest = json.loads((backup / MANIFEST).read_text())
    assert isinstance(manifest, dict)
    return manifest


def _target(base: Path, source: Node, backend: str) -> Node:
    """Another node dir with the source's config, key files and PKI, on an empty database
    (SQLite: no file yet in its own dir; PostgreSQL: a new database on the same server)."""
    data_dir = base / "restored"
    data_dir.mkdir(mode=0o700)
    for name in ("keys", "pki"):
        shutil.copytree(source.data_dir / name, data_dir / name)
    shutil.copy(source.config, data_dir / "mss.toml")
    if backend == "postgresql":
        from tests.postgres import shared_cluster

        cluster = shared_cluster()
        point_at(data_dir / "mss.toml", cluster.url(cluster.create_database("restore")))
    return Node(data_dir)


def _tables(node: Node, backend: str) -> int:
    """Tables in the node's database (0: empty or absent)."""
    if backend == "sqlite":
        path = node.data_dir / "mss.db"
        if not path.exists():
            return 0
        with closing(sqlite3.connect(path)) as conn:
            return int(conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    from tests.postgres import shared_cluster

    database = database_of(node.config).rsplit("/", 1)[1]
    return int(shared_cluster().psql(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        database))


def _backup_texts(taken: Taken) -> list[bytes]:
    """The backup's bytes as stored, and on PostgreSQL the dump decompressed as SQL text
    (pg_restore -f -): a marker in clear would show there."""
    texts = [p.read_bytes() for p in taken.backup.iterdir()]
    if taken.backend == "postgresql":
        texts.append(subprocess.run([pg_tool("pg_restore"), "--file=-",
                                     str(taken.backup / "mss.dump")],
                                    capture_output=True, check=True).stdout)
    return texts


def test_backup_during_traffic_restores_elsewhere(taken: Taken, tmp_path: Path) -> None:
    manifest = _manifest(taken.backup)
    counts = manifest["counts"]
    assert isinstance(counts, dict) and counts["messages"] >= len(taken.before)
    assert manifest["backend"] == taken.backend
    assert [(k["version"], k["keys"] > 0) for k in manifest["master_keys"]  # type: ignore[attr-defined]
            ] == [(1, False), (2, True)]
    rows = taken.node.audit("--event", "admin.backup.create")
    assert rows and rows[-1]["outcome"] == 0
    verified = taken.node.cli("backup", "verify", str(taken.backup))
    assert "ok" in verified.stdout

    target = _target(tmp_path, taken.node, taken.backend)
    proc = target.cli("backup", "restore", str(taken.backup))
    assert f"{counts['messages']} messages" in proc.stdout
    bodies = b"\n".join(read_all(target, BOB))
    missing = [m for m in taken.before if m.encode() not in bodies]
    assert not missing, f"acknowledged before the backup, not restored: {missing}"
    assert "chain intact" in target.cli("audit", "verify").stdout
    restored = target.audit("--event", "admin.backup.restore")
    assert len(restored) == 1 and restored[0]["outcome"] == 0


def test_backup_holds_no_plaintext_nor_key(taken: Taken) -> None:
    texts = _backup_texts(taken)
    assert any(BOB.encode() in t for t in texts)  # the grep sees what is in clear (envelope)
    for marker in taken.before:
        assert not any(marker.encode() in t for t in texts), f"{marker} in clear in backup"
    secrets = [line.split(":", 1)[1].encode() for line in
               (taken.node.data_dir / "keys" / "master.key").read_text().splitlines()
               if line and not line.startswith("#")]
    secrets += [(taken.node.data_dir / "keys" / name).read_bytes().strip()
                for name in ("pseudonym.key", "audit-signing.key")]
    assert not any(s in t for s in secrets for t in texts)
    assert stat.S_IMODE(taken.backup.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in taken.backup.iterdir()} == {0o600}
    named = {f["name"] for f in _manifest(taken.backup)["key_files"]}  # type: ignore[attr-defined]
    assert named == {"master key", "audit signing key", "pseudonym key"}


def _copy(taken: Taken, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(taken.backup, copy)
    return copy


def test_verify_detects_a_tampered_file(taken: Taken, tmp_path: Path) -> None:
    copy = _copy(taken, tmp_path)
    database = copy / str(_manifest(copy)["database"])
    data = bytearray(database.read_bytes())
    data[len(data) // 2] ^= 0x01
    database.write_bytes(bytes(data))
    proc = taken.node.cli("backup", "verify", str(copy), check=False)
    assert proc.returncode == 1
    assert "does not match its SHA-256" in proc.stdout and len(proc.stdout.splitlines()) == 1


def test_verify_detects_a_manifest_that_lies(taken: Taken, tmp_path: Path) -> None:
    copy = _copy(taken, tmp_path)
    manifest = _manifest(copy)
    manifest["audit"]["head"]["id"] += 1  # type: ignore[index]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    proc = taken.node.cli("backup", "verify", str(copy), check=False)
    assert proc.returncode == 1 and "audit chain head" in proc.stdout


def test_verify_detects_a_rewritten_record_behind_a_fixed_hash(taken: Taken,
                                                               tmp_path: Path) -> None:
    if taken.backend != "sqlite":
        pytest.skip("rewrites the SQLite copy in place")
    import hashlib

    copy = _copy(taken, tmp_path)
    database = copy / "mss.db"
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("UPDATE audit_log SET actor = 'someone-else' WHERE id = 2")
    manifest = _manifest(copy)
    manifest["files"]["mss.db"] = {  # type: ignore[index]
        "sha256": hashlib.sha256(database.read_bytes()).hexdigest(),
        "size": database.stat().st_size}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    proc = taken.node.cli("backup", "verify", str(copy), check=False)
    assert proc.returncode == 1 and "record 2 was modified" in proc.stdout


@pytest.mark.parametrize("key_file", ["master.key", "audit-signing.key"])
def test_restore_refuses_other_keys(taken: Taken, tmp_path: Path, key_file: str) -> None:
    target = _target(tmp_path, taken.node, taken.backend)
    path = target.data_dir / "keys" / key_file
    path.unlink()
    if key_file == "master.key":
        crypto.new_master_key_file(path)
    else:
        from audit.checkpoints import signing_key

        signing_key(path)  # a new one
    proc = target.cli("backup", "restore", str(taken.backup), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mss: error: keys do not match the backup")
    assert len(proc.stderr.splitlines()) == 1
    assert _tables(target, taken.backend) == 0  # nothing written


def test_restore_refuses_a_database_that_is_not_empty(taken: Taken, tmp_path: Path) -> None:
    target = _target(tmp_path, taken.node, taken.backend)
    source = database_of(taken.node.config)
    if taken.backend == "sqlite":
        source = f"sqlite:///{taken.node.data_dir / 'mss.db'}"
    point_at(target.config, source)
    proc = target.cli("backup", "restore", str(taken.backup), check=False)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not taken.node.audit("--event", "admin.backup.restore")  # nothing written


def test_create_refuses_a_non_empty_directory(taken: Taken) -> None:
    proc = taken.node.cli("backup", "create", str(taken.backup), check=False)
    assert proc.returncode == 2 and "is not empty" in proc.stderr


def test_pg_password_goes_to_the_environment_only() -> None:
    from mss.backup import pg_connection

    conninfo, env = pg_connection(
        "postgresql+psycopg://mss:s3cr%20t@db.example:5433/mss?sslmode=verify-full")
    assert "s3cr" not in conninfo and env["PGPASSWORD"] == "s3cr t"
    assert {"host=db.example", "port=5433", "user=mss", "dbname=mss",
            "sslmode=verify-full"} <= set(conninfo.split())
