"""The key-encryption key in a PKCS#11 token (an HSM; SoftHSM2 in the tests).

The KEK is an AES-256 secret key object generated in the token with ``CKA_EXTRACTABLE``
false and ``CKA_SENSITIVE`` true (PKCS#11 v2.40 section 4.9): its value never leaves the
token, neither in clear nor wrapped. Wrapping is ``C_Encrypt`` with ``CKM_AES_GCM``
(PKCS#11 v2.40 Current Mechanisms section 2.12.3; SoftHSM2 2.6 supports it for
encryption, and ``CKM_AES_KEY_WRAP_PAD`` only wraps key objects): a random 96-bit IV per
wrap and the associated data bound in the tag, so a wrapped master key moved to another
version does not open. The PIN comes from a 0600 file or an environment variable, never
from the configuration file, and is never logged.

A PKCS#11 login is per application and token: a second session of the same process is
opened without the PIN (``CKR_USER_ALREADY_LOGGED_IN``).

Crypto-shredding ratchets the KEK (docs/keys.md): generation 0 is the object labelled
``key_label``, generation g the object ``key_label#g``, derived in the token from
generation g - 1 by ``C_DeriveKey`` with ``CKM_AES_ECB_ENCRYPT_DATA`` (PKCS#11 v2.40
Current Mechanisms section 2.15: the base key encrypts fixed data, here
:func:`mss.crypto.ratchet_label`, and the ciphertext is the new key's value, inside the
token; AES as a PRF, so the older key cannot be computed from the newer). Once the
database uses generation g, the objects of older generations are destroyed
(``C_DestroyObject``). Every node deriving from the same key gets the same generation g,
whether the nodes share one token or each holds the key in its own partition.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, DeriveMixin, EncryptMixin

from mss.crypto import KEY_BYTES, KeyProvider, MasterKeyError, exclusive_lock, ratchet_label


class _AesKey(EncryptMixin, DecryptMixin, DeriveMixin):
    """The type of an AES key object as python-pkcs11 builds it (SecretKey + mixins)."""


_BLOB = b"P"  # PKCS#11 provider blob: b"P" | IV (12 bytes) | AES-GCM ciphertext and tag
_GEN_BLOB = b"Q"  # generation >= 1: b"Q" | generation (4 bytes) | IV | AES-GCM ciphertext
_IV_BYTES = 12

# A KEK's attributes (PKCS#11 v2.40 section 4.9): never leaves the token, encrypts and
# decrypts, derives the next generation (CKA_DERIVE), nothing else
def _kek_template() -> dict[Attribute, bool]:
    return {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True,
            Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.DERIVE: True,
            Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False,
            Attribute.VERIFY: False, Attribute.PRIVATE: True, Attribute.MODIFIABLE: False}


def generation_label(key_label: str, generation: int) -> str:
    return key_label if generation == 0 else f"{key_label}#{generation}"


def _label_generation(key_label: str, label: str) -> int | None:
    if label == key_label:
        return 0
    prefix = key_label + "#"
    if label.startswith(prefix) and label[len(prefix):].isdigit():
        return int(label[len(prefix):])
    return None


def token_keks(session: pkcs11.Session, key_label: str) -> dict[int, _AesKey]:
    """The KEK generations of *key_label* in the token (token objects only)."""
    found: dict[int, _AesKey] = {}
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                    Attribute.TOKEN: True}):
        generation = _label_generation(key_label, str(obj[Attribute.LABEL]))
        if generation is not None:
            found.setdefault(generation, cast(_AesKey, obj))
    return found


@dataclass(frozen=True)
class TokenConfig:
    module: Path  # the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)
    token_label: str
    key_label: str
    pin_file: Path | None
    pin_env: str | None

    def describe(self) -> str:
        return f"PKCS#11 token {self.token_label!r} key {self.key_label!r}"


def read_pin(cfg: TokenConfig) -> str:
    """The user PIN from pin_env or pin_file (0600); MasterKeyError, without the PIN."""
    if cfg.pin_env:
        pin = os.environ.get(cfg.pin_env)
        if not pin:
            raise MasterKeyError(f"environment variable {cfg.pin_env} (keys.pin_env) is unset")
        return pin
    if cfg.pin_file is None:
        raise MasterKeyError("keys.provider = \"pkcs11\" needs keys.pin_file or keys.pin_env")
    try:
        st = cfg.pin_file.stat()
    except FileNotFoundError:
        raise MasterKeyError(f"PIN file {cfg.pin_file} is missing") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(f"PIN file {cfg.pin_file} is readable by group or others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 "
                             f"{cfg.pin_file}")
    pin = cfg.pin_file.read_text("utf-8").strip()
    if not pin:
        raise MasterKeyError(f"PIN file {cfg.pin_file} is empty")
    return pin


def open_session(cfg: TokenConfig, *, rw: bool = False) -> pkcs11.Session:
    """A logged-in session on the configured token; MasterKeyError (one line) if not."""
    pin = read_pin(cfg)
    try:
        token = pkcs11.lib(str(cfg.module)).get_token(token_label=cfg.token_label)
    except PKCS11Error as exc:  # module not loadable, no such token
        raise MasterKeyError(f"{cfg.describe()}: cannot open the token "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        return token.open(user_pin=pin, rw=rw)
    except UserAlreadyLoggedIn:  # another session of this process logged in
        return token.open(rw=rw)
    except PKCS11Error as exc:  # PinIncorrect, PinLocked...: the PIN itself is never shown
        raise MasterKeyError(f"{cfg.describe()}: login refused ({type(exc).__name__})"
                             ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def generate_kek(cfg: TokenConfig) -> None:
    """Generate the KEK in the token (``C_GenerateKey``, a token object, non-extractable,
    sensitive); refuses if a key of that label exists."""
    session = open_session(cfg, rw=True)
    try:
        if token_keks(session, cfg.key_label):  # generation 0, or a later one
            raise MasterKeyError(f"{cfg.describe()} already exists")
        session.generate_key(KeyType.AES, KEY_BYTES * 8, label=cfg.key_label, store=True,
                             template=_kek_template())
    except PKCS11Error as exc:
        raise MasterKeyError(f"{cfg.describe()}: cannot generate the key "
                             f"({type(exc).__name__})") from None
    finally:
        session.close()


class Pkcs11KeyProvider:
    """:class:`mss.crypto.KeyProvider` whose KEK is an AES key object in a token."""

    def __init__(self, cfg: TokenConfig, previous: KeyProvider | None = None,
                 lock_path: Path | None = None) -> None:
        """*previous*: the key file of a node moving to the token, which still opens the
        versions it wrapped until ``mss keys rotate`` re-wrapped every key. *lock_path*: a
        file the processes of this host lock while one of them ratchets the token (one
        derived object per generation; nodes of other hosts sharing a network HSM may each
        derive one: identical keys, every one destroyed at the next ratchet)."""
        self.cfg = cfg
        self.previous = previous
        self.lock_path = lock_path
        self._lock = threading.Lock()  # one operation at a time on the session
        self._session = open_session(cfg)
        self._derived: dict[int, _AesKey] = {}  # session objects ahead of the token's
        try:
            self._keks = token_keks(self._session, cfg.key_label)
        except PKCS11Error as exc:
            self._session.close()
            raise MasterKeyError(f"{cfg.describe()}: cannot list the token's keys "
                                 f"({type(exc).__name__})") from None
        if not self._keks:
            self._session.close()
            raise MasterKeyError(f"{cfg.describe()} not found in the token "
                                 f"(NoSuchKey): run 'mss keys init-hsm'")

    @property
    def generation(self) -> int:
        with self._lock:
            return max(self._keks)

    def kek_name(self, generation: int) -> str:
        return f"pkcs11:{self.cfg.token_label}/{generation_label(self.cfg.key_label, generation)}"

    def blob_generation(self, blob: bytes) -> int | None:
        if blob[:1] == _BLOB:
            return 0
        if blob[:1] == _GEN_BLOB and len(blob) >= 5:
            return int.from_bytes(blob[1:5], "big")
        return None

    def _kek(self, generation: int) -> _AesKey:
        """The key object of KEK *generation* (the lock held): the token's, or a session
        object derived from the newest the token holds when *generation* is ahead."""
        key = self._keks.get(generation) or self._derived.get(generation)
        if key is None:
            self._keks = token_keks(self._session, self.cfg.key_label)  # another node's
            key = self._keks.get(generation)
        if key is not None:
            return key
        newest = max(self._keks)
        if generation < newest:
            raise MasterKeyError(
                f"{self.describe()} generation {generation} is erased (the token holds "
                f"{newest} and later since a crypto-shred, docs/keys.md): a database copy "
                f"older than the shred cannot be opened")
        key = self._keks[newest]
        for step in range(newest + 1, generation + 1):
            key = self._derived.get(step) or self._derive(key, step, store=False)
            self._derived[step] = key
        return key

    def _derive(self, base: _AesKey, generation: int, *, store: bool) -> _AesKey:
        """KEK *generation* from *base* (generation - 1), a token object when *store*."""
        try:
            derived = base.derive_key(
                KeyType.AES, KEY_BYTES * 8, label=generation_label(self.cfg.key_label,
                                                                   generation),
                store=store, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
                mechanism_param=ratchet_label(generation), template=_kek_template())
        except PKCS11Error as exc:  # KeyFunctionNotPermitted: a KEK without CKA_DERIVE
            raise MasterKeyError(
                f"{self.describe()}: cannot derive KEK generation {generation} "
                f"({type(exc).__name__}; a KEK made before crypto-shredding ratchets lacks "
                f"CKA_DERIVE: make one under a new key_label with 'mss keys init-hsm', then "
                f"'mss keys rotate')") from None
        return cast(_AesKey, derived)

    @property
    def kek_id(self) -> str:
        return self.kek_name(self.generation)

    def describe(self) -> str:
        return self.cfg.describe()

    def wrap(self, key: bytes, ad: bytes, generation: int | None = None) -> bytes:
        iv = os.urandom(_IV_BYTES)
        with self._lock:
            if generation is None:
                generation = max(self._keks)
            sealed = self._kek(generation).encrypt(key, mechanism=Mechanism.AES_GCM,
                                                   mechanism_param=GCMParams(iv, ad))
        assert isinstance(sealed, bytes)  # one buffer in, one out (not a stream)
        if generation == 0:
            return _BLOB + iv + sealed
        return _GEN_BLOB + generation.to_bytes(4, "big") + iv + sealed

    def unwrap(self, blob: bytes, ad: bytes) -> bytes:
        generation = self.blob_generation(blob)
        if generation is None and self.previous is not None:
            return self.previous.unwrap(blob, ad)
        start = 1 if generation == 0 else 5
        if generation is None or len(blob) < start + _IV_BYTES + 16:
            raise MasterKeyError("a master key in the database was not wrapped by a "
                                 "PKCS#11 token: configure its provider ([keys] provider)")
        iv = blob[start:start + _IV_BYTES]
        try:
            with self._lock:
                key = self._kek(generation).decrypt(
                    blob[start + _IV_BYTES:], mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, ad))
        except PKCS11Error:  # the tag does not verify: another token's key
            raise MasterKeyError(f"{self.describe()} does not match this database "
                                 f"(a master key does not unwrap): wrong token or key?"
                                 ) from None
        assert isinstance(key, bytes)
        return key

    def ratchet(self, generation: int) -> None:
        """Make KEK *generation* a token object (derived, unless another node sharing the
        token did it already) and destroy the objects of older generations. The key file
        of a node moving to the token (*previous*) wraps nothing the database uses any more
        after a shred: it is ratcheted too, so that it no longer opens older copies."""
        with contextlib.ExitStack() as stack:
            if self.lock_path is not None:
                stack.enter_context(exclusive_lock(self.lock_path))
            self._ratchet(generation)
        if self.previous is not None:
            self.previous.ratchet(self.previous.generation + 1)

    def _ratchet(self, generation: int) -> None:
        session = open_session(self.cfg, rw=True)
        try:
            with self._lock:
                keks = token_keks(session, self.cfg.key_label)
                newest = max(keks)
                for step in range(newest + 1, generation + 1):
                    keks[step] = self._derive(keks[step - 1], step, store=True)
                for old, obj in keks.items():
                    if old < generation:
                        # destroyed meanwhile by a process sharing the token: fine
                        with contextlib.suppress(PKCS11Error):
                            obj.destroy()
                for derived in self._derived.values():  # session objects
                    with contextlib.suppress(PKCS11Error):
                        derived.destroy()
                self._derived.clear()
                self._keks = token_keks(self._session, self.cfg.key_label)
        except PKCS11Error as exc:
            raise MasterKeyError(f"{self.describe()}: cannot ratchet to generation "
                                 f"{generation} ({type(exc).__name__})") from None
        finally:
            session.close()

    def legacy_key(self, version: int) -> bytes:
        if self.previous is not None:
            return self.previous.legacy_key(version)
        raise MasterKeyError(f"master key version {version} is a key file's (a database made "
                             f"before key providers): keep keys.master_key_file on this node "
                             f"until 'mss keys rotate' moved every key")

    def close(self) -> None:
        with self._lock:
            self._session.close()
        if self.previous is not None:
            self.previous.close()
