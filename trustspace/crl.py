"""Certificate revocation lists from files and URLs, cached on disk and in memory.

- ``[pki] crl_files``: read at start and again when their modification time changes.
- ``[pki] crl_urls``: fetched over HTTP(S) with ``crl_fetch_timeout``, written to
  ``crl_cache_dir`` (so a restart does not depend on the distribution point being up) and
  fetched again at the CRL's nextUpdate or after ``crl_refresh_interval``, whichever comes
  first. A failed fetch keeps the previous CRL while it is current and is retried after
  ``crl_retry_interval`` at the earliest (a dead URL does not slow every session).

A CRL is used for an issuer only when its issuer name matches, its signature verifies with
the issuer's key and it is current (nextUpdate not passed; RFC 5280 §6.3.3 (a)). PEM or DER.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509

log = structlog.get_logger("mss.pki")
MAX_CRL_BYTES = 64 * 1024 * 1024


class CrlError(ValueError):
    """A CRL that cannot be read or parsed."""


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(f"not a CRL: {exc}") from None


@dataclass
class _Source:
    name: str  # path or URL
    crl: x509.CertificateRevocationList | None = None
    digest: str = ""
    mtime: float = 0.0  # files
    next_refresh: float = 0.0  # URLs
    failed_at: float = 0.0
    error: str = ""


def _fetch(url: str, timeout: float) -> bytes:
    """Blocking GET (run in an executor), bounded in time and size."""
    if not url.startswith(("http://", "https://")):
        raise CrlError(f"unsupported CRL URL scheme: {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "mss-crl-fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        data: bytes = response.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise CrlError(f"CRL at {url} larger than {MAX_CRL_BYTES} bytes")
    return data


class CrlStore:
    def __init__(self, files: Sequence[Path], urls: Sequence[str], cache_dir: Path,
                 fetch_timeout: float = 10.0, refresh_interval: float = 3600.0,
                 retry_interval: float = 60.0) -> None:
        self.files = {str(p): _Source(str(p)) for p in files}
        self.urls = {u: _Source(u) for u in urls}
        self.cache_dir = cache_dir
        self.fetch_timeout = fetch_timeout
        self.refresh_interval = refresh_interval
        self.retry_interval = retry_interval
        self.generation = 0  # changes whenever a CRL is replaced: verification caches key on it
        self._lock = asyncio.Lock()
        self.reload_files()
        self._load_disk_cache()

    @property
    def configured(self) -> bool:
        return bool(self.files or self.urls)

    # ------------------------------------------------------------------ sources
    def _install(self, source: _Source, data: bytes, when: float) -> None:
        crl = parse_crl(data)
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.digest:
            self.generation += 1
        source.crl, source.digest, source.error = crl, digest, ""
        source.next_refresh = when + self.refresh_interval
        if crl.next_update_utc is not None:
            source.next_refresh = min(source.next_refresh, crl.next_update_utc.timestamp())

    def reload_files(self) -> None:
        for source in self.files.values():
            try:
                mtime = os.stat(source.name).st_mtime
                if mtime == source.mtime and source.crl is not None:
                    continue
                self._install(source, Path(source.name).read_bytes(), time.time())
                source.mtime = mtime
            except (OSError, CrlError) as exc:
                if source.error != str(exc):
                    log.error("CRL file unreadable", file=source.name, error=str(exc))
                source.error = str(exc)

    def _cache_path(self, url: str) -> Path:
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".crl")

    def _load_disk_cache(self) -> None:
        for url, source in self.urls.items():
            path = self._cache_path(url)
            try:
                self._install(source, path.read_bytes(), path.stat().st_mtime)
            except FileNotFoundError:
                continue
            except (OSError, CrlError) as exc:
                log.error("cached CRL unreadable", url=url, error=str(exc))

    def _write_disk_cache(self, url: str, data: bytes) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._cache_path(url)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def due_urls(self, now: float | None = None) -> list[str]:
        """URLs to fetch now: never loaded or past their refresh time, not failed recently."""
        now = time.time() if now is None else now
        return [url for url, s in self.urls.items()
                if (s.crl is None or now >= s.next_refresh)
                and now - s.failed_at >= self.retry_interval]

    async def refresh(self) -> None:
        """Fetch the due URLs without blocking the event loop."""
        loop = asyncio.get_running_loop()
        async with self._lock:  # one fetch per URL at a time, whoever asks
            for url in self.due_urls():
                source = self.urls[url]
                try:
                    data = await loop.run_in_executor(None, _fetch, url, self.fetch_timeout)
                    self._install(source, data, time.time())
                    await loop.run_in_executor(None, self._write_disk_cache, url, data)
                    log.info("CRL fetched", url=url, entries=len(source.crl or []))
                except Exception as exc:  # network, HTTP, parse: keep the previous CRL
                    source.failed_at, source.error = time.time(), f"{type(exc).__name__}: {exc}"
                    log.error("CRL fetch failed", url=url, error=source.error)

    async def run(self, poll: float = 30.0) -> None:
        """Background refresh for ``mss serve``."""
        while True:
            self.reload_files()
            await self.refresh()
            await asyncio.sleep(min(poll, self.retry_interval, self.refresh_interval))

    # ------------------------------------------------------------------ lookup
    def lookup(self, issuer: x509.Certificate,
               now: dt.datetime | None = None) -> x509.CertificateRevocationList | None:
        """A current CRL signed by *issuer*, or None."""
        sources = [*self.files.values(), *self.urls.values()]
        return current_crl([s.crl for s in sources if s.crl is not None], issuer,
                           now or dt.datetime.now(dt.UTC))

    def status(self) -> list[dict[str, object]]:
        """One line per source, for logs and ``mss pki crl-status``."""
        out: list[dict[str, object]] = []
        for kind, sources in (("file", self.files), ("url", self.urls)):
            for source in sources.values():
                crl = source.crl
                out.append({
                    "kind": kind, "source": source.name, "loaded": crl is not None,
                    "issuer": crl.issuer.rfc4514_string() if crl else None,
                    "next_update": crl.next_update_utc.isoformat()
                    if crl and crl.next_update_utc else None,
                    "entries": len(crl) if crl else 0, "error": source.error or None})
        return out


def current_crl(crls: list[x509.CertificateRevocationList], issuer: x509.Certificate,
                now: dt.datetime) -> x509.CertificateRevocationList | None:
    """The first of *crls* issued and signed by *issuer* and not past its nextUpdate (RFC 5280
    §6.3.3 (a)), or None."""
    for crl in crls:
        if crl.issuer != issuer.subject:
            continue
        if crl.next_update_utc is not None and now > crl.next_update_utc:
            continue
        try:
            if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return crl
        except TypeError:  # a key type that signs no CRL
            continue
    return None
