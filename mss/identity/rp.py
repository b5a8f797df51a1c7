"""The portal's OpenID Connect relying party: the authorization code flow (OIDC Core §3.1)
with PKCE S256 (RFC 7636), state and nonce, the code exchanged at the token endpoint over
verified TLS, the ID token verified by the process's TokenVerifier (signature by the
issuer's JWKS, iss, aud = our client_id, exp, nonce), the national identifier read from
it or else from the UserInfo endpoint (OIDC Core §5.3).

Nothing here logs or returns a code, a token or the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from mss.config import ConfigError
from mss.identity.errors import TokenError
from mss.identity.fetch import FetchError, https_only, tls_context
from mss.identity.issuer import IssuerMetadata
from mss.identity.tokens import TokenVerifier

MAX_RESPONSE = 1 << 20  # octets of a token or UserInfo response


class LoginFailed(Exception):
    """The login cannot complete; *reason* is for the audit (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Begun:
    url: str  # where the browser goes (the authorization endpoint with our parameters)
    state: str
    nonce: str
    verifier: str  # the PKCE code_verifier, kept server-side


@dataclass(frozen=True)
class PortalIdentity:
    issuer_name: str
    issuer: str
    subject: str
    national_id: str
    acr: str | None

    def audit_detail(self) -> dict[str, str]:
        detail = {"issuer": self.issuer_name, "subject": self.subject}
        if self.acr:
            detail["acr"] = self.acr
        return detail


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge): RFC 7636 §4.1 (43-128 unreserved characters,
    here 86 from 64 random octets) and §4.2 (BASE64URL(SHA256(verifier)), no padding)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class RelyingParty:
    """One issuer, one client; built once per serving process by the portal listener.
    The client is the issuer's (client_id, client_secret_file) unless given."""

    def __init__(self, verifier: TokenVerifier, issuer_name: str, *, client_id: str = "",
                 client_secret: str | None = None, scope: str = "openid profile") -> None:
        config = verifier.issuer_config(issuer_name)
        default_id, default_secret = verifier.client_credentials(issuer_name)
        self.verifier = verifier
        self.issuer_name = issuer_name
        self.client_id = client_id or default_id
        self._secret = client_secret if client_secret is not None else default_secret
        self.national_id_claim = config.national_id_claim
        self.required_acr = config.required_acr
        self.scope = scope
        self.timeout = aiohttp.ClientTimeout(total=config.timeout)
        self.ssl = tls_context(config.ca_file)
        if not self.client_id:
            raise ConfigError("config: portal.client_id: required (or the issuer's "
                              "client_id)")

    async def _metadata(self) -> IssuerMetadata:
        try:
            return await self.verifier.metadata(self.issuer_name)
        except TokenError as exc:
            raise LoginFailed(f"issuer metadata: {exc.reason}") from None

    async def begin(self, redirect_uri: str) -> Begun:
        meta = await self._metadata()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": self.client_id,
                  "redirect_uri": redirect_uri, "scope": self.scope, "state": state,
                  "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
        if self.required_acr:  # OIDC Core §3.1.2.1 acr_values
            params["acr_values"] = self.required_acr
        endpoint = meta.authorization_endpoint
        if not endpoint:
            raise LoginFailed("the issuer's discovery document has no authorization_endpoint")
        return Begun(f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}",
                     state, nonce, verifier)

    async def complete(self, code: str, verifier: str, nonce: str,
                       redirect_uri: str) -> PortalIdentity:
        meta = await self._metadata()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": redirect_uri, "code_verifier": verifier}
        auth = None
        if self._secret:  # RFC 6749 §2.3.1 client_secret_basic
            auth = aiohttp.BasicAuth(_form_encode(self.client_id), _form_encode(self._secret))
        else:
            form["client_id"] = self.client_id
        if not meta.token_endpoint:
            raise LoginFailed("the issuer's discovery document has no token_endpoint")
        answer = await self._call("POST", meta.token_endpoint, data=form, auth=auth)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("token response without id_token")
        try:
            claims = await self.verifier.verify_jwt(id_token, self.issuer_name,
                                                    audience=self.client_id, nonce=nonce)
        except TokenError as exc:
            raise LoginFailed(f"ID token: {exc.reason}") from None
        acr = claims.get("acr")
        if self.required_acr and acr != self.required_acr:
            raise LoginFailed(f"ID token acr {acr!r}, {self.required_acr!r} required")
        national_id = claims.get(self.national_id_claim)
        if not national_id and meta.userinfo_endpoint:
            access = answer.get("access_token")
            if isinstance(access, str):
                info = await self._call("GET", meta.userinfo_endpoint,
                                        headers={"Authorization": f"Bearer {access}"})
                if info.get("sub") == claims.get("sub"):  # OIDC Core §5.3.2
                    national_id = info.get(self.national_id_claim)
        if not isinstance(national_id, str) or not national_id:
            raise LoginFailed(f"no {self.national_id_claim} claim")
        return PortalIdentity(self.issuer_name, str(claims.get("iss")), str(claims.get("sub")),
                              national_id, str(acr) if acr else None)

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            https_only(url, "endpoint")
            async with aiohttp.ClientSession(timeout=self.timeout) as http, \
                    http.request(method, url, ssl=self.ssl, allow_redirects=False,
                                 **kwargs) as response:
                body = await response.content.read(MAX_RESPONSE + 1)
                status = response.status
        except FetchError as exc:
            raise LoginFailed(str(exc)) from None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise LoginFailed(f"{method} {url}: {type(exc).__name__}") from None
        if len(body) > MAX_RESPONSE:
            raise LoginFailed(f"{method} {url}: response too large")
        try:
            answer = json.loads(body)
        except ValueError:
            raise LoginFailed(f"{method} {url}: HTTP {status}, not JSON") from None
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise LoginFailed(f"{method} {url}: HTTP {status} {str(error)[:64]}")
        return answer


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic."""
    return urlencode({"": value})[1:]
