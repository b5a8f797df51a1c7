"""One configured issuer ([[auth.oidc]]): its discovery document (OIDC Discovery 1.0 §4),
its signing keys (RFC 7517 JWKS) cached for at most ``jwks_max_age`` after their last
successful fetch and re-fetched, rate-limited, for an unknown ``kid``, and its RFC 7662
introspection endpoint."""

from __future__ import annotations

import asyncio
import base64
import stat
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import structlog

from mss.config import ConfigError, OidcIssuerConfig
from mss.identity.errors import TokenRejected, TokenUnavailable
from mss.identity.fetch import FetchError, https_only, request_json, tls_context

log = structlog.get_logger("mss.identity")

# asymmetric signatures only: never "none" nor an HMAC keyed with a public key (RFC 8725 §3.1)
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"})


@dataclass(frozen=True)
class IssuerMetadata:
    """The endpoints of the discovery document the node uses (all https)."""

    issuer: str
    jwks_uri: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    introspection_endpoint: str | None
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, doc: dict[str, Any], expected_issuer: str) -> IssuerMetadata:
        # OIDC Discovery §4.3: the issuer in the document is exactly the one configured
        if doc.get("issuer") != expected_issuer:
            raise FetchError(f"discovery document of issuer {str(doc.get('issuer'))[:200]!r}, "
                             f"not {expected_issuer!r}")

        def url(name: str, required: bool = False) -> str | None:
            value = doc.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str):
                raise FetchError(f"discovery document: {name} missing or not a string")
            return https_only(value, name)

        return cls(expected_issuer, str(url("jwks_uri", True)), url("authorization_endpoint"),
                   url("token_endpoint"), url("introspection_endpoint"),
                   url("userinfo_endpoint"), url("end_session_endpoint"), doc)


def read_client_secret(path: Path | None, key: str) -> str | None:
    """A client secret file (0600, refused otherwise), or None when none is configured;
    *key* names it in the error (``auth.oidc[0].client_secret_file``)."""
    if path is None:
        return None
    try:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"config: {key}: {path} is readable by group or others "
                              "(chmod 600)")
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"config: {key}: {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"config: {key}: {path} is empty")
    return secret


def _form_encoded(text: str) -> str:
    """RFC 6749 §2.3.1: client id and secret form-encoded before the Basic scheme."""
    return urllib.parse.quote(text, safe="")


@dataclass
class _Key:
    key: Any  # a cryptography public key object, parsed once
    alg: str | None


class Issuer:
    """The cached state of one issuer; one per serving process (through TokenVerifier)."""

    def __init__(self, config: OidcIssuerConfig, client_secret: str | None) -> None:
        self.config = config
        self.name = config.name
        self._secret = client_secret
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._metadata: IssuerMetadata | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, _Key] = {}
        self._keys_at: float | None = None  # monotonic time of the last successful fetch
        self._attempt_at: float | None = None  # of the last fetch attempt
        self._attempt_failed = False
        self._lock = asyncio.Lock()

    # ----------------------------------------------------------------- http
    def session(self) -> aiohttp.ClientSession:
        """The HTTPS client of this issuer, made in the running loop (a session is bound
        to the loop it was made in: a verifier used by another loop gets a new one)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            connector = aiohttp.TCPConnector(ssl=tls_context(self.config.ca_file), limit=16)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
            self._session_loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def _get(self, url: str) -> dict[str, Any]:
        return await request_json(self.session(), "GET", url, timeout=self.config.timeout)

    # ----------------------------------------------------------------- discovery
    async def metadata(self, *, refresh: bool = False) -> IssuerMetadata:
        """The discovery document, cached; re-read when *refresh* and older than
        jwks_max_age (an unreachable issuer keeps the last good one)."""
        now = time.monotonic()
        stale = now - self._metadata_at > self.config.jwks_max_age
        if self._metadata is not None and not (refresh and stale):
            return self._metadata
        try:
            doc = await self._get(self.config.discovery_url)
            self._metadata = IssuerMetadata.parse(doc, self.config.issuer)
            self._metadata_at = now
        except FetchError as exc:
            if self._metadata is None:
                raise TokenUnavailable(f"discovery: {exc}", self.name) from None
            log.warning("oidc discovery refresh failed", issuer=self.name, error=str(exc))
        return self._metadata

    # ----------------------------------------------------------------- keys
    def _fresh(self, now: float) -> bool:
        return self._keys_at is not None and now - self._keys_at <= self.config.jwks_max_age

    async def _fetch_keys(self) -> None:
        self._attempt_at = time.monotonic()
        self._attempt_failed = True
        try:
            metadata = await self.metadata(refresh=True)
            doc = await self._get(metadata.jwks_uri)
        except FetchError as exc:
            raise TokenUnavailable(f"jwks: {exc}", self.name) from None
        if not isinstance(doc.get("keys"), list):  # RFC 7517 §5: {"keys": [...]}
            raise TokenUnavailable("jwks: no \"keys\" array", self.name)
        keys: dict[str, _Key] = {}
        for index, jwk in enumerate(doc["keys"]):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # asymmetric only
            try:
                parsed = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # an algorithm or curve we do not support: its tokens get refused
            alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
            keys[str(jwk.get("kid", f"#{index}"))] = _Key(parsed.key, alg)
        self._keys, self._keys_at = keys, time.monotonic()
        self._attempt_failed = False
        log.info("oidc jwks fetched", issuer=self.name, keys=len(keys))

    async def refresh_keys(self) -> tuple[str, ...]:
        """Fetch the JWKS now (``mss auth check``); the kids of its usable keys."""
        async with self._lock:
            await self._fetch_keys()
            return tuple(self._keys)

    async def signing_key(self, kid: str | None, alg: str) -> Any:
        """The public key for *kid* and *alg*. TokenRejected: no such key even after a
        fetch; TokenUnavailable: the cache is older than jwks_max_age (or lacks *kid*) and
        the issuer cannot be reached."""
        found = self._lookup(kid, time.monotonic())
        if found is None:
            async with self._lock:  # one fetch at a time; waiters see its result
                now = time.monotonic()
                found = self._lookup(kid, now)
                if found is None:
                    recent = (self._attempt_at is not None
                              and now - self._attempt_at < self.config.jwks_refetch_interval)
                    if not recent:
                        await self._fetch_keys()
                    elif self._attempt_failed or not self._fresh(now):
                        raise TokenUnavailable("jwks: issuer unreachable (retried "
                                               "within jwks_refetch_interval)", self.name)
                    found = self._lookup(kid, time.monotonic())
        if found is None:
            raise TokenRejected(f"unknown signing key kid={str(kid)[:64]!r}", self.name)
        if found.alg is not None and found.alg != alg:
            raise TokenRejected(f"alg {alg} does not match the key's {found.alg}", self.name)
        return found.key

    def _lookup(self, kid: str | None, now: float) -> _Key | None:
        if not self._fresh(now):
            return None
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    # ----------------------------------------------------------------- introspection
    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.1: POST the token, our client authenticated (client_secret_basic,
        RFC 6749 §2.3.1); the answer's JSON object."""
        metadata = await self.metadata()
        if not metadata.introspection_endpoint:
            raise TokenUnavailable("discovery document has no introspection_endpoint",
                                   self.name)
        pair = f"{_form_encoded(self.config.client_id)}:{_form_encoded(self._secret or '')}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            return await request_json(
                self.session(), "POST", metadata.introspection_endpoint,
                timeout=self.config.timeout, headers={"Authorization": basic},
                data={"token": token, "token_type_hint": "access_token"})
        except FetchError as exc:
            raise TokenUnavailable(f"introspection: {exc}", self.name) from None

    @property
    def client_secret(self) -> str | None:
        return self._secret
