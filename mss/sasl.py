"""The client messages of the token and certificate SASL mechanisms, parsed (pure functions),
and the server's error challenge. SMTP AUTH and IMAP AUTHENTICATE share them.

- OAUTHBEARER (RFC 7628 §3.1): ``gs2-header %x01 *(key "=" value %x01) %x01``, the
  ``auth`` pair carrying ``Bearer <token>`` (RFC 6750 §2.1 b64token); on failure the server
  answers one challenge, a JSON object (§3.2.2), the client sends ``%x01`` and the server
  ends with a failure;
- XOAUTH2 (Google's): ``user=<address> %x01 auth=Bearer <token> %x01 %x01``;
- EXTERNAL (RFC 4422 appendix A): the message is the authorization identity, possibly empty.

A malformed message raises :class:`SaslError` whose text is the private reason for the audit
record (it never quotes the token).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

MAX_TOKEN = 8192  # characters: a PSC access token is about 1.5 KB, a client's 12 KB line bound
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1
_KEY = re.compile(r"[A-Za-z]+")  # RFC 7628 §3.1 key
_SASLNAME_ESCAPE = re.compile(r"=(?!2C|3D)")  # RFC 5801 §4: only =2C and =3D


class SaslError(ValueError):
    """A client message that is not the mechanism's syntax (the text: an audit reason)."""


@dataclass(frozen=True)
class BearerMessage:
    """What an OAUTHBEARER or XOAUTH2 client sent: the token and who it asks to be."""

    authzid: str | None  # RFC 7628 gs2 "a=", XOAUTH2 "user="; None or "" when absent
    token: str = field(repr=False)  # never logged, never audited


def _bearer(value: str) -> str:
    """The token of an ``auth`` value ``Bearer <token>`` (scheme case-insensitive)."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SaslError("auth value is not 'Bearer <token>'")
    if len(token) > MAX_TOKEN:
        raise SaslError(f"token longer than {MAX_TOKEN} characters")
    if not _B64TOKEN.fullmatch(token):
        raise SaslError("token is not an RFC 6750 b64token")
    return token


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("message is not UTF-8") from None


def _pairs(body: str) -> dict[str, str]:
    """``key=value %x01`` pairs up to the final ``%x01`` (RFC 7628 §3.1 kvpair)."""
    if not body.endswith("\x01"):
        raise SaslError("message does not end with %x01 %x01")
    items = body[:-1].split("\x01")
    if items[-1] != "":
        raise SaslError("message does not end with %x01 %x01")
    pairs: dict[str, str] = {}
    for item in items[:-1]:
        name, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(name):
            raise SaslError("a key-value pair is not key=value")
        if name in pairs:
            raise SaslError(f"key {name!r} given twice")
        pairs[name] = value
    return pairs


def _saslname(text: str) -> str:
    """RFC 5801 §4 saslname: ``,`` and ``=`` written =2C and =3D."""
    if _SASLNAME_ESCAPE.search(text):
        raise SaslError("authzid has an '=' that is not =2C or =3D")
    return text.replace("=2C", ",").replace("=3D", "=")


def parse_oauthbearer(data: bytes) -> BearerMessage:
    """RFC 7628 §3.1 client response."""
    text = _text(data)
    flag, sep, rest = text.partition(",")
    if not sep:
        raise SaslError("no GS2 header")
    if flag.startswith("p="):  # RFC 7628 §4.1: no channel binding here
        raise SaslError("channel binding requested (not supported)")
    if flag not in ("n", "y"):
        raise SaslError("GS2 header flag is not n, y or p=")
    authz, sep, rest = rest.partition(",")
    if not sep:
        raise SaslError("GS2 header not ended by ','")
    authzid = None
    if authz:
        if not authz.startswith("a="):
            raise SaslError("GS2 authzid is not a=...")
        authzid = _saslname(authz[2:])
    if not rest.startswith("\x01"):
        raise SaslError("no %x01 after the GS2 header")
    pairs = _pairs(rest[1:])
    if "auth" not in pairs:
        raise SaslError("no auth key")
    return BearerMessage(authzid, _bearer(pairs["auth"]))


def parse_xoauth2(data: bytes) -> BearerMessage:
    """``user=<user> %x01 auth=Bearer <token> %x01 %x01``."""
    pairs = _pairs(_text(data))
    if "auth" not in pairs:
        raise SaslError("no auth key")
    return BearerMessage(pairs.get("user") or None, _bearer(pairs["auth"]))


def parse_external(data: bytes) -> str | None:
    """RFC 4422 appendix A: the authorization identity (None when empty)."""
    text = _text(data)
    if "\x00" in text:
        raise SaslError("authzid holds a NUL")
    return text or None


def oauthbearer_error(status: str, configuration: str | None, scope: str = "openid") -> bytes:
    """RFC 7628 §3.2.2 server error challenge (its JSON, before base64): *status* an RFC
    6750 §3.1 error code, *configuration* the issuer's OpenID discovery URL (§3.2.2
    "openid-configuration", where the client gets a token)."""
    body: dict[str, str] = {"status": status, "scope": scope}
    if configuration:
        body["openid-configuration"] = configuration
    return json.dumps(body, separators=(",", ":")).encode()
