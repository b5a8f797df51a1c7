"""Bounded HTTPS requests to an issuer: verified TLS (the issuer's anchors or the system
store), a total timeout, a response size cap, JSON objects only."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

MAX_RESPONSE = 1024 * 1024  # bytes: a discovery document, a JWKS, an introspection answer


class FetchError(Exception):
    """The issuer did not give a usable answer (unreachable, TLS, HTTP status, not JSON)."""


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verified (RFC 6125); *ca_file* None: the system store."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def https_only(url: str, what: str) -> str:
    if not url.startswith("https://"):
        raise FetchError(f"{what} is not an https URL: {url[:200]!r}")
    return url


async def request_json(session: aiohttp.ClientSession, method: str, url: str, *,
                       timeout: float, data: dict[str, str] | None = None,
                       headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One request; its JSON object answer (HTTP 200 only)."""
    https_only(url, "endpoint")
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                    method, url, data=data, allow_redirects=False,
                    headers={"Accept": "application/json", **(headers or {})}) as response:
                body = await response.content.read(MAX_RESPONSE + 1)
                if len(body) > MAX_RESPONSE:
                    raise FetchError(f"{url}: answer larger than {MAX_RESPONSE} bytes")
                if response.status != 200:
                    raise FetchError(f"{url}: HTTP {response.status}")
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FetchError(f"{url}: not JSON") from None
    if not isinstance(value, dict):
        raise FetchError(f"{url}: not a JSON object")
    return value
