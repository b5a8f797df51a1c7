"""Envelope encryption at rest.

    message  --AES-256-GCM(data key, AD = kind|owner|message id)-->  body_blob
    data key --AES-256-GCM(mailbox key, AD = key|owner|message id)--> key_blob
    mailbox key --AES-256-GCM(master key vN, AD = mailbox key id)-->  keyring row
    master key vN --provider.wrap(KEK, AD = version)-->                 master_keys row

The key-encryption key (KEK) never leaves its provider: a key file (:class:`FileKeyProvider`,
the default) or a non-extractable AES key in a PKCS#11 token (mss/pkcs11.py). Nodes that
share a database and a KEK share every master version (docs/keys.md).

Each message has its own random 256-bit data key and 96-bit nonce. The associated data
binds a blob to its owner and its message id, so a blob copied to another row or mailbox
fails to open. Rotating the master key re-wraps mailbox keys only; deleting a mailbox key
destroys its mail (crypto-shredding, :meth:`Keyring.destroy`), in older copies of the
database too: the shred moves every other key under a new master version wrapped by the
next KEK generation, derived one way from the current one, and every node erases the older
generation (:meth:`Keyring.catch_up`; docs/keys.md "Crypto-shredding that survives old
copies").
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update

from mss import db
from mss.locks import xact_lock

log = structlog.get_logger("mss.keys")

KEY_BYTES = 32
NONCE_BYTES = 12
_CHECK_LABEL = b"mss master key check v1"


class KeyringError(Exception):
    """Base class for key problems that stop start-up or a command."""


class MasterKeyError(KeyringError):
    """The key file or token is missing, unreadable or too open, or its KEK cannot unwrap a
    master version the database uses (one line: start-up stops on it)."""


class TamperedError(Exception):
    """A ciphertext failed authentication: modified, truncated or moved. Never served."""


QUEUE_KEY_ID = "queue"


def mailbox_key_id(mailbox_id: int) -> str:
    return f"mailbox:{mailbox_id}"


LOOKUP_KEY_INFO = b"mss:lookup-key:v1"


def seal_bytes(key: AESGCM, plaintext: bytes, ad: bytes) -> bytes:
    """nonce || AES-256-GCM(plaintext) under *key*, bound to *ad* (small values, e.g. a
    folder name under its mailbox key)."""
    return _seal(key, plaintext, ad)


def open_bytes(key: AESGCM, blob: bytes, ad: bytes) -> bytes:
    """The inverse of :func:`seal_bytes`; raises :class:`TamperedError`."""
    return _open(key, blob, ad)


def _seal(key: AESGCM, plaintext: bytes, ad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + key.encrypt(nonce, plaintext, ad)


def _open(key: AESGCM, blob: bytes, ad: bytes) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise TamperedError("ciphertext truncated")
    try:
        return key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except InvalidTag:
        raise TamperedError("ciphertext failed authentication") from None


# --------------------------------------------------------------------------- providers

class KeyProvider(Protocol):
    """Wraps and unwraps key material with a key-encryption key that never leaves it."""

    @property
    def kek_id(self) -> str:
        """Which KEK :meth:`wrap` uses now (stored beside what it wrapped)."""

    @property
    def generation(self) -> int:
        """The newest KEK generation the provider holds (persisted: file line, token
        object). A crypto-shred moves the cluster to the next one (docs/keys.md)."""

    def kek_name(self, generation: int) -> str:
        """:attr:`kek_id` of KEK *generation* (master_keys.kek)."""

    def blob_generation(self, blob: bytes) -> int | None:
        """The KEK generation *blob* names, None when another provider wrapped it."""

    def describe(self) -> str:
        """The KEK's holder for a one-line error ("key file PATH", "PKCS#11 token T")."""

    def wrap(self, key: bytes, ad: bytes, generation: int | None = None) -> bytes:
        """*key* encrypted and authenticated under the KEK (of *generation*, derived in
        memory from the newest held when ahead of it; default the newest), bound to *ad*."""

    def unwrap(self, blob: bytes, ad: bytes) -> bytes:
        """The inverse of :meth:`wrap` (a generation ahead of the newest held derived in
        memory, nothing persisted); :class:`MasterKeyError` when it does not open."""

    def ratchet(self, generation: int) -> None:
        """Persist KEK *generation* (derived one way from the newest held) and erase every
        older one (key file lines, token objects). Only once the database uses it."""

    def legacy_key(self, version: int) -> bytes:
        """Master key *version* of a database made before providers (a key file line)."""

    def close(self) -> None:
        """Release the provider (a token session)."""


_FILE_BLOB = b"F"  # file provider blob: b"F" | file version (4 bytes) | nonce | AES-GCM


_RATCHET_LABEL = b"mss:kek-ratchet:v1|%d"


def next_kek(kek: bytes, generation: int) -> bytes:
    """KEK *generation* from KEK *generation* - 1: HMAC-SHA256 (a PRF, RFC 2104), so the
    older KEK cannot be computed from the newer one (docs/keys.md, crypto-shredding)."""
    return hmac.new(kek, _RATCHET_LABEL % generation, hashlib.sha256).digest()


def ratchet_label(generation: int) -> bytes:
    """The 32 bytes a token encrypts with KEK *generation* - 1 (CKM_AES_ECB_ENCRYPT_DATA)
    to derive KEK *generation* (mss/pkcs11.py)."""
    return hashlib.sha256(_RATCHET_LABEL % generation).digest()


class FileKeyProvider:
    """KEKs from a 0600 text file, one ``version:base64`` line per version (generation).

    The newest version wraps; older ones unwrap what they wrapped (the blob names its
    version). In a database made before providers, these lines were the master keys
    themselves (:meth:`legacy_key`). Every node sharing the database gets a copy of the
    same file. A crypto-shred ratchets it (:meth:`ratchet`): the next version is derived
    one way from the newest (:func:`next_kek`) and every older line is erased.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self._derived: dict[int, bytes] = {}  # ahead of the file, in memory only
        self.reload()

    def reload(self) -> None:
        with self._lock:
            self._keys = self._read()
            newest = max(self._keys)
            self._derived = {g: k for g, k in self._derived.items() if g > newest}

    def _read(self) -> dict[int, bytes]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise MasterKeyError(f"master key file {self.path} is missing") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MasterKeyError(
                f"master key file {self.path} is readable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {self.path}"
            )
        keys: dict[int, bytes] = {}
        for lineno, line in enumerate(self.path.read_text("ascii").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                version_text, b64 = line.split(":", 1)
                key = base64.b64decode(b64, validate=True)
                version = int(version_text)
            except ValueError:
                raise MasterKeyError(
                    f"master key file {self.path}: line {lineno} is not 'version:base64'"
                ) from None
            if len(key) != KEY_BYTES or version < 1:
                raise MasterKeyError(
                    f"master key file {self.path}: line {lineno}: need a 32-byte key, version >= 1"
                )
            keys[version] = key
        if not keys:
            raise MasterKeyError(f"master key file {self.path} holds no key")
        return keys

    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._keys)

    def current_version(self) -> int:
        return self.versions()[-1]

    def key(self, version: int, *, derive: bool = False) -> bytes:
        """The file's line *version*; with *derive*, a version ahead of the file's newest
        is derived in memory (another node's shred, not yet persisted here)."""
        with self._lock:
            key = self._keys.get(version) or self._derived.get(version)
        if key is None:
            self.reload()  # the operator may have added a line (a new KEK version)
            with self._lock:
                key = self._keys.get(version)
                newest = max(self._keys)
                if key is None and derive and version > newest:
                    key = self._keys[newest]
                    for generation in range(newest + 1, version + 1):
                        key = self._derived.get(generation) or next_kek(key, generation)
                        self._derived[generation] = key
                oldest = min(self._keys)
        if key is None:
            if version < oldest:
                raise MasterKeyError(
                    f"master key version {version} is not in {self.path} (it holds "
                    f"{oldest} and later: older versions are erased by a crypto-shred, "
                    f"docs/keys.md): a database copy older than the shred cannot be opened")
            raise MasterKeyError(f"master key version {version} is not in {self.path}")
        return key

    @property
    def generation(self) -> int:
        return self.current_version()

    @property
    def kek_id(self) -> str:
        return self.kek_name(self.current_version())

    def kek_name(self, generation: int) -> str:
        digest = hashlib.sha256(b"mss:kek-id:v1" + self.key(generation, derive=True)
                                ).hexdigest()[:12]
        return f"file:{generation}:{digest}"

    def blob_generation(self, blob: bytes) -> int | None:
        if blob[:1] != _FILE_BLOB or len(blob) < 5:
            return None
        return int.from_bytes(blob[1:5], "big")

    def describe(self) -> str:
        return f"master key file {self.path}"

    def wrap(self, key: bytes, ad: bytes, generation: int | None = None) -> bytes:
        version = self.current_version() if generation is None else generation
        return (_FILE_BLOB + version.to_bytes(4, "big")
                + _seal(AESGCM(self.key(version, derive=True)), key, ad))

    def ratchet(self, generation: int) -> None:
        """Rewrite the file with the lines from *generation* on only (derived when ahead),
        under an exclusive lock of the file (every process of the node ratchets it when it
        sees the shred; the first one writes, the others find it done)."""
        with exclusive_lock(self.path.with_name(self.path.name + ".lock")):
            self.reload()
            with self._lock:
                if min(self._keys) >= generation:
                    return  # done by another process
            kept = {generation: self.key(generation, derive=True)}
            with self._lock:
                kept.update({g: k for g, k in self._keys.items() if g > generation})
            write_key_file(self.path, kept)
            self.reload()

    def unwrap(self, blob: bytes, ad: bytes) -> bytes:
        if blob[:1] != _FILE_BLOB or len(blob) < 5:
            raise MasterKeyError("a master key in the database was not wrapped by a key "
                                 "file: configure its provider ([keys] provider)")
        version = int.from_bytes(blob[1:5], "big")
        try:
            return _open(AESGCM(self.key(version, derive=True)), blob[5:], ad)
        except TamperedError:
            raise MasterKeyError(f"master key file {self.path} does not match this database "
                                 f"(its version {version} does not unwrap): wrong key file?"
                                 ) from None

    def legacy_key(self, version: int) -> bytes:
        return self.key(version)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive lock (flock) on *path*, made 0600 if absent, between the processes of
    one host: a KEK ratchet is done by one of them, the others find it done."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_key_file(path: Path, keys: Mapping[int, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    body = "# mss master keys: keep secret, mode 0600, back up with the database\n" + "".join(
        f"{v}:{base64.b64encode(k).decode()}\n" for v, k in sorted(keys.items())
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_value(master_key: bytes) -> bytes:
    return hmac.new(master_key, _CHECK_LABEL, "sha256").digest()


# --------------------------------------------------------------------------- keyring

def master_ad(version: int) -> bytes:
    """The associated data of master key *version* wrapped by a provider's KEK."""
    return b"mss:master:v1|%d" % version


def _keyring_ad(key_id: str) -> bytes:
    return b"mss:keyring:v1|" + key_id.encode()


@dataclass(frozen=True)
class KeyStatus:
    current_version: int
    kek_id: str  # the provider's key-encryption key
    versions: dict[int, str]  # master version -> what wraps it (a KEK id, or "key file")
    wrapped_by_version: dict[int, int]  # master version -> number of keys it wraps


class Keyring:
    """Master key versions and mailbox keys, unwrapped on first use and cached in memory
    (never written out in clear).

    The master versions live in the database (``master_keys.wrapped``), wrapped by the
    provider's KEK, so every node sharing the database and the KEK sees a rotation made
    on another: a version it does not know yet is read and unwrapped on first use. A
    database made before providers holds versions whose key is a key file line
    (``wrapped`` NULL); the file provider still opens them and ``mss keys rotate`` moves
    every key to a database-held version. Shredding deletes a key and records a
    tombstone (``key_shreds``); :meth:`poll`, a listener of the process's change watcher,
    drops the keys other nodes shredded from this process's cache.
    """

    def __init__(self, engine: Engine, provider: KeyProvider) -> None:
        self.engine = engine
        self.provider = provider
        self._cache: dict[str, AESGCM] = {}
        self._lookup: dict[str, bytes] = {}  # keyed lookups (mss/mailstore/names.py)
        self._masters: dict[int, AESGCM] = {}
        self._shred_seq: int | None = None  # last tombstone seen by poll()
        self._shredded: set[str] = set()
        self._lock = threading.Lock()

    # ---- master versions
    def _master(self, version: int, conn: Connection) -> AESGCM:
        with self._lock:
            cached = self._masters.get(version)
        if cached is not None:
            return cached
        row = conn.execute(select(db.master_keys).where(db.master_keys.c.version == version)
                           ).first()
        if row is None:
            raise MasterKeyError(f"master key version {version} is not in the database")
        if row.wrapped is None:  # a database made before key providers: a key file line
            raw = self.provider.legacy_key(version)
        else:
            raw = self.provider.unwrap(row.wrapped, master_ad(version))
        if not hmac.compare_digest(check_value(raw), row.check_value):
            raise MasterKeyError(
                f"{self.provider.describe()} does not match this database "
                f"(version {version} check failed): wrong key file or token?")
        key = AESGCM(raw)
        with self._lock:
            self._masters[version] = key
        return key

    def current_version(self, conn: Connection) -> int | None:
        return conn.execute(select(func.max(db.master_keys.c.version))).scalar()

    def _new_master(self, conn: Connection, version: int, generation: int | None = None,
                    *, cache: bool = True) -> AESGCM:
        """A new random master *version* wrapped by KEK *generation* (default: the one
        the database uses, so that a node behind another's shred never wraps under a KEK
        generation the others erased)."""
        if generation is None:
            generation = self.kek_generation(conn)
        raw = os.urandom(KEY_BYTES)
        conn.execute(insert(db.master_keys).values(
            version=version, check_value=check_value(raw), created_at=time.time(),
            wrapped=self.provider.wrap(raw, master_ad(version), generation),
            kek=self.provider.kek_name(generation),
        ))
        key = AESGCM(raw)
        if cache:
            with self._lock:
                self._masters[version] = key
        return key

    def kek_generation(self, conn: Connection) -> int:
        """The KEK generation new master versions are wrapped by: the provider's newest
        (a KEK line the operator added, say), or the newest a blob of the database names
        when that is ahead (another node's shred this process has not ratcheted to yet)."""
        generations = [g for (blob,) in conn.execute(
            select(db.master_keys.c.wrapped).where(db.master_keys.c.wrapped.is_not(None)))
            if (g := self.provider.blob_generation(bytes(blob))) is not None]
        return max([*generations, self.provider.generation])

    def catch_up(self, conn: Connection) -> bool:
        """Ratchet the provider to the KEK generation the database uses when it is behind
        (another node shredded; or this process, once its transaction committed), after
        checking that generation opens the current master version: the older generation
        is erased from the key file or token. Drops cached master versions the database no
        longer holds. True when it ratcheted."""
        generation = self.kek_generation(conn)
        current = self.current_version(conn)
        present = {v for (v,) in conn.execute(select(db.master_keys.c.version))}
        with self._lock:
            for version in [v for v in self._masters if v not in present]:
                del self._masters[version]
        if generation <= self.provider.generation:
            return False
        if current is not None:  # unwrapped (derived in memory) and checked first
            with self._lock:
                self._masters.pop(current, None)
            self._master(current, conn)
        before = self.provider.generation
        self.provider.ratchet(generation)
        log.info("key-encryption key ratcheted", generation=generation, erased_below=generation,
                 was=before, provider=self.provider.describe())
        return True

    # ---- start-up check
    def verify_master(self, conn: Connection) -> None:
        """Stop with one line when the provider cannot unwrap a master version in use
        (one wrapping a key, or the current one)."""
        in_use = {v for (v,) in conn.execute(select(db.keyring.c.master_version).distinct())}
        current = self.current_version(conn)
        if current is not None:
            in_use.add(current)
        for version in sorted(in_use):
            self._master(version, conn)
        self.catch_up(conn)  # a shred made while this node was away: erase the old KEK
        if self._shred_seq is None:  # tombstones older than this process: nothing cached
            self._shred_seq = conn.execute(select(func.max(db.key_shreds.c.seq))).scalar() or 0

    def check_master(self, version: int, conn: Connection) -> None:
        """MasterKeyError unless the provider unwraps master *version* of *conn*'s database
        to the key its check value names."""
        self._master(version, conn)

    def register_current_master(self, conn: Connection) -> int:
        """The master version new keys are wrapped by (version 1 made on a new database)."""
        version = self.current_version(conn)
        if version is None:
            version = 1
            self._new_master(conn, version)
        return version

    # ---- mailbox keys
    def create_key(self, conn: Connection, key_id: str) -> None:
        xact_lock(conn, "keys")  # not under a master version a shred is deleting
        version = self.register_current_master(conn)
        raw = AESGCM.generate_key(bit_length=256)
        conn.execute(insert(db.keyring).values(
            key_id=key_id, master_version=version,
            wrapped=_seal(self._master(version, conn), raw, _keyring_ad(key_id)),
            created_at=time.time(),
        ))
        with self._lock:
            self._shredded.discard(key_id)  # the queue key made again by a restore, say
        self._remember(key_id, raw)

    def _remember(self, key_id: str, raw: bytes) -> AESGCM:
        key = AESGCM(raw)
        with self._lock:
            if key_id not in self._shredded:  # read before a shred seen since: not kept
                self._cache[key_id] = key
                self._lookup[key_id] = hmac.new(raw, LOOKUP_KEY_INFO, hashlib.sha256).digest()
        return key

    def lookup_key(self, key_id: str, conn: Connection | None = None) -> bytes:
        """An HMAC key derived from the key *key_id* (its own purpose: deterministic lookup
        values, e.g. folder names), never used to encrypt."""
        with self._lock:
            derived = self._lookup.get(key_id)
        if derived is not None:
            return derived
        raw = self._unwrap_key(key_id, conn)
        self._remember(key_id, raw)
        return hmac.new(raw, LOOKUP_KEY_INFO, hashlib.sha256).digest()

    def key(self, key_id: str, conn: Connection | None = None) -> AESGCM:
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        return self._remember(key_id, self._unwrap_key(key_id, conn))

    def _unwrap_key(self, key_id: str, conn: Connection | None) -> bytes:
        if conn is None:
            with self.engine.connect() as own:
                return self._unwrap_key(key_id, own)
        query = (select(db.keyring.c.master_version, db.keyring.c.wrapped)
                 .where(db.keyring.c.key_id == key_id))
        row = conn.execute(query).first()
        if row is None:
            raise KeyringError(f"no key {key_id!r} in the keyring")
        try:
            master = self._master(row.master_version, conn)
        except MasterKeyError:
            # PostgreSQL READ COMMITTED: a shred committed between the two statements moved
            # the row to a new master version and deleted the old one: read it again
            row = conn.execute(query).first()
            if row is None:
                raise KeyringError(f"no key {key_id!r} in the keyring") from None
            master = self._master(row.master_version, conn)
        try:
            return _open(master, row.wrapped, _keyring_ad(key_id))
        except TamperedError:
            raise TamperedError(f"wrapped key {key_id!r} failed authentication") from None

    def rotate(self, conn: Connection) -> tuple[int, int]:
        """New master version in the database, wrapped by the provider's KEK; re-wrap every
        key under it (messages untouched). Returns (version, keys)."""
        xact_lock(conn, "keys")  # one rotation or shred at a time across nodes
        rows = conn.execute(
            select(db.keyring.c.key_id, db.keyring.c.master_version, db.keyring.c.wrapped)
        ).all()
        # unwrap everything first: a key that does not open must fail before any change
        raws = {key_id: _open(self._master(version, conn), wrapped, _keyring_ad(key_id))
                for key_id, version, wrapped in rows}
        new_version = (self.current_version(conn) or 0) + 1
        new_master = self._new_master(conn, new_version)
        now = time.time()
        for key_id, raw in raws.items():
            conn.execute(update(db.keyring).where(db.keyring.c.key_id == key_id).values(
                master_version=new_version, rewrapped_at=now,
                wrapped=_seal(new_master, raw, _keyring_ad(key_id)),
            ))
        return new_version, len(raws)

    # ---- crypto-shredding
    def destroy(self, conn: Connection, key_id: str) -> None:
        """Crypto-shred the key *key_id*: :meth:`destroy_many` of one key."""
        self.destroy_many(conn, [key_id])

    def destroy_many(self, conn: Connection, key_ids: list[str]) -> None:
        """Delete the keys *key_ids* so that no copy of the database can give them back
        with the keys the nodes hold afterwards (docs/keys.md, "Crypto-shredding"):

        1. every other key is re-wrapped under a new random master version, and every
           older master version is deleted (a copy holds the shredded key wrapped by one of
           them);
        2. that new version is wrapped by the next KEK generation, derived one way from
           the current one (:func:`next_kek`, or ``CKM_AES_ECB_ENCRYPT_DATA`` in a token),
           which cannot give the older generation back;
        3. a tombstone per key (``key_shreds``): every process's :meth:`poll` drops the key
           from its cache and ratchets its provider (:meth:`catch_up`), erasing the older
           KEK generation from its key file or token.

        All in the caller's transaction, under the cluster lock "keys"; the provider of this
        process ratchets once it committed (:meth:`catch_up`: its change watcher, its next
        start, or the caller right after the commit). Mailbox keys themselves do not change:
        other nodes' cached keys of other mailboxes stay valid."""
        if not key_ids:
            return
        xact_lock(conn, "keys")  # one rotation or shred at a time across nodes
        wanted = set(key_ids)
        rows = conn.execute(
            select(db.keyring.c.key_id, db.keyring.c.master_version, db.keyring.c.wrapped)
        ).all()
        missing = sorted(wanted - {row.key_id for row in rows})
        if missing:
            raise KeyringError(f"no key {missing[0]!r} in the keyring")
        # unwrap the keys kept first: a key that does not open must fail before any change
        kept = {key_id: _open(self._master(version, conn), wrapped, _keyring_ad(key_id))
                for key_id, version, wrapped in rows if key_id not in wanted}
        generation = self.kek_generation(conn) + 1
        version = (self.current_version(conn) or 0) + 1
        master = self._new_master(conn, version, generation, cache=False)
        now = time.time()
        conn.execute(delete(db.keyring).where(db.keyring.c.key_id.in_(sorted(wanted))))
        if kept:  # one executemany: 10 000 keys in about a second (docs/keys.md)
            conn.execute(
                update(db.keyring).where(db.keyring.c.key_id == bindparam("k")).values(
                    master_version=version, rewrapped_at=now, wrapped=bindparam("w")),
                [{"k": key_id, "w": _seal(master, raw, _keyring_ad(key_id))}
                 for key_id, raw in kept.items()])
        conn.execute(delete(db.master_keys).where(db.master_keys.c.version != version))
        conn.execute(insert(db.key_shreds), [{"key_id": key_id, "shredded_at": now}
                                             for key_id in sorted(wanted)])
        self._forget(sorted(wanted))
        with self._lock:  # the new version is cached once committed and read back
            self._masters.clear()

    def poll(self, conn: Connection) -> None:
        """Change watcher listener: drop the keys shredded since the last call from this
        process's cache. One probe of key_shreds' primary key, run when the database
        changed (not per message read)."""
        since = self._shred_seq or 0
        rows = conn.execute(select(db.key_shreds.c.seq, db.key_shreds.c.key_id)
                            .where(db.key_shreds.c.seq > since)
                            .order_by(db.key_shreds.c.seq)).all()
        if rows:
            self._forget([key_id for _, key_id in rows])
            # the shred's KEK generation, the older one erased here; should that fail (a
            # token away), the next call tries again: the tombstones count as seen after it
            self.catch_up(conn)
            self._shred_seq = rows[-1].seq
        elif self._shred_seq is None:
            self._shred_seq = 0

    def _forget(self, key_ids: list[str]) -> None:
        with self._lock:
            for key_id in key_ids:
                self._shredded.add(key_id)
                self._cache.pop(key_id, None)
                self._lookup.pop(key_id, None)

    def status(self, conn: Connection) -> KeyStatus:
        counts: dict[int, int] = {}
        for (version,) in conn.execute(select(db.keyring.c.master_version)):
            counts[version] = counts.get(version, 0) + 1
        versions = {v: kek or "key file" for v, kek in
                    conn.execute(select(db.master_keys.c.version, db.master_keys.c.kek))}
        return KeyStatus(self.current_version(conn) or 0, self.provider.kek_id, versions,
                         counts)

# --------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class SealedMessage:
    key_blob: bytes
    body_blob: bytes


def _message_ad(kind: bytes, owner: str, message_id: str) -> bytes:
    return b"mss:%s:v1|%s|%s" % (kind, owner.encode(), message_id.encode())


def seal_message(owner_key: AESGCM, owner: str, message_id: str, plaintext: bytes) -> SealedMessage:
    """Encrypt one message copy for one owner (a mailbox key id, or the queue)."""
    data_key = AESGCM.generate_key(bit_length=256)
    body = _seal(AESGCM(data_key), plaintext, _message_ad(b"body", owner, message_id))
    wrapped = _seal(owner_key, data_key, _message_ad(b"dkey", owner, message_id))
    return SealedMessage(key_blob=wrapped, body_blob=body)


def open_message(owner_key: AESGCM, owner: str, message_id: str, key_blob: bytes,
                 body_blob: bytes) -> bytes:
    """Decrypt in memory; raises :class:`TamperedError` on any modification."""
    data_key = _open(owner_key, key_blob, _message_ad(b"dkey", owner, message_id))
    return _open(AESGCM(data_key), body_blob, _message_ad(b"body", owner, message_id))


def new_master_key_file(path: Path) -> None:
    write_key_file(path, {1: os.urandom(KEY_BYTES)})
