"""The SASL messages (mss/sasl.py), the mechanisms a listener offers and the national id
mapping's pure parts: unit tests on top of the real-client tests (test_sasl_*.py)."""

from __future__ import annotations

import json

import pytest

from mss.authenticator import _pick, offered
from mss.config import ListenerConfig
from mss.mailstore.identities import rpps_of
from mss.mailstore.mailboxes import Mailbox
from mss.sasl import (
    MAX_TOKEN,
    SaslError,
    oauthbearer_error,
    parse_external,
    parse_oauthbearer,
    parse_xoauth2,
)
from trustspace.dn import dn_key, parse_dn


def test_oauthbearer_rfc7628_example() -> None:
    # RFC 7628 §4.1 (the host and port pairs are ignored)
    message = parse_oauthbearer(
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    assert message.authzid == "user@example.com"
    assert message.token == "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    assert "vF9d" not in repr(message)  # never in a log line
    assert parse_oauthbearer(b"n,,\x01auth=bearer abc\x01\x01").authzid is None
    assert parse_oauthbearer(b"y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01").authzid == "a,b=c"


@pytest.mark.parametrize("data,reason", [
    (b"", "no GS2 header"),
    (b"p=tls-unique,,\x01auth=Bearer t\x01\x01", "channel binding"),
    (b"x,,\x01auth=Bearer t\x01\x01", "flag"),
    (b"n,u=x,\x01auth=Bearer t\x01\x01", "a=..."),
    (b"n,a=x=41,\x01auth=Bearer t\x01\x01", "=2C or =3D"),
    (b"n,,auth=Bearer t\x01\x01", "no %x01 after"),
    (b"n,,\x01auth=Bearer t\x01", "does not end"),
    (b"n,,\x01host=h\x01\x01", "no auth key"),
    (b"n,,\x01auth=Basic dTpw\x01\x01", "Bearer"),
    (b"n,,\x01auth=Bearer a b\x01\x01", "b64token"),
    (b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "twice"),
    (b"n,,\x01auth=Bearer " + b"a" * (MAX_TOKEN + 1) + b"\x01\x01", "longer"),
    (b"n,,\x01auth=Bearer \xff\x01\x01", "UTF-8"),
])
def test_oauthbearer_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(SaslError, match=reason):
        parse_oauthbearer(data)


def test_xoauth2_and_external() -> None:
    message = parse_xoauth2(b"user=a@b.fr\x01auth=Bearer tok\x01\x01")
    assert (message.authzid, message.token) == ("a@b.fr", "tok")
    with pytest.raises(SaslError):
        parse_xoauth2(b"user=a@b.fr\x01\x01")
    assert parse_external(b"") is None
    assert parse_external(b"app@b.fr") == "app@b.fr"
    with pytest.raises(SaslError):
        parse_external(b"a\x00b")


def test_error_challenge_rfc7628_3_2_2() -> None:
    body = json.loads(oauthbearer_error("invalid_token", "https://i.test/.well-known/x"))
    assert body == {"status": "invalid_token", "scope": "openid",
                    "openid-configuration": "https://i.test/.well-known/x"}


def _listener(*auth: str) -> ListenerConfig:
    return ListenerConfig(name="x", auth=auth)


def test_offered_per_front() -> None:
    assert offered(_listener("password", "oauthbearer", "xoauth2"), True, "submission") == (
        "LOGIN", "PLAIN", "OAUTHBEARER", "XOAUTH2")
    assert offered(_listener("password", "oauthbearer"), False, "imap") == ("PLAIN",)
    assert offered(_listener("app-password"), True, "imap") == ("PLAIN",)
    assert offered(_listener("external"), True, "submission") == ("EXTERNAL",)
    assert offered(_listener("oauthbearer", "xoauth2"), True, "imap") == (
        "OAUTHBEARER", "XOAUTH2")  # passwords off
    assert offered(_listener("external"), True, "relay") == ("LOGIN", "PLAIN")


def _box(address: str) -> Mailbox:
    return Mailbox(1, address, "PER", True, None, None, 0.0)


def test_national_id_mapping() -> None:
    assert rpps_of("810000000001") == "10000000001"
    assert rpps_of("010000000001") is None and rpps_of("8123") is None
    one, two = _box("a@d.fr"), _box("s@d.fr")
    assert _pick([], None, "8x")[1].startswith("no_mailbox: ")
    assert _pick([one], None, "8x")[0] == one
    assert _pick([one, two], None, "8x")[1].startswith("authzid_required: ")
    assert _pick([one, two], "S@D.FR", "8x")[0] == two
    assert _pick([one], "x@d.fr", "8x")[1].startswith("authzid_not_allowed: ")


def test_dn_key_compares_parsed() -> None:
    assert dn_key(parse_dn("CN=a, O=B ,C=FR")) == dn_key(parse_dn("c=fr,o=b,cn=A"))
    assert dn_key(parse_dn("CN=a,O=B,C=FR")) != dn_key(parse_dn("CN=b,O=B,C=FR"))
