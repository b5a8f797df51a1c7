"""What every portal response and request goes through: security headers (a CSP without
any inline script or style), the session cookie, CSRF tokens on every POST and the Origin
check (RFC 6454 §7: a browser's POST names the page's origin).

Cookies: ``__Host-`` names (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain), HttpOnly.
The session cookie is SameSite=Strict; the login cookie, which must come back with the
issuer's cross-site redirect to the callback, is SameSite=Lax and lives for the login only.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from types import MappingProxyType

from aiohttp import web

SESSION_COOKIE = "__Host-mss-session"
LOGIN_COOKIE = "__Host-mss-login"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = MappingProxyType({
    "Content-Security-Policy": CSP,
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin: cross-site requests get no Referer; our own POSTs keep their Origin
    # (with no-referrer, browsers send "Origin: null" and the Origin check cannot work)
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and errors carry the headers too
        response = exc
        _headers(request, response)
        raise
    _headers(request, response)
    return response


def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


def set_cookie(response: web.StreamResponse, name: str, value: str, *,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, path="/", secure=True, httponly=True,
                        samesite="Strict" if name == SESSION_COOKIE else "Lax",
                        max_age=max_age)


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/", secure=True, httponly=True,
                        samesite="Strict" if name == SESSION_COOKIE else "Lax")


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def foreign_origin(request: web.Request, origin: str) -> bool:
    """A POST whose Origin (or, without one, Referer) is not the portal's own."""
    given = request.headers.get("Origin")
    if given is not None:
        return given != origin
    referer = request.headers.get("Referer")
    return referer is not None and not (referer == origin or referer.startswith(origin + "/"))
