"""The whitelist in force for a running node: read from the database, cached in memory.

Every node polls the active version id (one indexed query) and reloads only when it
changed, so an import by ``mss whitelist import`` or by another node takes effect within
``whitelist.reload_interval`` seconds without a restart (docs/architecture.md "Invariants").
The local peer blocks (``mss peer block``, trustspace/blocks.py) ride on the same watch:
their version is polled with the whitelist's and the blocks reloaded when it moved.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import Engine

from mss.lifecycle import BackgroundTask
from trustspace import blocks
from trustspace.registry import active_version_id, load_active
from trustspace.whitelist import Whitelist

log = structlog.get_logger("mss.whitelist")


class LiveWhitelist:
    """The list in force; as a component, ``start`` watches for a new active version every
    *reload_interval* seconds and ``stop`` ends the watch."""

    def __init__(self, engine: Engine, reload_interval: float = 0.0) -> None:
        self.engine = engine
        self.current: Whitelist = Whitelist.empty()
        self.blocks: blocks.PeerBlocks = blocks.PeerBlocks.empty()  # mss peer block
        self.refresh()
        self._watcher = BackgroundTask("whitelist-watch", lambda: self.watch(reload_interval))

    async def start(self) -> None:
        await self._watcher.start()

    async def stop(self, deadline: float) -> None:
        await self._watcher.stop(deadline)

    def refresh(self) -> bool:
        """Reload what changed (the active version, the peer blocks); True when the
        whitelist did."""
        with self.engine.connect() as conn:
            if blocks.version(conn) != self.blocks.version:
                self.blocks = blocks.load(conn)
                log.info("peer blocks loaded", version=list(self.blocks.version),
                         blocks=len(self.blocks))
            version = active_version_id(conn)
            if version == self.current.version_id or (version is None
                                                      and self.current.version_id == 0):
                return False
            self.current = load_active(conn)
        log.info("whitelist loaded", version=self.current.version_id,
                 domains=self.current.domain_count)
        return True

    async def watch(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, self.refresh)
            except Exception as exc:  # keep the last good list
                log.error("whitelist reload failed", error=repr(exc))
