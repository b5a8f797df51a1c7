"""Password hashing with scrypt (RFC 7914) from the standard library.

Stored form: ``$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt b64>$<hash b64>``. Verification is
constant-time and costs tens of milliseconds of CPU: callers on the event loop run it in an
executor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

LOG2_N = 14
MAX_LOG2_N = 20  # a stored cost above this is corrupt (and would take seconds of CPU)
R = 8
P = 1
DKLEN = 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << LOG2_N, r=R, p=P,
                            dklen=DKLEN, maxmem=64 * 1024 * 1024)
    return f"$scrypt$ln={LOG2_N},r={R},p={P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when *password* matches *stored*; False for any malformed or missing hash (never
    an exception: its message could carry the stored hash into a log)."""
    if not stored or not isinstance(stored, str):
        # Spend the same time as a real check so a missing user is not distinguishable.
        hash_password(password)
        return False
    try:
        _, scheme, params, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        fields = dict(item.split("=") for item in params.split(","))
        log2_n = int(fields["ln"])
        if not 1 <= log2_n <= MAX_LOG2_N:
            return False
        n = 1 << log2_n
        salt, expected = _unb64(salt_b64), _unb64(digest_b64)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=int(fields["r"]),
                                p=int(fields["p"]), dklen=len(expected),
                                maxmem=64 * 1024 * 1024)
    except (ValueError, KeyError, TypeError, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)
