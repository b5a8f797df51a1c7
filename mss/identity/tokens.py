"""Bearer access tokens checked for the login mechanisms (RFC 7628 OAUTHBEARER, XOAUTH2)
and the portal: a JWT (RFC 9068 shape) is verified against its issuer's cached JWKS, its
``iss``, ``aud``, ``exp``/``nbf``/``iat`` (with ``clock_skew``) and ``acr``; an opaque token
is sent to the RFC 7662 introspection endpoint of the issuers that enable it, the answer
cached for less than the token's remaining life. The issuer unreachable with nothing usable
cached is :class:`TokenUnavailable` (temporary), never an acceptance."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import structlog

from mss.config import AuthConfig, OidcIssuerConfig
from mss.identity.errors import TokenError, TokenRejected, TokenUnavailable
from mss.identity.issuer import ALGORITHMS, Issuer, IssuerMetadata, read_client_secret

__all__ = ["IssuerMetadata", "TokenError", "TokenIdentity", "TokenRejected",
           "TokenUnavailable", "TokenVerifier"]

log = structlog.get_logger("mss.identity")

MAX_TOKEN = 8192  # characters; the SMTP AUTH line holds 12288 octets (RFC 4954 §4)
TAIL = 32  # characters of an opaque token the audit may keep
# RFC 6750 §2.1 b64token: what a bearer token may be made of
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class TokenIdentity:
    """Who an accepted access token names."""

    issuer_name: str  # the [[auth.oidc]] name
    issuer: str  # iss
    subject: str  # sub
    national_id: str | None  # the national_id_claim's value
    jti: str | None
    token_tail: str | None  # opaque tokens: their last <= 32 characters; JWT: None
    acr: str | None
    expires_at: float  # epoch seconds
    kind: str  # "jwt" | "introspected"

    def audit_detail(self) -> dict[str, str]:
        """The audit's fields: never the token (an opaque one: at most its tail)."""
        detail = {"issuer": self.issuer_name, "subject": self.subject, "kind": self.kind}
        if self.jti:
            detail["jti"] = self.jti
        if self.token_tail:
            detail["token_tail"] = self.token_tail
        if self.acr:
            detail["acr"] = self.acr
        return detail


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (header, claims) of a JWS compact serialization, unverified; None if *token*
    is not one (an opaque token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = _b64json(parts[0]), _b64json(parts[1])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
        return None
    return header, claims


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired (exp)"),
    (jwt.ImmatureSignatureError, "not yet valid (nbf/iat in the future)"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.MissingRequiredClaimError, "missing claim"),
)


class TokenVerifier:
    """Checks access tokens of the configured issuers; one per serving process."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._issuers = {o.name: Issuer(o, read_client_secret(
            o.client_secret_file, f"auth.oidc[{i}].client_secret_file"))
                         for i, o in enumerate(config.oidc)}
        self._by_iss = {i.config.issuer: i for i in self._issuers.values()}
        # sha256(token) -> (monotonic time the entry ends, identity or refusal reason)
        self._introspected: OrderedDict[bytes, tuple[float, TokenIdentity | str]] = \
            OrderedDict()

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Reads every issuer's discovery document and keys once, in parallel, waiting at
        most each issuer's ``timeout`` (an issuer down is only logged: its tokens get
        TokenUnavailable until it answers)."""
        async def warm(issuer: Issuer) -> None:
            try:
                async with asyncio.timeout(issuer.config.timeout):
                    await issuer.signing_key(None, "RS256")
            except (TokenUnavailable, TimeoutError) as exc:
                log.warning("oidc issuer unreachable at start", issuer=issuer.name,
                            error=getattr(exc, "reason", "timeout"))
            except TokenRejected:
                pass  # several keys: fetched all the same
        await asyncio.gather(*(warm(i) for i in self._issuers.values()))

    async def stop(self, deadline: float) -> None:
        for issuer in self._issuers.values():
            await issuer.close()

    # ----------------------------------------------------------------- lookups
    def issuer_config(self, issuer_name: str | None = None) -> OidcIssuerConfig:
        issuer = self._issuer(issuer_name)
        return issuer.config

    def _issuer(self, issuer_name: str | None) -> Issuer:
        if issuer_name is None:
            if not self._issuers:
                raise TokenRejected("no [[auth.oidc]] issuer configured")
            return next(iter(self._issuers.values()))
        try:
            return self._issuers[issuer_name]
        except KeyError:
            raise TokenRejected(f"unknown issuer name {issuer_name!r}") from None

    def discovery_url(self, issuer_name: str | None = None) -> str:
        """For the OAUTHBEARER error JSON's openid-configuration (RFC 7628 §3.2.2)."""
        return self._issuer(issuer_name).config.discovery_url

    async def metadata(self, issuer_name: str) -> IssuerMetadata:
        return await self._issuer(issuer_name).metadata()

    async def refresh(self, issuer_name: str) -> tuple[IssuerMetadata, tuple[str, ...]]:
        """The discovery document and the kids of the keys, fetched now (TokenUnavailable:
        unreachable)."""
        issuer = self._issuer(issuer_name)
        kids = await issuer.refresh_keys()
        return await issuer.metadata(), kids

    def client_credentials(self, issuer_name: str) -> tuple[str, str | None]:
        """(client_id, client secret) of an issuer (the portal's client)."""
        issuer = self._issuer(issuer_name)
        return issuer.config.client_id, issuer.client_secret

    # ----------------------------------------------------------------- verification
    async def verify(self, token: str) -> TokenIdentity:
        """The identity an access token carries, or TokenRejected / TokenUnavailable."""
        if not token or len(token) > MAX_TOKEN or not _B64TOKEN.fullmatch(token):
            raise TokenRejected("malformed token (not an RFC 6750 b64token, or longer than "
                                f"{MAX_TOKEN})")
        parts = _jwt_parts(token)
        if parts is None:  # opaque: its tail may name it in the audit, whatever the answer
            try:
                return await self._introspect(token)
            except TokenError as exc:
                exc.token_tail = token[-TAIL:]
                raise
        header, unverified = parts
        iss = unverified.get("iss")
        issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejected(f"unknown issuer {str(unverified.get('iss'))[:200]!r}")
        claims = await self._checked_jwt(issuer, token, header,
                                         audience=issuer.config.audience)
        return self._identity(issuer, claims, "jwt", None)

    async def verify_jwt(self, token: str, issuer_name: str, *, audience: str,
                         nonce: str | None) -> dict[str, Any]:
        """An ID token's claims (the portal's login: aud = our client_id, OIDC Core
        §3.1.3.7), its nonce checked when given."""
        issuer = self._issuer(issuer_name)
        parts = _jwt_parts(token) if len(token) <= MAX_TOKEN else None
        if parts is None:
            raise TokenRejected("malformed JWT", issuer.name)
        claims = await self._checked_jwt(issuer, token, parts[0], audience=(audience,))
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenRejected("nonce mismatch", issuer.name)
        return claims

    async def _checked_jwt(self, issuer: Issuer, token: str, header: dict[str, Any], *,
                           audience: tuple[str, ...]) -> dict[str, Any]:
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise TokenRejected(f"alg {str(alg)[:20]!r} not allowed", issuer.name)
        key = await issuer.signing_key(kid if isinstance(kid, str) else None, str(alg))
        config = issuer.config
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[str(alg)], audience=list(audience),
                issuer=config.issuer, leeway=config.clock_skew,
                options={"require": ["exp", "iss", "aud", "sub"]})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # TypeError: a key of another kty
            reason = next((text for kind, text in _JWT_ERRORS if isinstance(exc, kind)),
                          "invalid JWT")
            raise TokenRejected(f"{reason}: {exc}"[:300], issuer.name) from None
        return claims

    def _identity(self, issuer: Issuer, claims: dict[str, Any], kind: str,
                  tail: str | None) -> TokenIdentity:
        config = issuer.config
        acr = _str(claims.get("acr"))
        if config.required_acr and acr != config.required_acr:
            raise TokenRejected(f"acr {acr!r} is not the required {config.required_acr!r}",
                                issuer.name)
        subject = _str(claims.get("sub"))
        if subject is None:
            raise TokenRejected("no sub", issuer.name)
        national = claims.get(config.national_id_claim)
        return TokenIdentity(
            issuer_name=issuer.name, issuer=config.issuer, subject=subject[:256],
            national_id=str(national)[:64] if isinstance(national, str | int) else None,
            jti=(_str(claims.get("jti")) or "")[:128] or None, token_tail=tail, acr=acr,
            expires_at=_number(claims.get("exp")) or 0.0, kind=kind)

    # ----------------------------------------------------------------- introspection
    async def _introspect(self, token: str) -> TokenIdentity:
        # an opaque token names no issuer: it goes to the one issuer that introspects (the
        # config allows one), never shown to another
        issuer = next((i for i in self._issuers.values() if i.config.introspection), None)
        if issuer is None:
            raise TokenRejected("opaque token and no issuer with introspection = true")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._introspected.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return self._cached(cached[1], issuer.name)
        answer = await issuer.introspect(token)  # TokenUnavailable: nothing cached is used
        try:
            identity = self._introspected_identity(issuer, answer, token[-TAIL:])
        except TokenRejected as exc:
            self._remember(digest, exc.reason, issuer.config.introspection_cache)
            raise
        self._remember(digest, identity, issuer.config.introspection_cache)
        return identity

    @staticmethod
    def _cached(entry: TokenIdentity | str, issuer: str | None) -> TokenIdentity:
        if isinstance(entry, str):
            raise TokenRejected(entry + " (cached introspection)", issuer)
        if entry.expires_at <= time.time():
            raise TokenRejected("expired (exp, cached introspection)", entry.issuer_name)
        return entry

    def _introspected_identity(self, issuer: Issuer, answer: dict[str, Any],
                               tail: str) -> TokenIdentity:
        """RFC 7662 §2.2: active, then the same checks as a JWT's claims."""
        config = issuer.config
        if answer.get("active") is not True:
            raise TokenRejected("inactive (introspection)", issuer.name)
        if "iss" in answer and answer["iss"] != config.issuer:
            raise TokenRejected("wrong issuer (introspection)", issuer.name)
        aud = answer.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not set(auds) & set(config.audience):
            raise TokenRejected("wrong audience (introspection)", issuer.name)
        now = time.time()
        exp, nbf = _number(answer.get("exp")), _number(answer.get("nbf"))
        if exp is None:
            raise TokenRejected("no exp (introspection)", issuer.name)
        if exp + config.clock_skew <= now:
            raise TokenRejected("expired (exp, introspection)", issuer.name)
        if nbf is not None and nbf - config.clock_skew > now:
            raise TokenRejected("not yet valid (nbf, introspection)", issuer.name)
        return self._identity(issuer, answer, "introspected", tail)

    def _remember(self, digest: bytes, entry: TokenIdentity | str, cache: float) -> None:
        """Cached at most *cache* seconds and, for an identity, strictly less than the
        token's remaining life (a revoked token is accepted at most that long)."""
        ttl = cache
        if isinstance(entry, TokenIdentity):
            ttl = min(cache, entry.expires_at - time.time() - 1.0)
        if ttl <= 0:
            return
        cache_map = self._introspected
        cache_map[digest] = (time.monotonic() + ttl, entry)
        cache_map.move_to_end(digest)
        while len(cache_map) > self.config.introspection_cache_entries:
            cache_map.popitem(last=False)
