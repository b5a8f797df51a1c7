"""Verification of the certificate an SMTP peer presented, with a result cache.

One :class:`PeerVerifier` per serving process, for both directions: the client certificate
of an operator or institution sending to our MX and relay listeners, and the server
certificate of the host our queue delivers to (its revocation is checked there too). It
holds the trust anchors and intermediates of ``[pki]``, the CRL store, and a cache of
results keyed by the SHA-256 of the presented chain, the purpose and the CRL generation, so
a busy node verifies a peer's chain once per ``verify_cache_ttl`` (and never past the
leaf's notAfter) instead of once per message.
A ``crl_unavailable`` result is never cached: the next session tries again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mss.config import ConfigError, PkiConfig
from mss.lifecycle import BackgroundTask
from trustspace.chain import ChainResult, PkiCheck, Purpose, validate
from trustspace.crl import CrlStore

MAX_CACHE = 10_000
MAX_LEARNED = 256


def read_pem_certificates(path: Path) -> list[x509.Certificate]:
    """The PEM certificates of a file; ValueError saying why in a few words (unreadable, no
    PEM certificate) for the caller to prefix with the option or key that named it."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: no PEM certificate ({exc})") from None


def load_bundle(path: Path, what: str) -> list[x509.Certificate]:
    try:
        return read_pem_certificates(path)
    except ValueError as exc:
        raise ConfigError(f"config: {what}: {exc}") from None


class PeerVerifier:
    def __init__(self, config: PkiConfig) -> None:
        self.config = config
        self.anchors = load_bundle(config.anchors, "pki.anchors")
        self.intermediates = (load_bundle(config.intermediates, "pki.intermediates")
                              if config.intermediates else [])
        self.crls = CrlStore(config.crl_files, config.crl_urls, config.crl_cache_dir,
                             config.crl_fetch_timeout, config.crl_refresh_interval,
                             config.crl_retry_interval)
        self.fail_open = config.crl_unavailable == "fail-open"
        self._cache: dict[bytes, tuple[float, int, ChainResult]] = {}
        # intermediates of chains that verified: a resumed TLS session presents the leaf
        # alone (the server keeps no chain in the session), so they complete its path
        self._learned: dict[bytes, x509.Certificate] = {}
        self.hits = self.misses = 0
        self._refresh = BackgroundTask("crl-refresh", self.crls.run)  # per process: own memory

    async def start(self) -> None:
        """Refresh the CRLs in the background (files reloaded, URLs fetched when due)."""
        await self._refresh.start()

    async def stop(self, deadline: float) -> None:
        await self._refresh.stop(deadline)

    def _validate(self, chain: Sequence[bytes], purpose: Purpose) -> ChainResult:
        result = validate(chain, self.anchors,
                          [*self.intermediates, *self._learned.values()], self.crls.lookup,
                          self.crls.configured, purpose=purpose)
        if result.ok and len(self._learned) < MAX_LEARNED:
            for cert in result.path[1:-1]:
                self._learned.setdefault(cert.fingerprint(hashes.SHA256()), cert)
        return result

    async def verify(self, chain: Sequence[bytes], purpose: Purpose = "client") -> ChainResult:
        """The verdict on a presented chain (leaf first, DER) of a TLS client (our
        listeners) or server (our deliveries); an empty chain is ``no_certificate``."""
        if not chain:
            return self._validate(chain, purpose)
        key = hashlib.sha256(purpose.encode() + b"".join(hashlib.sha256(c).digest()
                                                         for c in chain)).digest()
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now and cached[1] == self.crls.generation:
            self.hits += 1
            return cached[2]
        self.misses += 1
        result = self._validate(chain, purpose)
        if result.check is PkiCheck.CRL_UNAVAILABLE and self.crls.due_urls():
            await self.crls.refresh()  # bounded by crl_fetch_timeout per URL
            result = self._validate(chain, purpose)
        if result.check is not PkiCheck.CRL_UNAVAILABLE:
            self._remember(key, result, now)
        return result

    def _remember(self, key: bytes, result: ChainResult, now: float) -> None:
        expires = now + self.config.verify_cache_ttl
        certs = result.path or ((result.leaf,) if result.leaf is not None else ())
        for cert in certs:  # a result changes when a certificate of the path starts or ends
            for edge in (cert.not_valid_before_utc.timestamp(),
                         cert.not_valid_after_utc.timestamp()):
                if edge > now:
                    expires = min(expires, edge)
        if len(self._cache) >= MAX_CACHE:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
        self._cache[key] = (expires, self.crls.generation, result)
