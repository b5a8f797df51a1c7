"""A real OpenID Connect provider on loopback for the tests: npm ``oidc-provider`` 9.x
(tests/oidc/provider.mjs) on Node, HTTPS with a certificate of a test CA, one issuer a
process. Python gets tokens from it as a client would: the authorization-code flow with
PKCE (RFC 7636, S256), its development login form filled over HTTP (the login typed is the
``accountId``: the idNat, e.g. "810000000001" for RPPS 10000000001), then the token
endpoint. Access tokens are JWTs or opaque (RFC 7662 introspection) by resource indicator
(RFC 8707); clients: "mss" (5-minute tokens, acr "eidas1"), "mss-short" (2-second tokens),
"mss-noacr" (no acr claim). Signing keys rotate during a test (:meth:`OidcProvider.rotate`)
and the JWKS endpoint can be taken down (:meth:`OidcProvider.jwks_down`).

Fixtures: ``oidc_provider`` (module scope) for other test modules::

    from tests.oidc import oidc_provider  # noqa: F401  (the fixture)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import html
import ipaddress
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import IO, Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.node import free_port
from tests.peers import missing
from trustspace.pki import generate_dev_pki, write_private_key

PROVIDER_DIR = Path(__file__).parent / "oidc"
HOST = "127.0.21.1"  # CONTRACTS.md: the tokens branch's loopback range 127.0.21.0/24
JWT_RESOURCE = "https://mss.test/mail"  # the aud of JWT access tokens
OPAQUE_RESOURCE = "https://mss.test/mail-opaque"  # opaque tokens, introspected
OTHER_RESOURCE = "https://other.test/api"  # a JWT for another audience
REDIRECT_URI = "https://127.0.21.1/callback"  # never fetched: the code is read from it
RESOURCES = {JWT_RESOURCE: "jwt", OPAQUE_RESOURCE: "opaque", OTHER_RESOURCE: "jwt"}
ANSWERS = ("listening ", "reloaded ", "jwks ", "error ")  # provider.mjs's answer lines
ACCOUNT = "810000000001"  # idNat of RPPS 10000000001 (the demo mailbox's)


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...] = (REDIRECT_URI,)
    access_ttl: int = 300
    acr: str | None = "eidas1"


def default_clients() -> list[Client]:
    return [Client("mss", secrets.token_urlsafe(24)),
            Client("mss-short", secrets.token_urlsafe(24), access_ttl=2),
            Client("mss-noacr", secrets.token_urlsafe(24), acr=None)]


@dataclass(frozen=True)
class Tokens:
    """The token endpoint's answer."""

    access_token: str
    id_token: str | None
    expires_in: int
    raw: dict[str, Any] = field(repr=False)


def _rsa_jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


def _leaf(pki: Path, host: str) -> tuple[Path, Path]:
    """The provider's HTTPS certificate (IP SAN *host*) signed by the dev CA of *pki*."""
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = pki / "oidc.crt", pki / "oidc.key"
    write_private_key(key_file, key)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # every redirect is followed by hand (the last one is the callback)


def require_node() -> str:
    """The node binary with the provider's node_modules installed, else skip/fail."""
    node = shutil.which("node")
    if node is None:
        missing("node not installed (Debian package 'nodejs'; `make install-test`)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        missing("tests/oidc/node_modules missing (`make install-test` runs npm ci there)")
    return node


class OidcProvider:
    """One issuer served by ``node provider.mjs`` until :meth:`stop`."""

    def __init__(self, directory: Path, *, host: str = HOST,
                 clients: list[Client] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port(host)
        self.issuer = f"https://{host}:{self.port}"
        self.clients = {c.client_id: c for c in (clients or default_clients())}
        pki = directory / "pki"
        generate_dev_pki(pki, "oidc.test", ["localhost"])
        self.ca_file = pki / "ca.crt"
        self.cert_file, self.key_file = _leaf(pki, host)
        self.jwks_file = directory / "jwks.json"
        self.signing_keys: list[dict[str, Any]] = [_rsa_jwk("key-1")]
        self._write_keys()
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._log: IO[str] | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    def client(self, client_id: str = "mss") -> Client:
        return self.clients[client_id]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def public_jwks(self) -> dict[str, Any]:
        keys = [{k: v for k, v in key.items() if k in ("kty", "kid", "use", "alg", "n", "e")}
                for key in self.signing_keys]
        return {"keys": keys}

    # ------------------------------------------------------------------ process
    def _write_keys(self) -> None:
        fd = os.open(self.jwks_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"keys": self.signing_keys}, out)

    def start(self) -> OidcProvider:
        node = require_node()
        config = {
            "issuer": self.issuer, "host": self.host, "port": self.port,
            "cert_file": str(self.cert_file), "key_file": str(self.key_file),
            "jwks_file": str(self.jwks_file),
            "clients": [{"client_id": c.client_id, "client_secret": c.client_secret,
                         "redirect_uris": list(c.redirect_uris), "access_ttl": c.access_ttl,
                         "acr": c.acr} for c in self.clients.values()],
            "resources": {uri: {"format": fmt, "scope": "mail"}
                          for uri, fmt in RESOURCES.items()},
        }
        config_file = self.directory / "provider.json"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out)
        self._log = open(self.directory / "provider.log", "a")  # noqa: SIM115 (kept open)
        self._proc = subprocess.Popen(
            [node, str(PROVIDER_DIR / "provider.mjs"), str(config_file)], cwd=PROVIDER_DIR,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            bufsize=1)
        line = self._answer(timeout=20.0)
        if not line.startswith("listening "):
            self.stop()
            raise AssertionError(f"oidc provider did not start: {line!r} "
                                 f"(see {self.directory / 'provider.log'})")
        return self

    def _answer(self, timeout: float = 10.0) -> str:
        """provider.mjs's next answer line; other lines on its stdout (oidc-provider's own
        notices, printed by console.info) are skipped into the provider's log."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            result: list[str] = []
            reader = threading.Thread(target=self._read_line, args=(result,), daemon=True)
            reader.start()
            reader.join(left)
            if not result or not result[0]:
                break
            line = result[0].strip()
            if line.startswith(ANSWERS):
                return line
            if self._log is not None:
                self._log.write(f"stdout: {line}\n")
        raise AssertionError(f"oidc provider silent for {timeout}s")

    def _read_line(self, into: list[str]) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        into.append(self._proc.stdout.readline())

    def _command(self, command: str) -> str:
        with self._lock:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            return self._answer()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()  # provider.mjs exits when stdin closes
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rotate(self, *, keep_old: bool = True) -> str:
        """A new signing key signs from now on (its kid returned); the old one stays in the
        JWKS (tokens it signed still verify) unless *keep_old* is false."""
        kid = f"key-{len(self.signing_keys) + 1}-{secrets.token_hex(3)}"
        self.signing_keys = [_rsa_jwk(kid)] + (self.signing_keys if keep_old else [])
        self._write_keys()
        answer = self._command("reload")
        assert answer == f"reloaded {kid}", answer
        return kid

    def jwks_down(self) -> None:
        assert self._command("jwks down") == "jwks down"

    def jwks_up(self) -> None:
        assert self._command("jwks up") == "jwks up"

    # ------------------------------------------------------------------ as a client
    def _opener(self) -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self.ssl_context()),
            urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())

    @staticmethod
    def _fetch(opener: urllib.request.OpenerDirector, url: str,
               data: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def authorization_code(self, account: str = ACCOUNT, *, client: str = "mss",
                           resource: str = JWT_RESOURCE, scope: str = "openid profile mail",
                           redirect_uri: str | None = None,
                           nonce: str | None = None) -> tuple[str, str, str]:
        """Log *account* in through the dev form: (code, code_verifier, redirect_uri)."""
        c = self.clients[client]
        redirect = redirect_uri or c.redirect_uris[0]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        params = {"client_id": client, "response_type": "code", "scope": scope,
                  "redirect_uri": redirect, "state": state, "code_challenge": challenge,
                  "code_challenge_method": "S256", "resource": resource,
                  "nonce": nonce or secrets.token_urlsafe(16), "prompt": "consent"}
        opener = self._opener()
        url = self.issuer + "/auth?" + urllib.parse.urlencode(params)
        for _ in range(12):  # auth -> login form -> auth -> consent form -> auth -> callback
            status, headers, body = self._fetch(opener, url)
            if status in (302, 303):
                url = urllib.parse.urljoin(url, headers["Location"])
                if url.startswith(redirect):
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
                    if "error" in query:
                        raise AssertionError(f"authorization refused: {query}")
                    assert query["state"] == [state]
                    return query["code"][0], verifier, redirect
                continue
            if status != 200:
                raise AssertionError(f"{url}: HTTP {status}: {body[:500]}")
            action = re.search(r'<form[^>]*action="([^"]+)"', body)
            prompt = re.search(r'name="prompt" value="([^"]+)"', body)
            assert action and prompt, body[:500]
            form = {"prompt": prompt.group(1)}
            if form["prompt"] == "login":
                form.update(login=account, password="any")  # the dev form takes any password
            status, headers, body = self._fetch(
                opener, urllib.parse.urljoin(url, html.unescape(action.group(1))), form)
            assert status in (302, 303), f"form {form['prompt']}: HTTP {status}: {body[:300]}"
            url = urllib.parse.urljoin(url, headers["Location"])
        raise AssertionError("authorization flow did not reach the callback")

    def _basic(self, client: str) -> dict[str, str]:
        c = self.clients[client]
        pair = f"{urllib.parse.quote(c.client_id)}:{urllib.parse.quote(c.client_secret)}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    def redeem(self, code: str, verifier: str, redirect_uri: str, *,
               client: str = "mss") -> Tokens:
        """The token endpoint (RFC 6749 §4.1.3 + RFC 7636 §4.5)."""
        status, _, body = self._fetch(
            self._opener(), self.issuer + "/token",
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
             "code_verifier": verifier}, self._basic(client))
        assert status == 200, f"token endpoint: HTTP {status}: {body[:500]}"
        raw = json.loads(body)
        return Tokens(raw["access_token"], raw.get("id_token"), int(raw["expires_in"]), raw)

    def tokens(self, account: str = ACCOUNT, *, client: str = "mss",
               resource: str = JWT_RESOURCE, scope: str = "openid profile mail") -> Tokens:
        """Tokens for *account*: the whole authorization-code + PKCE flow."""
        code, verifier, redirect = self.authorization_code(account, client=client,
                                                           resource=resource, scope=scope)
        return self.redeem(code, verifier, redirect, client=client)

    def access_token(self, account: str = ACCOUNT, **kwargs: Any) -> str:
        return self.tokens(account, **kwargs).access_token

    def revoke(self, token: str, *, client: str = "mss") -> None:
        """RFC 7009 revocation."""
        status, _, body = self._fetch(self._opener(), self.issuer + "/token/revocation",
                                      {"token": token}, self._basic(client))
        assert status == 200, f"revocation: HTTP {status}: {body[:300]}"

    def add_client(self, client: Client) -> None:
        """Register *client* (a portal's redirect URI); a running provider restarts (same
        issuer, port and keys) to load it."""
        self.clients[client.client_id] = client
        if self.running:
            self.restart()

    def oidc_table(self, directory: Path, **overrides: Any) -> dict[str, Any]:
        """An ``[[auth.oidc]]`` table for this issuer (JWT and opaque audiences, acr eidas1,
        introspection with client "mss", whose secret is written under *directory*)."""
        table: dict[str, Any] = {
            "name": "test", "issuer": self.issuer, "audience": [JWT_RESOURCE, OPAQUE_RESOURCE],
            "ca_file": str(self.ca_file), "required_acr": "eidas1", "client_id": "mss",
            "client_secret_file": str(self.secret_file(directory)), "introspection": True,
        }
        table.update(overrides)
        return table

    def toml(self, directory: Path, **overrides: Any) -> str:
        """:meth:`oidc_table` as TOML lines to append to a node's mss.toml."""
        lines = ["", "[[auth.oidc]]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.oidc_table(directory,
                                                                      **overrides).items()]
        return "\n".join(lines) + "\n"

    def secret_file(self, directory: Path, client: str = "mss") -> Path:
        """The client's secret in a 0600 file (client_secret_file)."""
        path = directory / f"{client}.secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.clients[client].client_secret + "\n")
        return path


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("oidc")).start()
    try:
        yield provider
    finally:
        provider.stop()


def wait_until(deadline: float) -> None:
    """Sleep until the epoch time *deadline* (expiry tests; bounded by the caller)."""
    time.sleep(max(0.0, deadline - time.time()))
