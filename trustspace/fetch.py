"""Fetching the published whitelist: conditional GET, checksum, then the guarded import.

One refresh is: a GET of the list with ``If-None-Match`` / ``If-Modified-Since`` from the last
successful fetch (RFC 9110 §13.1.2, §13.1.3); ``304`` ends it. A new document is checked
against the published SHA-256 when a checksum URL is configured, then imported by
:func:`trustspace.registry.import_whitelist` (format checks, shrink guard, one transaction).
The validators are saved only once the document is in force (or was already), so a list
refused by the shrink guard is fetched in full again next time instead of hiding behind a
``304``. Every refresh writes one ``whitelist.fetch`` audit record; any failure leaves the
version in force untouched (the last good list).

Blocking (urllib): ``mss serve`` runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, insert, select, update

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss import db
from trustspace.registry import (
    ImportResult,
    WhitelistImportError,
    active_version_id,
    import_whitelist,
)

_EVENT = Event.WHITELIST_FETCH
_USER_AGENT = "mss-whitelist-fetch/1"
_HEX64 = re.compile(rb"\b([0-9a-fA-F]{64})\b")


class WhitelistFetchError(Exception):
    """A refresh failed; the list in force is unchanged. The message is one line."""


@dataclass(frozen=True)
class Document:
    status: int  # 200, or 304 (not modified)
    body: bytes
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class FetchResult:
    status: str  # "not_modified" | "unchanged" | "imported"
    version_id: int | None
    imported: ImportResult | None


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to anything else."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str
                         ) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise urllib.error.URLError(f"refused redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def get(url: str, *, timeout: float, max_bytes: int, ca_file: Path | None = None,
        etag: str | None = None, last_modified: str | None = None) -> Document:
    """GET *url* (http, https or file); raises :class:`WhitelistFetchError`."""
    headers = {"User-Agent": _USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    handlers: list[Any] = [_NoDowngrade()]
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            body = resp.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise WhitelistFetchError(f"{redact(url)}: larger than {max_bytes} bytes")
            return Document(resp.status or 200, body, resp.headers.get("ETag"),
                            resp.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Document(304, b"", exc.headers.get("ETag"), exc.headers.get("Last-Modified"))
        raise WhitelistFetchError(f"{redact(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise WhitelistFetchError(f"{redact(url)}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise WhitelistFetchError(f"{redact(url)}: {exc}") from None


def redact(url: str) -> str:
    """*url* without its user information (``https://user:secret@host/`` never logged)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_checksum(text: bytes) -> str:
    """The SHA-256 of a checksum file: ``<hex>`` or ``<hex>  <name>`` (sha256sum output)."""
    match = _HEX64.search(text[:4096])
    if match is None:
        raise WhitelistFetchError("the checksum file holds no SHA-256 value")
    return match.group(1).decode("ascii").lower()


def _state(conn: Connection, url: str) -> tuple[str | None, str | None]:
    s = db.whitelist_sources
    row = conn.execute(select(s.c.etag, s.c.last_modified).where(s.c.url == url)).first()
    return (row.etag, row.last_modified) if row else (None, None)


def _save_state(conn: Connection, url: str, **values: Any) -> None:
    s = db.whitelist_sources
    if conn.execute(select(s.c.url).where(s.c.url == url)).first() is None:
        conn.execute(insert(s).values(url=url, **values))
    else:
        conn.execute(update(s).where(s.c.url == url).values(**values))


def refresh(engine: Engine, url: str, *, sha256_url: str = "", timeout: float = 60.0,
            max_bytes: int = 64 * 1024 * 1024, ca_file: Path | None = None,
            max_shrink_ratio: float = 0.10, force: bool = False,
            actor: str = "mss") -> FetchResult:
    """One refresh from *url*; raises :class:`WhitelistFetchError` (audited) on failure."""
    detail: dict[str, Any] = {"url": redact(url),
                              "sha256_url": redact(sha256_url) if sha256_url else None}
    started = time.time()
    with engine.connect() as conn:
        etag, last_modified = (None, None) if force else _state(conn, redact(url))
    try:
        doc = get(url, timeout=timeout, max_bytes=max_bytes, ca_file=ca_file, etag=etag,
                  last_modified=last_modified)
        if doc.status == 304:
            _record(engine, url, actor, Outcome.SUCCESS, {**detail, "status": "not_modified"},
                    checked_at=started)
            return FetchResult("not_modified", _active(engine), None)
        sha256 = hashlib.sha256(doc.body).hexdigest()
        detail.update(sha256=sha256, bytes=len(doc.body))
        if sha256_url:
            expected = parse_checksum(get(sha256_url, timeout=timeout, max_bytes=4096,
                                          ca_file=ca_file).body)
            if expected != sha256:
                raise WhitelistFetchError(
                    f"checksum mismatch: the list's SHA-256 is {sha256[:16]}..., "
                    f"{redact(sha256_url)} publishes {expected[:16]}...")
        try:
            result = import_whitelist(engine, doc.body, redact(url), force=force,
                                      max_shrink_ratio=max_shrink_ratio, actor=actor)
        except WhitelistImportError as exc:  # audited by the import itself
            raise WhitelistFetchError(str(exc)) from None
    except WhitelistFetchError as exc:
        _record(engine, url, actor, Outcome.SERIOUS_FAILURE, {**detail, "status": "failed"},
                reason=str(exc), checked_at=started, last_error=str(exc))
        raise
    status = "unchanged" if result.unchanged else "imported"
    _record(engine, url, actor, Outcome.SUCCESS,
            {**detail, "status": status, "version": result.version_id},
            checked_at=started, changed_at=started, etag=doc.etag,
            last_modified=doc.last_modified, last_error=None)
    return FetchResult(status, result.version_id, result)


def _active(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return active_version_id(conn)


def _record(engine: Engine, url: str, actor: str, outcome: Outcome, detail: dict[str, Any],
            *, reason: str | None = None, **state: Any) -> None:
    """The audit record and the source's state, in one transaction."""
    with engine.begin() as conn:
        _save_state(conn, redact(url), **state)
        append(conn, [AuditRecord(_EVENT, outcome, actor=actor, reason=reason,
                                  whitelist_version=active_version_id(conn), detail=detail)])
