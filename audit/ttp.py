"""Reversible pseudonyms through a trusted third party (TTP): the INS sealed to its key.

The keyed pseudonym (:func:`audit.patient.pseudonym`) lets an investigator follow one
patient's messages but nobody can go back from it to the identifier. The national doctrine
asks for pseudonymisation reversible only through a trusted third party: beside the HMAC,
the audit record of an accepted message keeps the identifier sealed to the third party's
X25519 public key with HPKE (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM; ``cryptography``'s ``hpke.Suite``). The node holds the public
key only (``audit.ttp_public_key_file``): no key of the node opens a sealed value.

A sealed value is ``ttp1.<key id>.<base64url>``: the key id (the first 8 bytes of the
SHA-256 of the raw public key, hex) names the third party's key it was sealed to. The
plaintext is JSON ``{"v": 1, "id": INS, "oid": assigning authority, "pseudonym": pp-...}``
and the HPKE ``info`` binds it to this use, so the third party can check that what it
reveals is the identifier behind the pseudonym it was asked about.

``mss audit reveal-request PSEUDONYM --reason ...`` (the node) records the request in the
trail and writes what the third party needs; ``mss-ttp reveal`` (:mod:`audit.ttp_cli`, a
separate program run by the third party with its private key file) opens it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

PREFIX = "ttp1"
INFO = b"mss patient identifier sealed to a trusted third party, v1"


def _suite() -> hpke.Suite:
    """DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (RFC 9180 §7)."""
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class TtpError(ValueError):
    """A key file or a sealed value that cannot be used; the message says why."""


def key_id(public_key: X25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TtpError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, X25519PublicKey):
        raise TtpError(f"{path}: not an X25519 public key")
    return key


def load_private_key(path: Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TtpError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, X25519PrivateKey):
        raise TtpError(f"{path}: not an X25519 private key")
    return key


def generate(private_path: Path, public_path: Path) -> X25519PublicKey:
    """A new key pair: the private key 0600 (it never goes to the node), the public one."""
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = key.public_key()
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return public


def seal(public_key: X25519PublicKey, identifier: str, oid: str, pseudonym: str) -> str:
    """The identifier sealed to the third party (a fresh ephemeral key each time)."""
    plain = json.dumps({"v": 1, "id": identifier, "oid": oid, "pseudonym": pseudonym},
                       separators=(",", ":")).encode()
    sealed = _suite().encrypt(plain, public_key, info=INFO)
    text = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    return f"{PREFIX}.{key_id(public_key)}.{text}"


def open_sealed(private_key: X25519PrivateKey, sealed: str) -> dict[str, Any]:
    """The plaintext of a sealed value; TtpError when it is not for this key or altered."""
    prefix, _, rest = sealed.strip().partition(".")
    kid, _, text = rest.partition(".")
    if prefix != PREFIX or not text:
        raise TtpError("not a sealed identifier (ttp1.<key id>.<data>)")
    if kid != key_id(private_key.public_key()):
        raise TtpError(f"sealed to another key ({kid})")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        plain = _suite().decrypt(data, private_key, info=INFO)
    except (ValueError, InvalidTag) as exc:
        raise TtpError("the sealed value does not open with this key (altered?)") from exc
    value = json.loads(plain)
    if not isinstance(value, dict) or value.get("v") != 1:
        raise TtpError("unknown sealed value version")
    return value
