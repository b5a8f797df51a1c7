"""A bounded in-memory cache of rendered ENVELOPEs, by store id.

Mail clients fetch ``(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`` for a whole folder at every
synchronisation; without a cache each one decrypts and parses every message. The cache
lives in the serving process's memory only (never on disk, like every decrypted byte) and
forgets the oldest entries past its bound. A store id names one immutable ciphertext, so
an entry never goes stale; an expunged message's entry just ages out. One instance per
IMAP listener, reached as ``ServerContext.envelopes`` (no process global).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from proxy.imap.mime import ParsedMessage

MAX_ENTRIES = 100_000  # ~ 30 MB of envelopes at most


class EnvelopeCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store_id: str) -> bytes | None:
        with self._lock:
            value = self._data.get(store_id)
            if value is not None:
                self._data.move_to_end(store_id)
            return value

    def get_many(self, store_ids: list[str]) -> dict[str, bytes]:
        """The envelopes held of *store_ids* (one lock for a whole batch)."""
        out: dict[str, bytes] = {}
        with self._lock:
            data = self._data
            for store_id in store_ids:
                value = data.get(store_id)
                if value is not None:
                    data.move_to_end(store_id)
                    out[store_id] = value
        return out

    def put(self, store_id: str, envelope: bytes) -> None:
        with self._lock:
            self._data[store_id] = envelope
            self._data.move_to_end(store_id)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)



class CachedEnvelope(ParsedMessage):
    """A parsed message of which only the ENVELOPE is known (from the cache)."""

    def __init__(self, envelope: bytes) -> None:
        super().__init__(b"")
        self._envelope = envelope

    def envelope(self) -> bytes:
        return self._envelope


class RecordingParsed(ParsedMessage):
    """A parsed message that stores its ENVELOPE in the cache once computed."""

    def __init__(self, raw: bytes, store_id: str, cache: EnvelopeCache) -> None:
        super().__init__(raw)
        self._store_id = store_id
        self._cache = cache

    def envelope(self) -> bytes:
        value = super().envelope()
        self._cache.put(self._store_id, value)
        return value

