"""Envelope encryption at rest.

    message  --AES-256-GCM(data key, AD = kind|owner|message id)-->  body_blob
    data key --AES-256-GCM(mailbox key, AD = key|owner|message id)--> key_blob
    mailbox key --AES-256-GCM(master key vN, AD = mailbox key id)-->  keyring row

Each message has its own random 256-bit data key and 96-bit nonce. The associated data
binds a blob to its owner and its message id, so a blob copied to another row or mailbox
fails to open. Rotating the master key re-wraps mailbox keys only; deleting a mailbox key
destroys its mail (crypto-shredding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, insert, select, update

from mss import db

KEY_BYTES = 32
NONCE_BYTES = 12
_CHECK_LABEL = b"mss master key check v1"


class KeyringError(Exception):
    """Base class for key problems that stop start-up or a command."""


class MasterKeyError(KeyringError):
    """The master key file is missing, unreadable, too open, or does not match the DB."""


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


# --------------------------------------------------------------------------- master keys

class FileKeyProvider:
    """Master keys from a 0600 text file, one ``version:base64`` line per version.

    The newest version encrypts; older ones stay to unwrap what they wrapped until
    ``mss keys rotate`` has re-wrapped it. An HSM or KMS provider implements the same
    three methods.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[int, bytes] = {}
        self.reload()

    def reload(self) -> None:
        with self._lock:
            self._keys = self._read()

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

    def key(self, version: int) -> bytes:
        with self._lock:
            key = self._keys.get(version)
        if key is None:
            self.reload()  # another process (mss keys rotate) may have added it
            with self._lock:
                key = self._keys.get(version)
        if key is None:
            raise MasterKeyError(f"master key version {version} is not in {self.path}")
        return key

    def add_version(self) -> int:
        """Append a fresh random key as a new version (file rewritten atomically)."""
        with self._lock:
            keys = self._read()
            version = max(keys) + 1
            keys[version] = os.urandom(KEY_BYTES)
            write_key_file(self.path, keys)
            self._keys = keys
            return version


def write_key_file(path: Path, keys: Mapping[int, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
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

@dataclass(frozen=True)
class KeyStatus:
    current_version: int
    file_versions: list[int]
    wrapped_by_version: dict[int, int]  # master version -> number of keys it wraps


class Keyring:
    """Mailbox keys, unwrapped on first use and cached in memory (never written out)."""

    def __init__(self, engine: Engine, provider: FileKeyProvider) -> None:
        self.engine = engine
        self.provider = provider
        self._cache: dict[str, AESGCM] = {}
        self._lookup: dict[str, bytes] = {}  # keyed lookups (mss/mailstore/names.py)
        self._lock = threading.Lock()

    # ---- start-up check
    def verify_master(self, conn: Connection) -> None:
        """Stop with a clear message when the key file does not match the database."""
        rows = conn.execute(select(db.master_keys.c.version, db.master_keys.c.check_value))
        for version, expected in rows:
            try:
                key = self.provider.key(version)
            except MasterKeyError:
                raise MasterKeyError(
                    f"master key version {version} used by the database is missing from "
                    f"{self.provider.path}"
                ) from None
            if not hmac.compare_digest(check_value(key), expected):
                raise MasterKeyError(
                    f"master key file {self.provider.path} does not match this database "
                    f"(version {version} check failed): wrong key file?"
                )

    def register_current_master(self, conn: Connection) -> int:
        version = self.provider.current_version()
        known = conn.execute(
            select(db.master_keys.c.version).where(db.master_keys.c.version == version)
        ).first()
        if known is None:
            conn.execute(insert(db.master_keys).values(
                version=version, check_value=check_value(self.provider.key(version)),
                created_at=time.time(),
            ))
        return version

    # ---- mailbox keys
    def create_key(self, conn: Connection, key_id: str) -> None:
        version = self.register_current_master(conn)
        raw = AESGCM.generate_key(bit_length=256)
        master = AESGCM(self.provider.key(version))
        conn.execute(insert(db.keyring).values(
            key_id=key_id, master_version=version,
            wrapped=_seal(master, raw, b"mss:keyring:v1|" + key_id.encode()),
            created_at=time.time(),
        ))
        self._remember(key_id, raw)

    def _remember(self, key_id: str, raw: bytes) -> AESGCM:
        key = AESGCM(raw)
        with self._lock:
            self._cache[key_id] = key
            self._lookup[key_id] = hmac.new(raw, LOOKUP_KEY_INFO, hashlib.sha256).digest()
        return key

    def lookup_key(self, key_id: str, conn: Connection | None = None) -> bytes:
        """An HMAC key derived from the key *key_id* (its own purpose: deterministic lookup
        values, e.g. folder names), never used to encrypt."""
        with self._lock:
            derived = self._lookup.get(key_id)
        if derived is None:
            self.key(key_id, conn)
            with self._lock:
                derived = self._lookup[key_id]
        return derived

    def key(self, key_id: str, conn: Connection | None = None) -> AESGCM:
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        query = select(db.keyring.c.master_version, db.keyring.c.wrapped).where(
            db.keyring.c.key_id == key_id
        )
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).first()
        if row is None:
            raise KeyringError(f"no key {key_id!r} in the keyring")
        master = AESGCM(self.provider.key(row.master_version))
        try:
            raw = _open(master, row.wrapped, b"mss:keyring:v1|" + key_id.encode())
        except TamperedError:
            raise TamperedError(f"wrapped key {key_id!r} failed authentication") from None
        return self._remember(key_id, raw)

    def rotate(self, conn: Connection) -> tuple[int, int]:
        """New master version; re-wrap every key under it. Returns (version, keys)."""
        rows = conn.execute(
            select(db.keyring.c.key_id, db.keyring.c.master_version, db.keyring.c.wrapped)
        ).all()
        # unwrap everything first: a wrong old key must fail before the file changes
        raws = {}
        for key_id, version, wrapped in rows:
            master = AESGCM(self.provider.key(version))
            raws[key_id] = _open(master, wrapped, b"mss:keyring:v1|" + key_id.encode())
        new_version = self.provider.add_version()
        self.register_current_master(conn)
        new_master = AESGCM(self.provider.key(new_version))
        now = time.time()
        for key_id, raw in raws.items():
            conn.execute(update(db.keyring).where(db.keyring.c.key_id == key_id).values(
                master_version=new_version, rewrapped_at=now,
                wrapped=_seal(new_master, raw, b"mss:keyring:v1|" + key_id.encode()),
            ))
        return new_version, len(raws)

    def status(self, conn: Connection) -> KeyStatus:
        counts: dict[int, int] = {}
        for (version,) in conn.execute(select(db.keyring.c.master_version)):
            counts[version] = counts.get(version, 0) + 1
        return KeyStatus(self.provider.current_version(), self.provider.versions(), counts)


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
