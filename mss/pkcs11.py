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
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin

from mss.crypto import KEY_BYTES, KeyProvider, MasterKeyError


class _AesKey(EncryptMixin, DecryptMixin):
    """The type of an AES key object as python-pkcs11 builds it (SecretKey + mixins)."""


_BLOB = b"P"  # PKCS#11 provider blob: b"P" | IV (12 bytes) | AES-GCM ciphertext and tag
_IV_BYTES = 12


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
        try:
            session.get_key(object_class=ObjectClass.SECRET_KEY, label=cfg.key_label)
        except NoSuchKey:
            pass
        else:
            raise MasterKeyError(f"{cfg.describe()} already exists")
        session.generate_key(KeyType.AES, KEY_BYTES * 8, label=cfg.key_label, store=True,
                             template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True,
                                       Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                                       Attribute.WRAP: False, Attribute.UNWRAP: False,
                                       Attribute.PRIVATE: True, Attribute.MODIFIABLE: False})
    except PKCS11Error as exc:
        raise MasterKeyError(f"{cfg.describe()}: cannot generate the key "
                             f"({type(exc).__name__})") from None
    finally:
        session.close()


class Pkcs11KeyProvider:
    """:class:`mss.crypto.KeyProvider` whose KEK is an AES key object in a token."""

    def __init__(self, cfg: TokenConfig, previous: KeyProvider | None = None) -> None:
        """*previous*: the key file of a node moving to the token, which still opens the
        versions it wrapped until ``mss keys rotate`` re-wrapped every key."""
        self.cfg = cfg
        self.previous = previous
        self._lock = threading.Lock()  # one operation at a time on the session
        self._session = open_session(cfg)
        try:
            key = self._session.get_key(object_class=ObjectClass.SECRET_KEY,
                                        key_type=KeyType.AES, label=cfg.key_label)
        except PKCS11Error as exc:  # NoSuchKey, MultipleObjectsReturned
            self._session.close()
            raise MasterKeyError(f"{cfg.describe()} not found in the token "
                                 f"({type(exc).__name__}): run 'mss keys init-hsm'") from None
        # an AES secret key object does C_Encrypt and C_Decrypt (the library's mixins)
        self._key = cast(_AesKey, key)

    @property
    def kek_id(self) -> str:
        return f"pkcs11:{self.cfg.token_label}/{self.cfg.key_label}"

    def describe(self) -> str:
        return self.cfg.describe()

    def wrap(self, key: bytes, ad: bytes) -> bytes:
        iv = os.urandom(_IV_BYTES)
        with self._lock:
            sealed = self._key.encrypt(key, mechanism=Mechanism.AES_GCM,
                                       mechanism_param=GCMParams(iv, ad))
        assert isinstance(sealed, bytes)  # one buffer in, one out (not a stream)
        return _BLOB + iv + sealed

    def unwrap(self, blob: bytes, ad: bytes) -> bytes:
        if blob[:1] != _BLOB and self.previous is not None:
            return self.previous.unwrap(blob, ad)
        if blob[:1] != _BLOB or len(blob) < 1 + _IV_BYTES + 16:
            raise MasterKeyError("a master key in the database was not wrapped by a "
                                 "PKCS#11 token: configure its provider ([keys] provider)")
        iv = blob[1:1 + _IV_BYTES]
        try:
            with self._lock:
                key = self._key.decrypt(blob[1 + _IV_BYTES:], mechanism=Mechanism.AES_GCM,
                                        mechanism_param=GCMParams(iv, ad))
        except PKCS11Error:  # the tag does not verify: another token's key
            raise MasterKeyError(f"{self.describe()} does not match this database "
                                 f"(a master key does not unwrap): wrong token or key?"
                                 ) from None
        assert isinstance(key, bytes)
        return key

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
