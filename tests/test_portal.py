"""The portal (proxy/portal) on a real node: HTTPS with the node's certificate verified by
the clients, autoconfig/autodiscover fetched with curl and aiohttp, the OIDC login against
the real test provider (npm oidc-provider, tests/oidc.py) done by an HTTP client following
its forms, CSRF/Origin refusals, idle expiry, and the pure parts (XML, PKCE, config)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import imaplib
import re
import secrets
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from sqlalchemy import update

from mss import db
from mss.config import ConfigError, load_config
from mss.identity.rp import pkce_pair
from proxy.portal import autoconfig
from tests.node import DOMAIN, PASSWORD, Node, make_node
from tests.oidc import Client, OidcProvider, default_clients

ALICE = f"alice@{DOMAIN}"
ALICE_ID = "810000000001"  # idNat of alice's RPPS 10000000001
NOBODY_ID = "819999999999"  # an RPPS that owns no mailbox
PORTAL_CLIENT = "portal"
TB = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


# ----------------------------------------------------------------------------- fixtures

def portal_config(node: Node, provider: OidcProvider, secret_file: Path) -> str:
    """The node's configuration with the portal on (mss init wrote it off)."""
    text, count = re.subn(r"\[portal\]\n(#.*\n)*enabled = false\n", "",
                          node.config.read_text())
    assert count == 1, text
    return text + f"""
[[auth.oidc]]
name = "test"
issuer = "{provider.issuer}"
audience = ["https://mss.test/mail"]
ca_file = "{provider.ca_file}"
client_id = "mss"
client_secret_file = "{provider.secret_file(secret_file.parent, 'mss')}"

[portal]
enabled = true
issuer = "test"
client_id = "{PORTAL_CLIENT}"
client_secret_file = "{secret_file}"
public_url = "https://127.0.0.1:{node.ports['portal']}"
"""


def portal_node(base: Path, node: Node | None = None) -> tuple[Node, OidcProvider]:
    """A node (*node*, made in *base* when None) serving the portal and the provider it
    logs in at (client "portal" whose redirect URI is the node's callback)."""
    node = node or make_node(base)
    callback = f"https://127.0.0.1:{node.ports['portal']}/login/callback"
    secret = secrets.token_urlsafe(24)
    provider = OidcProvider(base / "oidc", clients=[
        *default_clients(), Client(PORTAL_CLIENT, secret, redirect_uris=(callback,), acr=None)])
    provider.start()
    secret_file = provider.secret_file(base / "oidc", PORTAL_CLIENT)
    node.config.write_text(portal_config(node, provider, secret_file))
    try:
        node.start()
    except BaseException:
        provider.stop()
        raise
    return node, provider


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, OidcProvider]]:
    node, provider = portal_node(tmp_path_factory.mktemp("portal"))
    try:
        yield node, provider
    finally:
        if node.running:
            node.stop()
        provider.stop()


def url(node: Node, path: str = "/") -> str:
    return f"https://127.0.0.1:{node.ports['portal']}{path}"


class Browser:
    """An HTTP client that keeps cookies (IP hosts too) and follows no redirect by itself:
    every hop is checked (verified TLS: the node's CA, then the provider's)."""

    def __init__(self, node: Node, provider: OidcProvider) -> None:
        self.node, self.provider = node, provider
        self.jar = aiohttp.CookieJar(unsafe=True)

    def _ssl(self, target: str) -> Any:
        if target.startswith(self.provider.issuer):
            return self.provider.ssl_context()
        return verified(self.node)

    async def fetch(self, method: str, target: str, **kwargs: Any
                    ) -> tuple[int, dict[str, str], str, list[str]]:
        async with aiohttp.ClientSession(cookie_jar=self.jar) as http, http.request(
                method, target, ssl=self._ssl(target), allow_redirects=False,
                **kwargs) as r:
            cookies = r.headers.getall("Set-Cookie", [])
            return r.status, dict(r.headers), await r.text(), cookies

    async def login(self, account: str = ALICE_ID,
                    before_callback: Callable[[str], str] | None = None) -> tuple[int, str]:
        """The portal's /login through the provider's dev login and consent forms back to
        the callback; (status, body) of the callback's answer. *before_callback* may change
        the callback URL (or the database) first."""
        status, headers, body, _ = await self.fetch("GET", url(self.node, "/login"))
        assert status == 302, body
        target = headers["Location"]
        assert target.startswith(self.provider.issuer + "/auth?")
        for _ in range(12):
            if target.startswith(url(self.node, "/login/callback")):
                if before_callback is not None:
                    target = before_callback(target)
                status, _, body, _ = await self.fetch("GET", target)
                return status, body
            status, headers, body, _ = await self.fetch("GET", target)
            if status in (302, 303):
                target = urljoin(target, headers["Location"])
                continue
            assert status == 200, body[:300]
            action = re.search(r'<form[^>]*action="([^"]+)"', body)
            prompt = re.search(r'name="prompt" value="([^"]+)"', body)
            assert action and prompt, body[:300]
            form = {"prompt": prompt.group(1)}
            if form["prompt"] == "login":
                form.update(login=account, password="any")
            status, headers, body, _ = await self.fetch(
                "POST", urljoin(target, html.unescape(action.group(1))), data=form)
            assert status in (302, 303), body[:300]
            target = urljoin(target, headers["Location"])
        raise AssertionError("the login did not reach the portal's callback")

    async def csrf(self) -> str:
        status, _, body, _ = await self.fetch("GET", url(self.node, "/"))
        assert status == 200
        match = re.search(r'name="csrf" value="([^"]+)"', body)
        assert match, body[:500]
        return match.group(1)


def verified(node: Node) -> ssl.SSLContext:
    """The node's CA, and the host name checked (the dev certificate names 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(node.ca_file))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------- pure parts

def test_pkce_s256_challenge_is_the_verifiers_sha256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and re.fullmatch(r"[A-Za-z0-9_~.-]+", verifier)
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_autodiscover_request_parsing_refuses_dtd_and_junk() -> None:
    ok = (b'<?xml version="1.0"?><Autodiscover xmlns="' + autoconfig.REQUEST_SCHEMA.encode()
          + b'"><Request><EMailAddress>Bob@Demo.MSSante.fr</EMailAddress>'
          b'<AcceptableResponseSchema>' + TB.encode() + b'</AcceptableResponseSchema>'
          b'</Request></Autodiscover>')
    assert autoconfig.autodiscover_address(ok) == "Bob@Demo.MSSante.fr"
    for bad in (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', b"not xml", b"<a/>",
                b"x" * (autoconfig.MAX_REQUEST + 1)):
        with pytest.raises(autoconfig.AutodiscoverError):
            autoconfig.autodiscover_address(bad)


def test_portal_enabled_without_issuer_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "mss.toml"
    config.write_text("[portal]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"portal\.issuer: required when enabled"):
        load_config(config)
    config.write_text('[portal]\nenabled = true\nissuer = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"portal\.issuer: .*nowhere"):
        load_config(config)


def test_init_config_has_the_portal_off(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cfg = load_config(node.config)
    assert cfg.portal.enabled is False
    assert cfg.listeners["portal"].port == node.ports["portal"]


# ----------------------------------------------------------------------------- served

def test_autoconfig_with_curl_over_verified_tls(served: tuple[Node, OidcProvider]) -> None:
    node, _ = served
    cfg = load_config(node.config)
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        proc = subprocess.run(
            ["curl", "-sS", "--fail", "--cacert", str(node.ca_file),
             url(node, f"{path}?emailaddress={ALICE}")],
            capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        root = ET.fromstring(proc.stdout)
        provider = root.find("emailProvider")
        assert provider is not None and provider.get("id") == DOMAIN
        incoming = [(s.get("type"), s.findtext("hostname"), int(s.findtext("port") or 0),
                     s.findtext("socketType"), s.findtext("authentication"),
                     s.findtext("username")) for s in provider.findall("incomingServer")]
        outgoing = [(s.findtext("port"), s.findtext("socketType"))
                    for s in provider.findall("outgoingServer")]
        host = cfg.smtp.hostname
        assert incoming[0] == ("imap", host, node.ports["imaps"], "SSL", "password-cleartext",
                               "%EMAILADDRESS%")
        assert ("imap", host, node.ports["imap"], "STARTTLS", "password-cleartext",
                "%EMAILADDRESS%") in incoming
        assert ("imap", host, node.ports["imaps"], "SSL", "OAuth2", "%EMAILADDRESS%") in incoming
        assert (str(node.ports["submissions"]), "SSL") in outgoing
        assert (str(node.ports["submission"]), "STARTTLS") in outgoing
        assert ("imap", host, node.ports["imap-cert"], "STARTTLS", "TLS-client-cert",
                "%EMAILADDRESS%") == incoming[-1]
    configure_a_client_from(node, provider)
    # a domain the node does not host: nothing
    proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                           str(node.ca_file),
                           url(node, "/mail/config-v1.1.xml?emailaddress=x@elsewhere.fr")],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout == "404"


def configure_a_client_from(node: Node, provider: ET.Element) -> None:
    """A client set up from the autoconfig answer alone: curl reaches the announced IMAP
    (SSL) and SMTP (SSL) servers by the announced host name (resolved to the node's
    loopback address: --resolve), verifies the certificate for that name, logs in with the
    announced user name, lists the folders and sends a message."""
    def server(kind: str, socket_type: str) -> tuple[str, str, str]:
        for s in provider.findall(f"{kind}Server"):
            if s.findtext("socketType") == socket_type and \
                    s.findtext("authentication") == "password-cleartext":
                return (s.findtext("hostname") or "", s.findtext("port") or "",
                        (s.findtext("username") or "").replace("%EMAILADDRESS%", ALICE))
        raise AssertionError(f"no {kind} {socket_type} server announced")

    host, port, user = server("incoming", "SSL")
    common = ["curl", "-sS", "--fail", "--max-time", "30", "--cacert", str(node.ca_file),
              "--resolve", f"{host}:{port}:{node.host}", "--user", f"{user}:{PASSWORD}"]
    listed = subprocess.run([*common, f"imaps://{host}:{port}/"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "INBOX" in listed.stdout, listed.stderr
    host, port, user = server("outgoing", "SSL")
    common[common.index("--resolve") + 1] = f"{host}:{port}:{node.host}"
    common[-1] = f"{user}:{PASSWORD}"
    message = f"From: {ALICE}\r\nTo: {ALICE}\r\nSubject: autoconfig\r\n\r\nset up\r\n"
    sent = subprocess.run([*common, f"smtps://{host}:{port}", "--mail-from", ALICE,
                           "--mail-rcpt", ALICE, "-T", "-"], input=message,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


def test_autodiscover_pox(served: tuple[Node, OidcProvider]) -> None:
    node, provider = served
    body = (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="'
            f'{autoconfig.REQUEST_SCHEMA}"><Request><EMailAddress>{ALICE}</EMailAddress>'
            f'<AcceptableResponseSchema>{TB}</AcceptableResponseSchema></Request>'
            f'</Autodiscover>')

    async def post(text: str) -> tuple[int, str]:
        status, _, answer, _ = await Browser(node, provider).fetch(
            "POST", url(node, "/autodiscover/autodiscover.xml"), data=text.encode(),
            headers={"Content-Type": "text/xml"})
        return status, answer
    status, answer = run(post(body))
    assert status == 200
    root = ET.fromstring(answer)
    protocols = {p.findtext(f"{{{TB}}}Type"): p for p in root.iter(f"{{{TB}}}Protocol")}
    imap, smtp = protocols["IMAP"], protocols["SMTP"]
    assert imap.findtext(f"{{{TB}}}Port") == str(node.ports["imaps"])
    assert imap.findtext(f"{{{TB}}}Encryption") == "SSL"
    assert imap.findtext(f"{{{TB}}}LoginName") == ALICE
    assert smtp.findtext(f"{{{TB}}}Port") == str(node.ports["submissions"])
    assert smtp.findtext(f"{{{TB}}}Server") == load_config(node.config).smtp.hostname
    status, answer = run(post('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'))
    assert status == 400 and "<ErrorCode>600</ErrorCode>" in answer


def test_pages_carry_security_headers_and_login_cookie_flags(
        served: tuple[Node, OidcProvider]) -> None:
    node, provider = served

    async def go() -> None:
        b = Browser(node, provider)
        status, headers, body, _ = await b.fetch("GET", url(node, "/"))
        assert status == 200 and 'href="/login"' in body
        csp = headers["Content-Security-Policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert headers["Cache-Control"] == "no-store"
        assert "<script" not in body and "style=" not in body
        status, headers, _, cookies = await b.fetch("GET", url(node, "/login"))
        assert status == 302
        login = next(c for c in cookies if c.startswith("__Host-mss-login="))
        flags = {f.strip().lower() for f in login.split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= flags
        query = dict(p.split("=", 1) for p in urlsplit(headers["Location"]).query.split("&"))
        assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
        assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43
    run(go())


def test_login_then_pages_csrf_and_idle_expiry(served: tuple[Node, OidcProvider]) -> None:
    node, provider = served

    async def go() -> None:
        b = Browser(node, provider)
        status, body = await b.login()
        assert status == 200, body
        session = [c for c in b.jar if c.key == "__Host-mss-session"]
        assert len(session) == 1
        assert session[0]["secure"] and session[0]["httponly"]
        assert session[0]["samesite"] == "Strict"
        status, _, body, _ = await b.fetch("GET", url(node, "/"))
        assert status == 200 and ALICE in body and "Create an app password" in body
        csrf = await b.csrf()
        form = {"mailbox": ALICE, "label": "laptop", "scope_imap": "on"}
        # no CSRF token / a wrong one / a foreign Origin: refused, audited, nothing made
        for data, headers in ((form, {}), ({**form, "csrf": "x" * 43}, {}),
                              ({**form, "csrf": csrf}, {"Origin": "https://evil.example"})):
            status, _, _, _ = await b.fetch("POST", url(node, "/app-passwords"), data=data,
                                            headers=headers)
            assert status == 403
        # another person's mailbox
        status, _, _, _ = await b.fetch("POST", url(node, "/app-passwords"),
                                        data={**form, "csrf": csrf, "mailbox": f"bob@{DOMAIN}"})
        assert status == 403
        status, _, body, _ = await b.fetch("POST", url(node, "/app-passwords"),
                                           data={**form, "csrf": csrf},
                                           headers={"Origin": url(node, "")})
        assert status == 200, body
        secret = re.search(r'<code id="secret">([^<]+)</code>', body)
        assert secret
        status, _, body, _ = await b.fetch("GET", url(node, "/settings"))
        assert status == 200 and str(node.ports["imaps"]) in body
        status, _, body, _ = await b.fetch("GET", url(node, "/history"))
        assert status == 200 and "Portal login" in body and "App password created" in body
        assert secret.group(1) not in body
        # idle past portal.session_idle: the next request gets the login page
        engine = db.make_engine(load_config(node.config).database_url)
        try:
            with engine.begin() as conn:
                conn.execute(update(db.portal_sessions).values(last_seen=time.time() - 3600))
        finally:
            engine.dispose()
        status, _, body, _ = await b.fetch("GET", url(node, "/"))
        assert status == 200 and 'id="expired"' in body and ALICE not in body
    run(go())
    refused = node.wait_audit(lambda r: r["event"] == "portal.refused", count=4)
    assert {r["reason"] for r in refused} >= {"bad CSRF token", "foreign origin",
                                              "mailbox not the session's"}
    made = node.wait_audit(lambda r: r["event"] == "portal.app_password.create")
    assert made[0]["mailbox"] == ALICE and made[0]["listener"] == "portal"
    logins = node.wait_audit(lambda r: r["event"] == "portal.login" and r["outcome"] == 0)
    assert logins[0]["detail"]["issuer"] == "test" and logins[0]["detail"]["subject"] == ALICE_ID
    text = repr(node.audit())
    assert "code=" not in text and "id_token" not in text


def test_login_of_someone_without_mailbox_and_replayed_callback(
        served: tuple[Node, OidcProvider]) -> None:
    node, provider = served

    async def go() -> None:
        b = Browser(node, provider)
        status, body = await b.login(NOBODY_ID)
        assert status == 403 and "did not succeed" in body
        assert not [c for c in b.jar if c.key == "__Host-mss-session"]
        # a callback without a login in progress (no login cookie): refused
        status, _, _, _ = await Browser(node, provider).fetch(
            "GET", url(node, "/login/callback?code=abc&state=def"))
        assert status == 403
    run(go())
    failed = node.wait_audit(lambda r: r["event"] == "portal.login" and r["outcome"] == 8,
                             count=2)
    reasons = {r["reason"] for r in failed}
    assert "no mailbox for this national id" in reasons
    assert "no login in progress or it expired" in reasons


def test_history_shows_a_delegates_access_to_a_shared_mailbox(
        served: tuple[Node, OidcProvider]) -> None:
    """secretariat@ is shared with alice and bob; bob opens it over IMAP: alice's history
    shows it (by bob, from his address), and never the folder's name."""
    node, provider = served
    shared = f"secretariat@{DOMAIN}"
    for user in ("alice", "bob"):
        node.cli("mailbox", "grant", shared, f"{user}@{DOMAIN}")
    with imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=20) as imap:
        imap.starttls(verified(node))
        imap.login(f"bob@{DOMAIN}", PASSWORD)
        status, _ = imap.select(f'"Shared/{shared}/INBOX"')
        assert status == "OK"
    node.wait_audit(lambda r: r["event"] == "imap.delegated" and r["mailbox"] == shared)

    async def go() -> str:
        b = Browser(node, provider)
        status, _ = await b.login()
        assert status == 200
        status, _, body, _ = await b.fetch("GET", url(node, f"/history?mailbox={shared}"))
        assert status == 200
        return body
    body = run(go())
    rows = re.findall(r'<tr class="access delegated">(.*?)</tr>', body, re.S)
    assert any("Delegated access" in r and f"bob@{DOMAIN}" in r and "127.0.0.1" in r
               for r in rows), body
    assert "INBOX" not in body.split('id="history"', 1)[1]


def test_sessions_hold_across_two_workers(tmp_path: Path) -> None:
    """server.workers = 2 share the port (SO_REUSEPORT): each request on a new connection
    lands on either; the session, in the database, is known to both."""
    node = make_node(tmp_path)
    text = node.config.read_text().replace("[server]\n", "[server]\nworkers = 2\n", 1)
    node.config.write_text(text)
    node, provider = portal_node(tmp_path, node=node)
    try:
        async def go() -> None:
            b = Browser(node, provider)
            status, _ = await b.login()
            assert status == 200
            for _ in range(12):  # a new connection each (the kernel spreads them)
                status, _, body, _ = await b.fetch("GET", url(node, "/settings"))
                assert status == 200 and "Client settings" in body
        run(go())
        served = {r["detail"]["worker"] for r in node.audit("--event", "server.start")}
        assert served == {0, 1}
    finally:
        if node.running:
            node.stop()
        provider.stop()


def _pending(node: Node, **values: str) -> None:
    """Change the pending login rows (as a tampered or confused flow would leave them)."""
    engine = db.make_engine(load_config(node.config).database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(db.portal_sessions)
                         .where(db.portal_sessions.c.national_id.is_(None)).values(**values))
    finally:
        engine.dispose()


def test_state_nonce_and_pkce_are_checked(served: tuple[Node, OidcProvider]) -> None:
    """A callback with another state, an ID token whose nonce is not the login's, a code
    redeemed with another PKCE verifier (the provider refuses it): each a failed login."""
    node, provider = served

    def other_state(target: str) -> str:
        return re.sub(r"state=[^&]+", "state=" + "x" * 43, target)

    def other_nonce(target: str) -> str:
        _pending(node, nonce="n" * 43)
        return target

    def other_verifier(target: str) -> str:
        _pending(node, verifier="v" * 86)
        return target

    async def go() -> None:
        for change in (other_state, other_nonce, other_verifier):
            b = Browser(node, provider)
            status, body = await b.login(before_callback=change)
            assert status == 403, (change.__name__, body)
            assert not [c for c in b.jar if c.key == "__Host-mss-session"]
    run(go())
    failed = node.wait_audit(lambda r: r["event"] == "portal.login" and r["outcome"] == 8,
                             count=3)
    reasons = " | ".join(str(r["reason"]) for r in failed)
    assert "state mismatch" in reasons
    assert "ID token: nonce mismatch" in reasons
    assert "invalid_grant" in reasons, reasons
