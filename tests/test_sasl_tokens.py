"""SASL OAUTHBEARER (RFC 7628) and XOAUTH2 on submission and IMAP with real access tokens of
a real OpenID Connect provider (tests/oidc.py), real clients: imaplib ``authenticate``,
smtplib ``auth`` with an authobject, aiosmtplib ``auth_xoauth2``, ``curl --oauth2-bearer``
over imap:// and smtp:// with --ssl-reqd and --cacert. Refusals get the RFC 7628 §3.2.2
error challenge then ``535 5.7.8`` / ``NO [AUTHENTICATIONFAILED]``, audited with the precise
reason; the JWKS down with no usable key: ``454 4.7.0`` / ``NO [UNAVAILABLE]``."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import json
import shutil
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtplib
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.node import DOMAIN, Node, make_node, read_all
from tests.oidc import (
    ACCOUNT,
    JWT_RESOURCE,
    OPAQUE_RESOURCE,
    OTHER_RESOURCE,
    OidcProvider,
    oidc_provider,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.timeout(240)

ALICE, BOB, SHARED = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"secretariat@{DOMAIN}"
BOB_ID, NOBODY_ID = "810000000002", "810000000099"  # bob's idNat; one that owns nothing
SOURCES = iter(f"127.0.22.{n}" for n in range(10, 250))  # CONTRACTS.md: sasl's loopback


@pytest.fixture(scope="module")
def node(oidc_provider: OidcProvider,  # noqa: F811
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("tokens")
    secret = oidc_provider.secret_file(base)
    config = f"""
[[auth.oidc]]
name = "test"
issuer = "{oidc_provider.issuer}"
audience = ["{JWT_RESOURCE}", "{OPAQUE_RESOURCE}"]
ca_file = "{oidc_provider.ca_file}"
required_acr = "eidas1"
clock_skew = 0
client_id = "mss"
client_secret_file = "{secret}"
introspection = true
jwks_refetch_interval = 0
"""
    n = make_node(base, extra_config=config)
    n.cli("mailbox", "grant", SHARED, BOB)  # bob: two mailboxes, the authzid picks one
    n.start()
    yield n
    n.stop()


def oauthbearer(token: str, authzid: str = "") -> bytes:
    """RFC 7628 §3.1 client response."""
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return f"{gs2}\x01host=127.0.0.1\x01port=0\x01auth=Bearer {token}\x01\x01".encode()


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


class _Imap(imaplib.IMAP4):
    def __init__(self, port: int) -> None:
        self.source = next(SOURCES)
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> object:
        import socket
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def imap(node: Node) -> imaplib.IMAP4:
    client = _Imap(node.ports["imap"])
    client.starttls(ssl_context=node.client_context())
    return client


def smtp(node: Node) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30,
                          source_address=(next(SOURCES), 0))
    client.ehlo("client.test")
    client.starttls(context=node.client_context())
    client.ehlo("client.test")
    return client


def answer(message: bytes, seen: list[bytes], text: bool = False
           ) -> Callable[[bytes | None], bytes | str]:
    """An authobject: the message first, then %x01 to an error challenge (kept in *seen*);
    *text*: as str (smtplib encodes it), else bytes (imaplib)."""
    def reply(challenge: bytes | None = None) -> bytes | str:
        if challenge:
            seen.append(challenge)
            return "\x01" if text else b"\x01"
        return message.decode() if text else message
    return reply


def last_auth(node: Node, event: str, source: str) -> dict[str, object]:
    rows = node.wait_audit(lambda r: r["event"] == event and r["remote_addr"] == source)
    assert rows, f"no {event} from {source}"
    return rows[-1]


# the first test: the provider's key rotation protocol (tests/oidc.py) reads a notice the
# provider prints at its first introspection as the answer to 'reload'
def test_jwks_down_unknown_key_is_temporary(node: Node,
                                            oidc_provider: OidcProvider) -> None:  # noqa: F811
    oidc_provider.rotate()  # tokens signed from now on carry a kid the node never saw
    token = oidc_provider.access_token(ACCOUNT)
    oidc_provider.jwks_down()
    try:
        with smtp(node) as client:
            code, text = client.docmd("AUTH", "OAUTHBEARER " + base64.b64encode(
                oauthbearer(token)).decode())
            assert (code, text[:5]) == (454, b"4.7.0")
            source = client.sock.getsockname()[0]
        row = last_auth(node, "smtp.auth", source)
        assert row["outcome"] == 4 and str(row["reason"]).startswith("token_unavailable: ")
        client2 = imap(node)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client2.authenticate("OAUTHBEARER", lambda _: oauthbearer(token))
        client2.logout()
    finally:
        oidc_provider.jwks_up()
    client3 = imap(node)  # the keys fetched again: accepted
    assert client3.authenticate("OAUTHBEARER", lambda _: oauthbearer(token))[0] == "OK"
    client3.logout()


# ------------------------------------------------------------------------------ accepted

def test_mechanisms_advertised(node: Node) -> None:
    with smtp(node) as client:
        assert client.esmtp_features["auth"].split() == ["LOGIN", "OAUTHBEARER", "PLAIN",
                                                         "XOAUTH2"]
    client = imap(node)
    caps = client.capability()[1][0].decode().split()
    assert {"AUTH=PLAIN", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"} <= set(caps)
    assert "AUTH=EXTERNAL" not in caps
    client.logout()


def test_imaplib_oauthbearer_and_audit(node: Node,
                                       oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT)
    client = imap(node)
    assert client.authenticate("OAUTHBEARER", lambda _: oauthbearer(token))[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    row = last_auth(node, "imap.login", client.source)
    assert row["outcome"] == 0 and row["actor"] == ALICE and row["mailbox"] == ALICE
    detail = row["detail"]
    assert isinstance(detail, dict)
    assert detail["method"] == "oauthbearer" and detail["issuer"] == "test"
    assert detail["subject"] == ACCOUNT and detail["jti"] and detail["kind"] == "jwt"
    assert token not in json.dumps(node.audit())  # never the token


def test_imaplib_xoauth2(node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT)
    client = imap(node)
    assert client.authenticate("XOAUTH2", lambda _: xoauth2(ALICE, token))[0] == "OK"
    client.logout()


def test_smtplib_oauthbearer_sends(node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT)
    with smtp(node) as client:
        code, _ = client.auth("OAUTHBEARER", answer(oauthbearer(token, ALICE), [], True))
        assert code == 235
        assert client.sendmail(ALICE, [BOB], f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: x\r\n"
                               "\r\nhello\r\n") == {}


def test_aiosmtplib_xoauth2(node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT)

    async def run() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=node.ports["submission"],
                                 start_tls=True, tls_context=node.client_context(),
                                 timeout=30)
        await client.connect()
        response = await client.auth_xoauth2(ALICE, token)
        assert response.code == 235
        await client.quit()
    asyncio.run(run())


def test_opaque_token_introspected(node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT, resource=OPAQUE_RESOURCE)
    assert token.count(".") != 2  # opaque
    client = imap(node)
    assert client.authenticate("OAUTHBEARER", lambda _: oauthbearer(token))[0] == "OK"
    client.logout()
    detail = last_auth(node, "imap.login", client.source)["detail"]
    assert isinstance(detail, dict)
    assert detail["kind"] == "introspected" and detail["token_tail"] == token[-32:]
    assert token not in json.dumps(node.audit())


def test_authzid_picks_one_of_several(node: Node,
                                      oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(BOB_ID)
    client = imap(node)
    seen: list[bytes] = []
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
        client.authenticate("OAUTHBEARER", answer(oauthbearer(token), seen))
    assert str(last_auth(node, "imap.login", client.source)["reason"]).startswith(
        "authzid_required: ")
    client.logout()
    client = imap(node)
    assert client.authenticate("OAUTHBEARER",
                               lambda _: oauthbearer(token, SHARED))[0] == "OK"
    assert last_auth(node, "imap.login", client.source)["mailbox"] == SHARED
    client.logout()


def test_token_through_a_grant_sends_as_the_shared_mailbox_only_with_the_send_right(
        node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    """Issue 16: bob's token with authzid the shared mailbox (reached through his grant):
    the SMTP session acts as bob, who may send as the shared mailbox only with the send
    right, the message then carrying Sender: bob; the login names both identities."""
    token = oidc_provider.access_token(BOB_ID)
    note = f"From: <{SHARED}>\r\nTo: <{ALICE}>\r\nSubject: x\r\n\r\nhello\r\n"
    with smtp(node) as client:
        assert client.auth("OAUTHBEARER", answer(oauthbearer(token, SHARED), [], True)
                           )[0] == 235
        source = client.sock.getsockname()[0]
        assert client.mail(SHARED)[0] == 553  # the grant gives no send right (fixture)
    row = last_auth(node, "smtp.auth", source)
    assert row["mailbox"] == SHARED and row["detail"]["grantee"] == BOB  # type: ignore[index]
    node.cli("mailbox", "grant", SHARED, BOB, "--send")
    try:
        with smtp(node) as client:
            assert client.auth("OAUTHBEARER", answer(oauthbearer(token, SHARED), [], True)
                               )[0] == 235
            assert client.sendmail(SHARED, [ALICE], note) == {}
            source = client.sock.getsockname()[0]
        rows = node.wait_audit(lambda r: r["event"] == "smtp.delegated"
                               and r["remote_addr"] == source)
        assert rows[-1]["actor"] == BOB and rows[-1]["mailbox"] == SHARED
        assert [m for m in read_all(node, ALICE) if f"Sender: <{BOB}>\r\n".encode() in m]
    finally:
        node.cli("mailbox", "grant", SHARED, BOB)  # back to the fixture's: no send right


def test_curl_oauth2_bearer_imap_and_smtp(node: Node, oidc_provider: OidcProvider,  # noqa: F811
                                          tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    token = oidc_provider.access_token(ACCOUNT)
    common = ["curl", "-sS", "--ssl-reqd", "--cacert", str(node.ca_file), "--oauth2-bearer",
              token, "-u", f"{ALICE}:"]
    out = subprocess.run([*common, f"imap://127.0.0.1:{node.ports['imap']}/"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "INBOX" in out.stdout, out.stderr
    mail = tmp_path / "mail.txt"
    mail.write_text(f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: curl\r\n\r\nhi\r\n")
    out = subprocess.run([*common, "--mail-from", ALICE, "--mail-rcpt", BOB, "-T", str(mail),
                          f"smtp://127.0.0.1:{node.ports['submission']}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------ refused

def _foreign_token() -> str:
    """A well-formed JWT of an issuer nobody configured."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"iss": "https://evil.test", "sub": ACCOUNT, "aud": JWT_RESOURCE,
                       "iat": now, "exp": now + 300}, key, algorithm="RS256",
                      headers={"kid": "k"})


TOKENS: dict[str, Callable[[OidcProvider], str]] = {
    "wrong audience": lambda p: p.access_token(ACCOUNT, resource=OTHER_RESOURCE),
    "unknown issuer": lambda p: _foreign_token(),
    "no acr": lambda p: p.access_token(ACCOUNT, client="mss-noacr"),
    "no mailbox": lambda p: p.access_token(NOBODY_ID),
}
REASONS = {"wrong audience": "token_rejected: wrong audience",
           "unknown issuer": "token_rejected: unknown issuer",
           "no acr": "token_rejected: acr", "no mailbox": "no_mailbox: "}


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_refused_tokens_smtp(node: Node, oidc_provider: OidcProvider,  # noqa: F811
                             case: str) -> None:
    token = TOKENS[case](oidc_provider)
    seen: list[bytes] = []
    with smtp(node) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("OAUTHBEARER", answer(oauthbearer(token), seen, True))
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error.startswith(b"5.7.8")
        source = client.sock.getsockname()[0]
    error = json.loads(seen[0])  # RFC 7628 §3.2.2: the error challenge, answered %x01
    assert error["status"] == "invalid_token"
    assert error["openid-configuration"] == oidc_provider.discovery_url
    row = last_auth(node, "smtp.auth", source)
    assert row["outcome"] == 8 and str(row["reason"]).startswith(REASONS[case]), row["reason"]


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_refused_tokens_imap(node: Node, oidc_provider: OidcProvider,  # noqa: F811
                             case: str) -> None:
    token = TOKENS[case](oidc_provider)
    client = imap(node)
    seen: list[bytes] = []
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.authenticate("OAUTHBEARER", answer(oauthbearer(token), seen))
    assert json.loads(seen[0])["status"] == "invalid_token"
    client.logout()
    row = last_auth(node, "imap.login", client.source)
    assert row["outcome"] == 8 and str(row["reason"]).startswith(REASONS[case]), row["reason"]


def test_expired_token_refused(node: Node, oidc_provider: OidcProvider) -> None:  # noqa: F811
    token = oidc_provider.access_token(ACCOUNT, client="mss-short")  # 2 seconds
    time.sleep(3.5)
    client = imap(node)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.authenticate("XOAUTH2", answer(xoauth2(ALICE, token), []))
    client.logout()
    assert "expired" in str(last_auth(node, "imap.login", client.source)["reason"])


def test_malformed_message(node: Node) -> None:
    with smtp(node) as client:
        blob = base64.b64encode(b"n,,\x01auth=Basic abc\x01\x01").decode()
        assert client.docmd("AUTH", f"OAUTHBEARER {blob}")[0] == 501
        source = client.sock.getsockname()[0]
    assert "malformed OAUTHBEARER" in str(last_auth(node, "smtp.auth", source)["reason"])


def test_failures_of_one_subject_are_throttled(node: Node,
                                               oidc_provider: OidcProvider) -> None:  # noqa: F811
    """The last test: it locks bob's subject (imap.login_failures = 5, from 5 addresses)."""
    token = oidc_provider.access_token(BOB_ID)
    for _ in range(5):  # authzid_required: bob has two mailboxes and names none
        client = imap(node)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            client.authenticate("OAUTHBEARER", answer(oauthbearer(token), []))
        client.logout()
    client = imap(node)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.authenticate("OAUTHBEARER", lambda _: oauthbearer(token, SHARED))
    client.logout()
    row = last_auth(node, "imap.login", client.source)
    assert row["reason"] == "throttled" and row["outcome"] == 4
