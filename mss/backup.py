"""Backups: a consistent online copy of the database, its manifest, verification, restore.

A backup directory holds the database only (ciphertext and wrapped keys: never a plaintext
byte, never a key file) and ``manifest.json``: what it is (backend, schema and mss versions,
time), what it needs (the master key versions its keyring rows are wrapped with and their
check values; fingerprints of the audit signing and pseudonym keys), what it holds (audit
chain head, last signed checkpoint, counts) and the SHA-256 of each file.

- SQLite: the online backup API (https://www.sqlite.org/backup.html) from a connection of
  our own, all pages in one step: one read transaction, which under WAL never blocks the
  writers. The copy is switched to rollback-journal mode so that it is one self-contained
  file, and the manifest is read from the copy itself.
- PostgreSQL: ``pg_dump -Fc`` run on a snapshot exported by a REPEATABLE READ transaction of
  ours (``pg_export_snapshot()``, PostgreSQL docs §9.27.5; ``pg_dump --snapshot``): the
  manifest and the dump see exactly the same database.

Restore goes into an empty database of a node holding the backup's key files: the keys are
checked against the manifest before anything is written; the restored database is checked
(audit chain up to the manifest's head, every message and queued copy decrypted) before it
is put in place (SQLite: atomic rename) or, on PostgreSQL, right after ``pg_restore
--single-transaction``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    create_engine,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

import mss
from audit.checkpoints import verify_all
from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss import crypto, db, schema
from mss.app import key_provider
from mss.config import Config
from mss.files import fsync_path, sha256_of
from mss.mailstore import messages as store_messages

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "mss.db"
PG_FILE = "mss.dump"
_PSEUDONYM_CHECK = b"mss backup pseudonym key check v1"
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup, verify or restore request refused or failed: one line."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


# --------------------------------------------------------------------------- small helpers

def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def _private_file(path: Path) -> None:
    """Create *path* empty, mode 0600 (refused if it exists)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _prepare_dir(target: Path) -> None:
    """*target* created 0700, or an existing empty directory made 0700."""
    if target.exists():
        if not target.is_dir():
            raise BackupError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            raise BackupError(f"{target} is not empty: a backup needs a new or empty "
                              "directory")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)


# --------------------------------------------------------------------------- key fingerprints

def _signing_key(path: Path) -> Ed25519PrivateKey:
    """The audit signing key, never created here (audit.checkpoints.signing_key would)."""
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    except OSError as exc:
        raise BackupError(f"audit signing key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise BackupError(f"audit signing key {path} is not a PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise BackupError(f"audit signing key {path} is not an Ed25519 key")
    return loaded


def _signing_fingerprint(path: Path) -> str:
    public = _signing_key(path).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(public).hexdigest()


def _pseudonym_check(path: Path) -> str:
    """HMAC of a fixed label under the pseudonym key: tells the key, reveals nothing of it
    (as the master key check values do)."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(path.read_bytes().strip(), validate=True)
    except OSError as exc:
        raise BackupError(f"pseudonym key {path}: {exc.strerror or exc}") from None
    except binascii.Error:
        raise BackupError(f"pseudonym key {path} is not base64") from None
    return hmac.new(raw, _PSEUDONYM_CHECK, "sha256").hexdigest()


def _key_files(config: Config) -> list[dict[str, Any]]:
    """The key files a restore needs (never copied into the backup), with what identifies
    each: the operator keeps them apart from the backups."""
    audit = config.audit
    return [
        {"name": "master key", "config": "keys.master_key_file",
         "path": str(config.master_key_file)},
        {"name": "audit signing key", "config": "audit.signing_key_file",
         "path": str(audit.signing_key_file),
         "public_key_sha256": _signing_fingerprint(audit.signing_key_file)},
        {"name": "pseudonym key", "config": "audit.pseudonym_key_file",
         "path": str(audit.pseudonym_key_file),
         "check": _pseudonym_check(audit.pseudonym_key_file)},
    ]


def keyring_for(config: Config, engine: Engine) -> crypto.Keyring:
    """The node's keyring over *engine*, with the node's configured provider (file or
    token) as mss.app.open_app builds it."""
    return crypto.Keyring(engine, key_provider(config))


# --------------------------------------------------------------------------- manifest facts

def _schema_version(conn: Connection) -> str | None:
    return schema.current(conn)  # the Alembic revision


def _count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def _head(conn: Connection) -> dict[str, Any] | None:
    t = db.audit_log
    row = conn.execute(select(t.c.id, t.c.hash).order_by(t.c.id.desc()).limit(1)).first()
    return None if row is None else {"id": row.id, "hash": row.hash}


def _checkpoint(conn: Connection) -> dict[str, Any] | None:
    t = db.audit_checkpoints
    row = conn.execute(select(t.c.seq, t.c.record_id, t.c.hash).where(t.c.seq.is_not(None))
                       .order_by(t.c.seq.desc()).limit(1)).first()
    return None if row is None else {"seq": row.seq, "record_id": row.record_id,
                                     "hash": row.hash}


def _master_keys(conn: Connection) -> list[dict[str, Any]]:
    """Every master key version of the database with its check value, and how many keyring
    rows it wraps: the node checks them all at start-up (Keyring.verify_master), so a
    restore checks them all first."""
    wrapped: dict[int, int] = {
        int(v): int(n) for v, n in conn.execute(select(db.keyring.c.master_version, func.count())
                                                .group_by(db.keyring.c.master_version))}
    rows = conn.execute(select(db.master_keys.c.version, db.master_keys.c.check_value,
                               db.master_keys.c.wrapped, db.master_keys.c.kek)
                        .order_by(db.master_keys.c.version))
    # the wrapped master key is ciphertext under the KEK (file or token), never the key
    return [{"version": v, "check_value": bytes(c).hex(), "keys": wrapped.get(v, 0),
             "wrapped": None if w is None else bytes(w).hex(), "kek": k}
            for v, c, w, k in rows]


def _facts(conn: Connection) -> dict[str, Any]:
    messages, mailboxes = store_messages.count_all(conn)
    return {
        "schema_version": _schema_version(conn),
        "master_keys": _master_keys(conn),
        "audit": {"head": _head(conn), "checkpoint": _checkpoint(conn)},
        "counts": {"messages": messages, "mailboxes": mailboxes,
                   "queue": _count(conn, db.outbound_queue)},
    }


def _write_manifest(target: Path, manifest: Mapping[str, Any]) -> None:
    path = target / MANIFEST
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(target)


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source}: no {MANIFEST} (not a backup, or an unfinished one)"
                          ) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a format {FORMAT} mss backup manifest")
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise BackupError(f"{path}: no {missing[0]!r} field")
    files = manifest["files"]
    if (not isinstance(files, dict) or manifest["database"] not in files
            or manifest["backend"] not in ("sqlite", "postgresql")):
        raise BackupError(f"{path}: its database is not among its files")
    for name in files:  # plain names inside the directory, nothing elsewhere
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not name:
            raise BackupError(f"{path}: bad file name {name!r}")
    return manifest


_MANIFEST_KEYS = ("backend", "created_at", "database", "files", "audit", "counts",
                  "master_keys", "key_files")


# --------------------------------------------------------------------------- PostgreSQL tools

def pg_tool(name: str) -> str:
    """*name* (pg_dump, pg_restore) from PATH, else the newest Debian
    /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parent.parent.name)
                        if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise BackupError(f"{name} not found in PATH nor /usr/lib/postgresql/*/bin "
                          "(Debian package postgresql-client)")
    return str(candidates[-1])


def pg_connection(url: str) -> tuple[str, dict[str, str]]:
    """(libpq conninfo without the password, environment with PGPASSWORD) of a SQLAlchemy
    URL: the password never goes on a command line (libpq docs §34.15 PGPASSWORD; a
    ~/.pgpass file works as well)."""
    from psycopg.conninfo import make_conninfo

    parsed = make_url(url)
    params: dict[str, Any] = {"dbname": parsed.database, "host": parsed.host,
                              "port": parsed.port, "user": parsed.username}
    for name, value in parsed.query.items():  # sslmode, sslrootcert...: libpq keywords
        params[name] = value if isinstance(value, str) else value[-1]
    conninfo = make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = parsed.password
    return conninfo, env


def _run_pg(args: list[str], env: Mapping[str, str], what: str,
            **options: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(args, env=dict(env), capture_output=True, check=False, **options)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BackupError(f"{what} failed: {lines[0] if lines else f'exit {proc.returncode}'}")
    return proc


# --------------------------------------------------------------------------- create

def create(config: Config, target: Path, actor: str, engine: Engine) -> dict[str, Any]:
    """Back the node's database up into *target* (new or empty); audited on *engine* (the
    node's writer). Returns the manifest."""
    _prepare_dir(target)
    url = config.database_url
    backend = backend_of(url)
    try:
        key_files = _key_files(config)
        if backend == "sqlite":
            name, facts = SQLITE_FILE, _sqlite_copy(Path(db.database_name(url)),
                                                    target / SQLITE_FILE)
        else:
            name, facts = PG_FILE, _pg_dump(url, target / PG_FILE)
        manifest = {
            "format": FORMAT, "mss_version": mss.__version__, "backend": backend,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": name, **facts, "key_files": key_files,
            "files": {name: {"sha256": sha256_of(target / name),
                             "size": (target / name).stat().st_size}},
        }
        _write_manifest(target, manifest)
    except (BackupError, OSError, DBAPIError) as exc:
        for leftover in (SQLITE_FILE, PG_FILE, MANIFEST):  # no half backup left behind
            (target / leftover).unlink(missing_ok=True)
        _record(engine, AuditRecord(Event.ADMIN_BACKUP_CREATE, Outcome.SERIOUS_FAILURE,
                                    actor=actor, reason=str(exc).splitlines()[0],
                                    detail={"dir": str(target), "backend": backend}))
        raise
    head = manifest["audit"]["head"]
    _record(engine, AuditRecord(Event.ADMIN_BACKUP_CREATE, actor=actor, detail={
        "dir": str(target), "backend": backend, "head": head["id"] if head else None,
        **manifest["counts"], "bytes": manifest["files"][name]["size"]}))
    return manifest


def _record(engine: Engine, record: AuditRecord) -> None:
    with engine.begin() as conn:
        append(conn, [record])


@contextmanager
def _sqlite_engine(path: Path, *, immutable: bool = False) -> Iterator[Engine]:
    """SQLAlchemy over one plain sqlite3 connection to *path*: no pragmas (the file keeps
    its journal mode, no -wal file appears); *immutable*: read-only, no locks, nothing
    written beside it (https://www.sqlite.org/uri.html)."""
    def connect() -> sqlite3.Connection:
        if immutable:
            uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
            return sqlite3.connect(uri, uri=True, check_same_thread=False)
        return sqlite3.connect(path, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=StaticPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _sqlite_copy(source: Path, dest: Path) -> dict[str, Any]:
    if not source.is_file():
        raise BackupError(f"database {source} does not exist")
    _private_file(dest)
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst, pages=-1)  # every page in one step: one consistent read transaction
        # one self-contained file (no -wal beside it); mss connections turn WAL back on
        dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise BackupError(f"database {source}: {exc}") from None
    finally:
        dst.close()
        src.close()
    fsync_path(dest)
    with _sqlite_engine(dest, immutable=True) as engine, engine.connect() as conn:
        return _facts(conn)


def _pg_dump(url: str, dest: Path) -> dict[str, Any]:
    conninfo, env = pg_connection(url)
    tool = pg_tool("pg_dump")
    _private_file(dest)
    engine = db.make_engine(url, writer=False)
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ",
                                         postgresql_readonly=True)
            with conn.begin():
                snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar())
                # idle while pg_dump runs: the snapshot lives as long as this transaction
                conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
                facts = _facts(conn)
                # the dump reads the snapshot our transaction holds open until it is done
                _run_pg([tool, "--format=custom", "--no-password", f"--snapshot={snapshot}",
                         f"--file={dest}", f"--dbname={conninfo}"], env, "pg_dump")
    finally:
        engine.dispose()
    fsync_path(dest)
    return facts


# --------------------------------------------------------------------------- verify

def verify(source: Path, signing_key_file: Path) -> Verdict:
    """Files against the manifest, the copy opens, its audit chain verifies (signatures
    with the node's audit signing key) and ends at the manifest's head."""
    try:
        manifest = read_manifest(source)
        _check_files(source, manifest)
        key = _signing_key(signing_key_file)
        if manifest["backend"] == "sqlite":
            summary = _verify_sqlite(source / manifest["database"], manifest, key)
        else:
            summary = _verify_pg(source / manifest["database"], manifest, key)
    except BackupError as exc:
        return Verdict(False, f"backup {source}: {exc}")
    except (KeyError, TypeError, ValueError) as exc:  # a field of the wrong shape
        return Verdict(False, f"backup {source}: {MANIFEST} is malformed ({exc!r})")
    except OSError as exc:
        return Verdict(False, f"backup {source}: {exc.strerror or exc}: {exc.filename}")
    return Verdict(True, f"backup {source} ok ({manifest['backend']}, {manifest['created_at']}"
                         f"): {summary}")


def _check_files(source: Path, manifest: Mapping[str, Any]) -> None:
    files: Mapping[str, Any] = manifest.get("files") or {}
    present = {p.name for p in source.iterdir()} - {MANIFEST}
    extra = sorted(present - set(files))
    if extra:
        raise BackupError(f"unexpected file {extra[0]} (not in the manifest)")
    for name, entry in files.items():
        path = source / name
        if not path.is_file():
            raise BackupError(f"{name} is missing")
        if path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
            raise BackupError(f"{name} does not match its SHA-256 in the manifest "
                              "(modified or truncated)")


def _chain_summary(conn: Connection, manifest: Mapping[str, Any],
                   key: Ed25519PrivateKey) -> str:
    result = verify_all(conn, key)
    if not result.ok:
        raise BackupError(f"audit trail: {result.message}")
    audit = manifest["audit"]
    if _head(conn) != audit["head"]:
        raise BackupError(f"audit chain head {_head(conn)} is not the manifest's "
                          f"{audit['head']}")
    if _checkpoint(conn) != audit["checkpoint"]:
        raise BackupError(f"last signed checkpoint {_checkpoint(conn)} is not the "
                          f"manifest's {audit['checkpoint']}")
    head = audit["head"]
    return f"{result.message}, head record {head['id'] if head else '-'}"


def _verify_sqlite(path: Path, manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    with _sqlite_engine(path, immutable=True) as engine:
        try:
            with engine.connect() as conn:
                check = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
                if check != "ok":
                    raise BackupError(f"{path.name} fails integrity_check: {check}")
                counts = manifest["counts"]
                found = store_messages.count_all(conn)[0]
                if found != counts["messages"]:
                    raise BackupError(f"{found} messages, the manifest says "
                                      f"{counts['messages']}")
                return f"integrity ok, {found} messages, " + _chain_summary(conn, manifest, key)
        except DBAPIError as exc:
            raise BackupError(f"{path.name} does not open: {str(exc.orig).splitlines()[0]}"
                              ) from None


# the tables whose COPY data a PostgreSQL dump's audit check reads back
_AUDIT_TABLES = (db.audit_log, db.audit_checkpoints)
_NEEDED_TABLES = ("audit_log", "audit_checkpoints", "keyring", "master_keys", "messages",
                  "mailboxes", "outbound_queue")


def _verify_pg(path: Path, manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """``pg_restore --list`` reads the dump's table of contents; the audit tables' data,
    extracted by pg_restore (no server needed), is streamed into a scratch SQLite file (0600,
    in a 0700 temporary directory, removed after) and verified there by the same code as
    ``mss audit verify``."""
    tool = pg_tool("pg_restore")
    toc = _run_pg([tool, "--list", str(path)], os.environ, "pg_restore --list").stdout
    data = set(re.findall(rb"TABLE DATA \S+ (\w+) ", toc))
    missing = [t for t in _NEEDED_TABLES if t.encode() not in data]
    if missing:
        raise BackupError(f"the dump holds no data for table {missing[0]}")
    with (tempfile.TemporaryDirectory(prefix="mss-verify-") as scratch,
          _sqlite_engine(Path(scratch) / "audit.db") as engine):
        db.metadata.create_all(engine, tables=list(_AUDIT_TABLES))
        _load_audit_data(tool, path, engine)
        with engine.connect() as conn:
            return f"table of contents ok ({len(data)} tables), " + _chain_summary(
                conn, manifest, key)


def _load_audit_data(tool: str, path: Path, engine: Engine) -> None:
    """``pg_restore --data-only -f -`` of the audit tables, parsed as it streams."""
    args = [tool, "--data-only", *(f"--table={t.name}" for t in _AUDIT_TABLES), "--file=-",
            str(path)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        try:
            lines = (line.rstrip("\n") for line in
                     io.TextIOWrapper(proc.stdout, encoding="utf-8", newline="\n"))
            with engine.begin() as conn:
                for table, rows in _copy_rows(lines):
                    conn.execute(insert(table), rows)
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            first = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise BackupError(f"pg_restore failed: {first[0] if first else f'exit {code}'}")


_COPY_HEAD = re.compile(r"^COPY (?:\w+\.)?(\w+) \(([^)]*)\) FROM stdin;$")
_COPY_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_ESCAPES = MappingProxyType({"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                             "v": "\v"})


def _unescape(field: str) -> str:
    """A field of COPY's text format (PostgreSQL docs, COPY "Text Format")."""
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 8))
        if m.group(2):
            return chr(int(m.group(2), 16))
        return _ESCAPES.get(m.group(3), m.group(3))
    return _COPY_ESCAPE.sub(one, field)


def _typed(column: Any, field: str) -> Any:
    if field == r"\N":
        return None
    value = _unescape(field)
    kind = column.type
    if isinstance(kind, Boolean):
        return value == "t"
    if isinstance(kind, Integer):
        return int(value)
    if isinstance(kind, Float):
        return float(value)
    if isinstance(kind, LargeBinary):  # bytea in hex output format: \x0123...
        return bytes.fromhex(value[2:])
    return value


def _copy_rows(lines: Iterator[str], batch: int = 1000
               ) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """(table, rows) batches of the COPY blocks of the audit tables in pg_restore's SQL."""
    tables = {t.name: t for t in _AUDIT_TABLES}
    for line in lines:
        head = _COPY_HEAD.match(line)
        if head is None or head.group(1) not in tables:
            continue
        table = tables[head.group(1)]
        names = [n.strip().strip('"') for n in head.group(2).split(",")]
        rows: list[dict[str, Any]] = []
        for row in lines:
            if row == "\\.":
                break
            fields = row.split("\t")
            rows.append({n: _typed(table.c[n], f) for n, f in zip(names, fields, strict=True)})
            if len(rows) == batch:
                yield table, rows
                rows = []
        if rows:
            yield table, rows


# --------------------------------------------------------------------------- restore

@dataclass(frozen=True)
class Restored:
    database: str
    messages: int  # opened with the node's keys
    queued: int
    chain: str
    shredded: int = 0  # rows of crypto-shredded mailboxes (unreadable on purpose)


def restore(config: Config, source: Path, actor: str) -> Restored:
    """Restore *source* into the node's (empty) database. Refused, before anything is
    written, when the backup fails verification, when the node's key files are not the
    backup's, or when the database is not empty."""
    manifest = read_manifest(source)
    url = config.database_url
    if manifest.get("backend") != backend_of(url):
        raise BackupError(f"backup {source} is of a {manifest.get('backend')} database, this "
                          f"node's database is {backend_of(url)}")
    try:
        check_keys(config, manifest)
    except (KeyError, TypeError, ValueError) as exc:  # a field of the wrong shape
        raise BackupError(f"backup {source}: {MANIFEST} is malformed ({exc!r})") from None
    _require_empty(url)
    verdict = verify(source, config.audit.signing_key_file)
    if not verdict.ok:
        raise BackupError(verdict.message)
    database = source / manifest["database"]
    if manifest["backend"] == "sqlite":
        restored = _restore_sqlite(config, database, Path(db.database_name(url)), manifest)
    else:
        restored = _restore_pg(config, database, url, manifest)
    engine = db.make_engine(url)
    try:
        _record(engine, AuditRecord(Event.ADMIN_BACKUP_RESTORE, actor=actor, detail={
            "dir": str(source), "backend": manifest["backend"],
            "backup_created_at": manifest["created_at"],
            "head": (manifest["audit"]["head"] or {}).get("id"),
            "messages": restored.messages, "queue": restored.queued,
            "shredded": restored.shredded}))
    finally:
        engine.dispose()
    return restored


def check_keys(config: Config, manifest: Mapping[str, Any]) -> None:
    """The node's key files are those the backup needs: the master key versions' check
    values (Keyring.verify_master on the manifest's values), the audit signing key and the
    pseudonym key fingerprints."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    try:
        db.metadata.create_all(engine, tables=[db.master_keys, db.keyring, db.key_shreds])
        with engine.begin() as conn:
            for entry in manifest["master_keys"]:
                wrapped = entry.get("wrapped")  # absent: a version held in the key file
                conn.execute(insert(db.master_keys).values(
                    version=entry["version"], check_value=bytes.fromhex(entry["check_value"]),
                    created_at=0.0, kek=entry.get("kek"),
                    wrapped=None if wrapped is None else bytes.fromhex(wrapped)))
            keyring = keyring_for(config, engine)
            try:
                for entry in manifest["master_keys"]:  # every version, in use or not
                    keyring.check_master(entry["version"], conn)
            except crypto.KeyringError as exc:
                raise BackupError(f"keys do not match the backup: {exc}") from None
            finally:
                keyring.provider.close()
    finally:
        engine.dispose()
    wanted = {f["config"]: f for f in manifest["key_files"]}
    audit = config.audit
    for name, path, found in (
            ("audit.signing_key_file", audit.signing_key_file,
             _signing_fingerprint(audit.signing_key_file)),
            ("audit.pseudonym_key_file", audit.pseudonym_key_file,
             _pseudonym_check(audit.pseudonym_key_file))):
        entry = wanted[name]
        if found != (entry.get("public_key_sha256") or entry.get("check")):
            raise BackupError(f"keys do not match the backup: {entry['name']} {path} is not "
                              "the backup's")


def _require_empty(url: str) -> None:
    if backend_of(url) == "sqlite":
        path = Path(db.database_name(url))
        if not path.exists() or path.stat().st_size == 0:
            return
        try:
            with _sqlite_engine(path) as engine, engine.connect() as conn:
                tables = inspect(conn).get_table_names()
        except DBAPIError as exc:
            raise db.unusable(url, exc) from None
        where = str(path)
    else:
        engine = db.make_engine(url, writer=False)
        try:
            with engine.connect() as conn:
                tables = [str(t) for (t,) in conn.execute(text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"))]
        except DBAPIError as exc:
            raise db.unusable(url, exc) from None
        finally:
            engine.dispose()
        where = db.database_name(url)
    if tables:
        raise BackupError(f"database {where} is not empty ({len(tables)} tables): restore "
                          "needs an empty database")


def _restore_sqlite(config: Config, database: Path, target: Path,
                    manifest: Mapping[str, Any]) -> Restored:
    """Copy next to the target, check the copy, then rename it into place (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, database.open("rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        with _sqlite_engine(tmp) as engine:
            restored = _check_restored(config, engine, str(target), manifest)
        for suffix in ("-wal", "-shm", "-journal"):  # of the empty database it replaces
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return restored


def _restore_pg(config: Config, database: Path, url: str,
                manifest: Mapping[str, Any]) -> Restored:
    """pg_restore in one transaction (all or nothing), objects owned by the restoring
    role; then the same checks as SQLite, on the restored database."""
    conninfo, env = pg_connection(url)
    _run_pg([pg_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
             "--no-acl", "--no-password", f"--dbname={conninfo}", str(database)], env,
            "pg_restore")
    engine = db.make_engine(url, writer=False)
    try:
        return _check_restored(config, engine, db.database_name(url), manifest)
    except BackupError as exc:
        raise BackupError(f"restored into {db.database_name(url)}, but it fails its check "
                          f"(do not serve it): {exc}") from None
    finally:
        engine.dispose()


def _check_restored(config: Config, engine: Engine, where: str,
                    manifest: Mapping[str, Any]) -> Restored:
    """The audit chain up to the manifest's head; every message and queued copy decrypts."""
    keyring = keyring_for(config, engine)
    try:
        with engine.connect() as conn:
            chain = _chain_summary(conn, manifest, _signing_key(config.audit.signing_key_file))
            try:
                messages, shredded = store_messages.open_every_message(conn, keyring)
            except (crypto.TamperedError, crypto.KeyringError) as exc:
                raise BackupError(str(exc)) from None
            queued = _open_all(conn, db.outbound_queue, lambda row: crypto.QUEUE_KEY_ID,
                               keyring)
    finally:
        keyring.provider.close()
    if messages + shredded != manifest["counts"]["messages"]:
        raise BackupError(f"{messages + shredded} messages restored, the manifest says "
                          f"{manifest['counts']['messages']}")
    return Restored(where, messages, queued, chain, shredded)


def _open_all(conn: Connection, table: Any, owner: Callable[[Any], str],
              keyring: crypto.Keyring) -> int:
    """Decrypt every row of *table* (streamed), in memory only; the count."""
    columns = [table.c.id, table.c.key_blob, table.c.body_blob]
    if "mailbox_id" in table.c:
        columns.append(table.c.mailbox_id)
    opened = 0
    rows = db.in_pages(conn, select(*columns), table.c.id, 500)
    for row in rows:
        key_id = owner(row)
        try:
            crypto.open_message(keyring.key(key_id), key_id, row.id, row.key_blob,
                                row.body_blob)
        except (crypto.TamperedError, crypto.KeyringError) as exc:
            raise BackupError(f"{table.name} row {row.id} does not decrypt: {exc}") from None
        opened += 1
    return opened
