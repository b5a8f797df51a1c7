"""mss.identity.TokenVerifier against a real OpenID Connect provider (tests/oidc.py: npm
oidc-provider over HTTPS on 127.0.21.x): JWT access tokens (signature, iss, aud, exp, nbf,
acr, key rotation, JWKS down) and opaque ones (RFC 7662 introspection and its cache)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
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
    Client,
    OidcProvider,
    oidc_provider,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.timeout(120)


def auth_config(provider: OidcProvider, tmp: Path, **overrides: Any) -> AuthConfig:
    """[[auth.oidc]] for *provider*, read by the real config parser."""
    issuer = provider.oidc_table(tmp, **{"jwks_refetch_interval": 0.0, **overrides})
    return parse_config({"auth": {"oidc": [issuer]}}, tmp / "mss.toml").auth


@pytest.fixture
async def verifier(oidc_provider: OidcProvider, tmp_path: Path) -> AsyncIterator[TokenVerifier]:  # noqa: F811
    v = TokenVerifier(auth_config(oidc_provider, tmp_path))
    await v.start()
    try:
        yield v
    finally:
        await v.stop(time.monotonic() + 5)


def test_toml_table_is_read_by_the_config_loader(oidc_provider: OidcProvider,  # noqa: F811
                                                 tmp_path: Path) -> None:
    raw = tomllib.loads(oidc_provider.toml(tmp_path, jwks_max_age=10.0))
    auth = parse_config(raw, tmp_path / "mss.toml").auth
    assert auth.oidc[0].issuer == oidc_provider.issuer and auth.oidc[0].jwks_max_age == 10.0


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
    with pytest.raises(TokenRejected, match=r"expired \(exp\)") as refused:
        await v.verify(token)
    assert refused.value.audit_detail() == {"reason": refused.value.reason, "issuer": "test"}
    assert token not in str(refused.value.audit_detail())
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
    one = {"issuer": "https://idp.test", "audience": ["x"], "introspection": True,
           "client_id": "c", "client_secret_file": "s"}
    raw = {"auth": {"oidc": [one, {**one, "issuer": "https://idp2.test"}]}}
    with pytest.raises(ConfigError, match=r"auth\.oidc\[1\]\.introspection: only one"):
        parse_config(raw, tmp_path / "mss.toml")
    raw = {"auth": {"oidc": [one, {**one, "introspection": False}]}}
    with pytest.raises(ConfigError, match=r"auth\.oidc\[1\]\.issuer: duplicate issuer"):
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


# ----------------------------------------------------------------------------- opaque tokens


async def test_opaque_token_introspected(oidc_provider: OidcProvider,  # noqa: F811
                                         verifier: TokenVerifier) -> None:
    token = oidc_provider.access_token(resource=OPAQUE_RESOURCE)
    assert token.count(".") == 0  # opaque, not a JWT
    identity = await verifier.verify(token)
    assert identity.kind == "introspected" and identity.subject == ACCOUNT
    assert identity.national_id == ACCOUNT and identity.acr == "eidas1"
    assert identity.token_tail == token[-32:] and identity.jti is None
    assert 250 < identity.expires_at - time.time() <= 300
    detail = identity.audit_detail()
    assert detail["token_tail"] == token[-32:] and token not in json.dumps(detail)


async def test_inactive_opaque_token_refused(verifier: TokenVerifier) -> None:
    never_issued = "x" * 11 + "y" * 32  # shaped like the provider's
    with pytest.raises(TokenRejected, match=r"inactive \(introspection\)") as refused:
        await verifier.verify(never_issued)
    assert refused.value.audit_detail() == {"reason": "inactive (introspection)",
                                            "issuer": "test", "token_tail": "y" * 32}
    with pytest.raises(TokenRejected, match="malformed"):
        await verifier.verify("not a b64token")


async def test_revoked_token_refused_once_the_cache_ends(oidc_provider: OidcProvider,  # noqa: F811
                                                         tmp_path: Path) -> None:
    cache = 2.0
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, introspection_cache=cache))
    token = oidc_provider.access_token(resource=OPAQUE_RESOURCE)
    first = time.monotonic()
    assert (await v.verify(token)).subject == ACCOUNT
    oidc_provider.revoke(token)  # RFC 7009
    # within introspection_cache the answer is reused (the documented window) ...
    if time.monotonic() - first < cache - 0.5:
        assert (await v.verify(token)).subject == ACCOUNT
    time.sleep(max(0.0, first + cache + 0.2 - time.monotonic()))
    with pytest.raises(TokenRejected, match="inactive"):  # ... then asked again: revoked
        await v.verify(token)
    # a fresh verifier (no cache) refuses it at once
    fresh = TokenVerifier(auth_config(oidc_provider, tmp_path, introspection_cache=0.0))
    with pytest.raises(TokenRejected, match="inactive"):
        await fresh.verify(token)
    await v.stop(time.monotonic() + 5)
    await fresh.stop(time.monotonic() + 5)


async def test_introspection_cache_is_shorter_than_the_token_life(tmp_path: Path) -> None:
    provider = OidcProvider(tmp_path / "own", host="127.0.21.4").start()
    try:
        v = TokenVerifier(auth_config(provider, tmp_path, introspection_cache=600.0,
                                      clock_skew=0.0))
        long_lived = provider.access_token(resource=OPAQUE_RESOURCE)
        short = provider.access_token(client="mss-short", resource=OPAQUE_RESOURCE)
        assert (await v.verify(long_lived)).subject == ACCOUNT
        identity = await v.verify(short)  # a 2-second token
        provider.stop()  # from now on only the cache answers
        assert (await v.verify(long_lived)).subject == ACCOUNT  # cached (600 s, 300 s life)
        time.sleep(max(0.0, identity.expires_at - time.time()) + 0.5)
        # not cached past its life: asked again, and the issuer is down
        with pytest.raises(TokenUnavailable, match="introspection"):
            await v.verify(short)
        provider.start()
        with pytest.raises(TokenRejected, match="inactive|expired"):
            await v.verify(short)
        await v.stop(time.monotonic() + 5)
    finally:
        provider.stop()


async def test_opaque_token_without_introspection_refused(oidc_provider: OidcProvider,  # noqa: F811
                                                          tmp_path: Path) -> None:
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, introspection=False))
    with pytest.raises(TokenRejected, match="no issuer with introspection"):
        await v.verify(oidc_provider.access_token(resource=OPAQUE_RESOURCE))
    await v.stop(time.monotonic() + 5)


# ----------------------------------------------------------------------------- cost


async def test_cached_jwt_verify_costs_well_under_a_millisecond_of_cpu(
        oidc_provider: OidcProvider, verifier: TokenVerifier) -> None:  # noqa: F811
    token = oidc_provider.access_token()
    await verifier.verify(token)  # keys fetched
    n = 1000
    start = time.process_time()
    for _ in range(n):
        await verifier.verify(token)
    per_verify = (time.process_time() - start) / n
    print(f"cached JWT verify: {per_verify * 1e6:.0f} us of CPU")
    assert per_verify < 0.001


async def test_a_client_added_later_gets_tokens_at_its_redirect_uri(
        own_provider: OidcProvider, tmp_path: Path) -> None:
    portal = Client("portal", "portal-secret", ("https://127.0.21.9:8443/login/callback",))
    own_provider.add_client(portal)  # restarts: same issuer and keys
    code, verifier_, redirect = own_provider.authorization_code(client="portal")
    assert redirect == portal.redirect_uris[0]
    tokens = own_provider.redeem(code, verifier_, redirect, client="portal")
    assert tokens.id_token is not None
    v = TokenVerifier(auth_config(own_provider, tmp_path))
    claims = await v.verify_jwt(tokens.id_token, "test", audience="portal", nonce=None)
    assert claims["sub"] == ACCOUNT
    with pytest.raises(TokenRejected, match="wrong audience"):
        await v.verify_jwt(tokens.id_token, "test", audience="mss", nonce=None)
    with pytest.raises(TokenRejected, match="nonce mismatch"):
        await v.verify_jwt(tokens.id_token, "test", audience="portal", nonce="other")
    assert (await v.verify(tokens.access_token)).subject == ACCOUNT
    await v.stop(time.monotonic() + 5)


# ----------------------------------------------------------------------------- mss auth


def _mss(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mss", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])


def test_mss_auth_check_and_verify_token(oidc_provider: OidcProvider,  # noqa: F811
                                         tmp_path: Path) -> None:
    config = tmp_path / "mss.toml"
    config.write_text(oidc_provider.toml(tmp_path))
    done = _mss(config, "auth", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"test: ok: {oidc_provider.issuer} keys=key-1 "
                                  f"introspection={oidc_provider.issuer}/token/introspection")
    done = _mss(config, "auth", "check", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == [
        {"name": "test", "ok": True, "issuer": oidc_provider.issuer, "keys": ["key-1"],
         "introspection": f"{oidc_provider.issuer}/token/introspection"}]
    token = oidc_provider.access_token()
    done = _mss(config, "auth", "verify-token", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    assert f"accepted: issuer=test subject={ACCOUNT} national_id={ACCOUNT} acr=eidas1" \
        in done.stdout and token not in done.stdout + done.stderr
    done = _mss(config, "auth", "verify-token", stdin="x" * 43 + "\n")
    assert (done.returncode, done.stdout) == (1, "refused: inactive (introspection)\n")
    done = _mss(config, "auth", "verify-token")
    assert (done.returncode, done.stderr) == (2, "mss: error: no token on stdin\n")
    done = _mss(config, "auth", "check", "nope")
    assert done.returncode == 2 and "no [[auth.oidc]] issuer named 'nope'" in done.stderr


def test_mss_auth_check_names_an_unreachable_issuer(tmp_path: Path) -> None:
    provider = OidcProvider(tmp_path / "down", host="127.0.21.5")  # never started
    config = tmp_path / "mss.toml"
    config.write_text(provider.toml(tmp_path, timeout=2.0))
    done = _mss(config, "auth", "check")
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("test: unreachable: discovery: ")
    done = _mss(config, "auth", "check", "--json")
    assert done.returncode == 1
    assert [(r["name"], r["ok"]) for r in json.loads(done.stdout)] == [("test", False)]


async def test_concurrent_first_logins_share_one_key_fetch(oidc_provider: OidcProvider,  # noqa: F811
                                                           tmp_path: Path) -> None:
    # nothing fetched yet, and one fetch allowed per 10 minutes: every one of the 20 logins
    # is accepted only if they all wait for the first one's fetch
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, jwks_refetch_interval=600.0))
    token = oidc_provider.access_token()
    identities = await asyncio.gather(*(v.verify(token) for _ in range(20)))
    assert {i.subject for i in identities} == {ACCOUNT}
    await v.stop(time.monotonic() + 5)


async def test_discovery_document_of_another_issuer_is_unusable(
        oidc_provider: OidcProvider, tmp_path: Path) -> None:  # noqa: F811
    # OIDC Discovery §4.3: the document must name the issuer configured, exactly
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, issuer=oidc_provider.issuer + "/",
                                  discovery_url=oidc_provider.discovery_url))
    with pytest.raises(TokenUnavailable, match="discovery document of issuer"):
        await v.refresh("test")
    await v.stop(time.monotonic() + 5)


def test_metadata_endpoints_must_be_https() -> None:
    from mss.identity.fetch import FetchError
    from mss.identity.issuer import IssuerMetadata

    doc = {"issuer": "https://idp.test", "jwks_uri": "https://idp.test/jwks",
           "introspection_endpoint": "https://idp.test/introspect"}
    assert IssuerMetadata.parse(doc, "https://idp.test").jwks_uri == "https://idp.test/jwks"
    for name in ("jwks_uri", "introspection_endpoint", "token_endpoint"):
        with pytest.raises(FetchError, match=f"{name} is not an https URL"):
            IssuerMetadata.parse({**doc, name: "http://idp.test/x"}, "https://idp.test")
    with pytest.raises(FetchError, match="jwks_uri missing"):
        IssuerMetadata.parse({"issuer": "https://idp.test"}, "https://idp.test")


async def test_national_id_claim_is_configurable(oidc_provider: OidcProvider,  # noqa: F811
                                                 tmp_path: Path) -> None:
    token = oidc_provider.access_token("810000000002")
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, national_id_claim="SubjectNameID"))
    assert (await v.verify(token)).national_id == "810000000002"
    none = TokenVerifier(auth_config(oidc_provider, tmp_path, national_id_claim="idNat"))
    identity = await none.verify(token)  # accepted; no national id: the login maps none
    assert identity.national_id is None and identity.subject == "810000000002"
    await v.stop(time.monotonic() + 5)
    await none.stop(time.monotonic() + 5)


async def test_introspection_with_a_wrong_client_secret_is_unavailable(
        oidc_provider: OidcProvider, tmp_path: Path) -> None:  # noqa: F811
    secret = tmp_path / "wrong.secret"
    secret.write_text("not-the-secret\n")
    secret.chmod(0o600)
    v = TokenVerifier(auth_config(oidc_provider, tmp_path, client_secret_file=str(secret)))
    token = oidc_provider.access_token(resource=OPAQUE_RESOURCE)
    with pytest.raises(TokenUnavailable, match=r"introspection: .*HTTP 401"):
        await v.verify(token)  # our misconfiguration: temporary, never an acceptance
    await v.stop(time.monotonic() + 5)
