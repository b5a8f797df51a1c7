"""mss.identity.TokenVerifier against a real OpenID Connect provider (tests/oidc.py: npm
oidc-provider over HTTPS on 127.0.21.x): JWT access tokens (signature, iss, aud, exp, nbf,
acr, key rotation, JWKS down) and opaque ones (RFC 7662 introspection and its cache)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mss.config import AuthConfig, ConfigError, parse_config
from mss.identity.tokens import TokenRejected, TokenUnavailable, TokenVerifier
from tests.oidc import (
    ACCOUNT,
    JWT_RESOURCE,
    OPAQUE_RESOURCE,
    OTHER_RESOURCE,
    OidcProvider,
    oidc_provider,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.timeout(120)


def auth_config(provider: OidcProvider, tmp: Path, **overrides: Any) -> AuthConfig:
    """[[auth.oidc]] for *provider*, read by the real config parser."""
    issuer: dict[str, Any] = {
        "name": "test", "issuer": provider.issuer, "audience": [JWT_RESOURCE, OPAQUE_RESOURCE],
        "ca_file": str(provider.ca_file), "required_acr": "eidas1",
        "client_id": "mss", "client_secret_file": str(provider.secret_file(tmp)),
        "introspection": True, "jwks_refetch_interval": 0.0,
    }
    issuer.update(overrides)
    return parse_config({"auth": {"oidc": [issuer]}}, tmp / "mss.toml").auth


@pytest.fixture
async def verifier(oidc_provider: OidcProvider, tmp_path: Path) -> AsyncIterator[TokenVerifier]:  # noqa: F811
    v = TokenVerifier(auth_config(oidc_provider, tmp_path))
    await v.start()
    try:
        yield v
    finally:
        await v.stop(time.monotonic() + 5)


async def test_good_jwt_gives_the_identity(oidc_provider: OidcProvider,  # noqa: F811
                                           verifier: TokenVerifier) -> None:
    token = oidc_provider.access_token(ACCOUNT)
    identity = await verifier.verify(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (identity.issuer_name, identity.issuer, identity.subject) == (
        "test", oidc_provider.issuer, ACCOUNT)
    assert identity.national_id == ACCOUNT and identity.acr == "eidas1"
    assert identity.kind == "jwt" and identity.token_tail is None
    assert identity.jti == claims["jti"] and identity.expires_at == claims["exp"]
    assert 250 < identity.expires_at - time.time() <= 300  # 5-minute tokens
    detail = identity.audit_detail()
    assert detail == {"issuer": "test", "subject": ACCOUNT, "kind": "jwt",
                      "jti": claims["jti"], "acr": "eidas1"}
    assert token not in json.dumps(detail)


async def test_expired_jwt_refused(oidc_provider: OidcProvider,  # noqa: F811
                                   tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, clock_skew=0.0))
    token = oidc_provider.access_token(client="mss-short")  # a 2-second token
    assert (await v.verify(token)).subject == ACCOUNT
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    with pytest.raises(TokenRejected, match=r"expired \(exp\)"):
        await v.verify(token)
    await v.stop(time.monotonic() + 5)


async def test_clock_skew_accepts_a_just_expired_token(oidc_provider: OidcProvider,  # noqa: F811
                                                       tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, clock_skew=30.0))
    token = oidc_provider.access_token(client="mss-short")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    assert (await v.verify(token)).subject == ACCOUNT  # within the 30 s of skew
    await v.stop(time.monotonic() + 5)


def _forged(provider: OidcProvider, key: rsa.RSAPrivateKey, kid: str,
            **claims: Any) -> str:
    """A token shaped like the provider's, signed with *key* (a key of our own)."""
    now = int(time.time())
    payload = {"iss": provider.issuer, "sub": ACCOUNT, "aud": JWT_RESOURCE, "iat": now,
               "exp": now + 300, "jti": "forged", "acr": "eidas1",
               "preferred_username": ACCOUNT, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


async def test_not_yet_valid_jwt_refused(oidc_provider: OidcProvider,  # noqa: F811
                                         verifier: TokenVerifier) -> None:
    # the provider never issues one: the claims of a real token, nbf moved forward, signed by
    # the provider's own key (tests/oidc.py holds the private JWK)
    real = oidc_provider.access_token()
    claims = jwt.decode(real, options={"verify_signature": False})
    signer = oidc_provider.signing_keys[0]
    key = jwt.PyJWK(signer).key
    token = jwt.encode({**claims, "nbf": int(time.time()) + 600}, key, algorithm="RS256",
                       headers={"kid": signer["kid"]})
    with pytest.raises(TokenRejected, match=r"not yet valid"):
        await verifier.verify(token)
    # the same claims without the nbf: accepted (the refusal was the nbf)
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": signer["kid"]})
    assert (await verifier.verify(token)).subject == ACCOUNT


async def test_wrong_audience_refused(oidc_provider: OidcProvider,  # noqa: F811
                                      verifier: TokenVerifier) -> None:
    token = oidc_provider.access_token(resource=OTHER_RESOURCE)
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == OTHER_RESOURCE
    with pytest.raises(TokenRejected, match="wrong audience"):
        await verifier.verify(token)


async def test_id_token_is_not_an_access_token(oidc_provider: OidcProvider,  # noqa: F811
                                               verifier: TokenVerifier) -> None:
    tokens = oidc_provider.tokens()
    assert tokens.id_token is not None
    with pytest.raises(TokenRejected, match="wrong audience"):  # its aud is the client_id
        await verifier.verify(tokens.id_token)
    claims = await verifier.verify_jwt(tokens.id_token, "test", audience="mss", nonce=None)
    assert claims["preferred_username"] == ACCOUNT


async def test_wrong_issuer_refused(oidc_provider: OidcProvider,  # noqa: F811
                                    tmp_path: Path) -> None:
    other = OidcProvider(tmp_path / "other", host="127.0.21.2").start()
    try:
        v = TokenVerifier(auth_config(oidc_provider, tmp_path))
        token = other.access_token()  # a real token of a real issuer we do not trust
        with pytest.raises(TokenRejected, match="unknown issuer"):
            await v.verify(token)
        # the other issuer's token claiming to come from ours: its kid is unknown here
        claims = jwt.decode(token, options={"verify_signature": False})
        signer = other.signing_keys[0]
        relabelled = jwt.encode({**claims, "iss": oidc_provider.issuer},
                                jwt.PyJWK(signer).key, algorithm="RS256",
                                headers={"kid": "key-1"})
        with pytest.raises(TokenRejected, match="bad signature"):
            await v.verify(relabelled)  # both providers call their first key "key-1"
        await v.stop(time.monotonic() + 5)
    finally:
        other.stop()


async def test_forged_signature_refused(oidc_provider: OidcProvider,  # noqa: F811
                                        verifier: TokenVerifier) -> None:
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = oidc_provider.signing_keys[0]["kid"]
    with pytest.raises(TokenRejected, match="bad signature"):
        await verifier.verify(_forged(oidc_provider, mine, kid))
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await verifier.verify(_forged(oidc_provider, mine, "my-own-kid"))
    # a real token with its payload changed (another subject): the signature breaks
    real = oidc_provider.access_token()
    head, _, sig = real.split(".")
    claims = jwt.decode(real, options={"verify_signature": False})
    body = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "819999999999"}).encode())
    with pytest.raises(TokenRejected, match="bad signature"):
        await verifier.verify(f"{head}.{body.decode()}.{sig}")
    # alg "none" and HS256 (a public key used as an HMAC secret) are never accepted
    unsigned = jwt.encode({**claims}, None, algorithm="none")
    with pytest.raises(TokenRejected, match="not allowed"):
        await verifier.verify(unsigned)
    hs = jwt.encode(claims, "secret-of-my-own-long-enough-for-hs256", algorithm="HS256",
                    headers={"kid": kid})
    with pytest.raises(TokenRejected, match="not allowed"):
        await verifier.verify(hs)


async def test_missing_acr_refused_when_required(oidc_provider: OidcProvider,  # noqa: F811
                                                 tmp_path: Path,
                                                 verifier: TokenVerifier) -> None:
    token = oidc_provider.access_token(client="mss-noacr")
    assert "acr" not in jwt.decode(token, options={"verify_signature": False})
    with pytest.raises(TokenRejected, match="acr None is not the required 'eidas1'"):
        await verifier.verify(token)
    lax = TokenVerifier(auth_config(oidc_provider, tmp_path, required_acr=""))
    assert (await lax.verify(token)).acr is None
    await lax.stop(time.monotonic() + 5)


def test_config_refuses_an_issuer_without_audience(tmp_path: Path) -> None:
    raw = {"auth": {"oidc": [{"issuer": "https://idp.test", "audience": []}]}}
    with pytest.raises(ConfigError, match=r"auth\.oidc\[0\]\.audience: must list"):
        parse_config(raw, tmp_path / "mss.toml")
    raw = {"auth": {"oidc": [{"issuer": "http://idp.test", "audience": ["x"]}]}}
    with pytest.raises(ConfigError, match=r"auth\.oidc\[0\]\.issuer: must be a URL"):
        parse_config(raw, tmp_path / "mss.toml")
    raw = {"auth": {"oidc": [{"issuer": "https://idp.test", "audience": ["x"],
                              "introspection": True}]}}
    with pytest.raises(ConfigError, match=r"auth\.oidc\[0\]\.introspection: needs"):
        parse_config(raw, tmp_path / "mss.toml")
    raw = {"auth": {"oidc": [{"issuer": "https://idp.test", "audience": ["x"],
                              "jwks_max_agee": 1}]}}
    with pytest.raises(ConfigError, match=r"jwks_max_agee: unknown key \(did you mean "
                                          r"jwks_max_age\?\)"):
        parse_config(raw, tmp_path / "mss.toml")
    auth = parse_config({"auth": {"oidc": [{"issuer": "https://idp.test/realm",
                                            "audience": ["x"]}]}}, tmp_path / "m.toml").auth
    assert auth.oidc[0].name == "oidc0"
    assert auth.oidc[0].discovery_url == \
        "https://idp.test/realm/.well-known/openid-configuration"


def test_client_secret_file_must_be_private(oidc_provider: OidcProvider,  # noqa: F811
                                            tmp_path: Path) -> None:
    config = auth_config(oidc_provider, tmp_path)
    secret = config.oidc[0].client_secret_file
    assert secret is not None
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"client_secret_file: .* readable by group"):
        TokenVerifier(config)


@pytest.fixture
def own_provider(tmp_path: Path) -> Iterator[OidcProvider]:
    """A provider of this test alone (its keys rotate, its JWKS goes down)."""
    provider = OidcProvider(tmp_path / "own", host="127.0.21.3").start()
    try:
        yield provider
    finally:
        provider.stop()


async def test_rotated_key_is_fetched(own_provider: OidcProvider, tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(own_provider, tmp_path, jwks_refetch_interval=0.0))
    await v.start()
    old = own_provider.access_token()
    assert jwt.get_unverified_header(old)["kid"] == "key-1"
    assert (await v.verify(old)).subject == ACCOUNT
    new_kid = own_provider.rotate()
    new = own_provider.access_token()
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert (await v.verify(new)).subject == ACCOUNT  # unknown kid: the JWKS re-fetched
    assert (await v.verify(old)).subject == ACCOUNT  # the old key is still published
    # the old key withdrawn: once the cache is re-read, its tokens are refused
    own_provider.rotate(keep_old=False)
    newest = own_provider.access_token()
    assert (await v.verify(newest)).subject == ACCOUNT
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await v.verify(old)
    await v.stop(time.monotonic() + 5)


async def test_unknown_kid_refetch_is_rate_limited(own_provider: OidcProvider,
                                                   tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(own_provider, tmp_path, jwks_refetch_interval=600.0))
    await v.start()
    assert (await v.verify(own_provider.access_token())).subject == ACCOUNT
    own_provider.rotate()
    token = own_provider.access_token()  # a new kid, but the JWKS was read just now
    with pytest.raises(TokenRejected, match="unknown signing key"):
        await v.verify(token)
    await v.stop(time.monotonic() + 5)


async def test_jwks_down_cached_keys_until_max_age(own_provider: OidcProvider,
                                                   tmp_path: Path) -> None:
    max_age = 3.0
    v = TokenVerifier(auth_config(own_provider, tmp_path, jwks_max_age=max_age,
                                  jwks_refetch_interval=0.0))
    await v.start()
    fetched = time.monotonic()
    token = own_provider.access_token()
    own_provider.jwks_down()
    assert (await v.verify(token)).subject == ACCOUNT  # the cached key
    time.sleep(max(0.0, fetched + max_age + 0.5 - time.monotonic()))
    with pytest.raises(TokenUnavailable, match="jwks: .*HTTP 503"):
        await v.verify(token)
    own_provider.jwks_up()
    assert (await v.verify(token)).subject == ACCOUNT  # fetched again
    # the whole issuer down (process stopped): the same, cached keys then unavailable
    own_provider.stop()
    fetched = time.monotonic()
    assert (await v.verify(token)).subject == ACCOUNT
    time.sleep(max(0.0, fetched + max_age + 0.5 - time.monotonic()))
    with pytest.raises(TokenUnavailable, match="jwks"):
        await v.verify(token)
    await v.stop(time.monotonic() + 5)


async def test_issuer_down_at_start_is_unavailable_never_accepted(
        own_provider: OidcProvider, tmp_path: Path) -> None:
    token = own_provider.access_token()
    own_provider.stop()
    v = TokenVerifier(auth_config(own_provider, tmp_path))
    await v.start()  # logged, not fatal
    with pytest.raises(TokenUnavailable, match="discovery"):
        await v.verify(token)
    await v.stop(time.monotonic() + 5)


async def test_untrusted_tls_is_unavailable(oidc_provider: OidcProvider,  # noqa: F811
                                            tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, ca_file=""))  # the system store
    with pytest.raises(TokenUnavailable, match="certificate verify failed|SSL"):
        await v.verify(oidc_provider.access_token())
    await v.stop(time.monotonic() + 5)
