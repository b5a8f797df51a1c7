"""The admin listener, one component of ``mss serve`` (docs/metrics.md): plain HTTP on
listeners.admin (loopback by default), served by worker 0.

- ``GET /healthz``: liveness, ``200 ok`` while the event loop answers.
- ``GET /readyz``: readiness, ``200`` when the database opens and reads (a connection of
  its own each time, so a file made unreadable shows), the keys are open, a whitelist is
  loaded and the listeners are up; else ``503``; a JSON object of the checks either way.
- ``GET /metrics``: the Prometheus exposition: every worker's counters summed
  (:mod:`proxy.admin.aggregate`) and the gauges read from the database at scrape time
  (:class:`mss.metrics.StateCollector`); ``404`` with ``metrics.enabled = false``.

Every other worker (``server.workers`` > 1) answers its own counters on a Unix socket for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import NullPool, create_engine, func, select, text

from mss import db
from mss.metrics import StateCollector
from mss.runtime import Runtime
from proxy.admin.aggregate import Summed, WorkerExposition, read_worker, socket_path

log = structlog.get_logger("proxy.admin")
LISTENER = "admin"
CHECK_TIMEOUT = 5.0  # seconds the readiness checks get, in all
SHUTDOWN = 2.0


class _Workers(Collector):
    def __init__(self, configured: int, answered: int) -> None:
        self.configured, self.answered = configured, answered

    def collect(self) -> Any:
        up = GaugeMetricFamily("mss_workers", "Serving processes (server.workers) whose "
                               "counts this scrape sums", labels=["state"])
        up.add_metric(["answered"], self.answered)
        up.add_metric(["missing"], self.configured - self.answered)
        yield up


class AdminListener:
    """*serving* tells whether the protocol listeners are up (set by mss serve)."""

    name = "admin"

    def __init__(self, runtime: Runtime, serving: Callable[[], bool]) -> None:
        self.runtime = runtime
        self.serving = serving
        cfg = runtime.app.config
        self.exposition = (WorkerExposition(runtime.metrics.registry,
                                            socket_path(cfg.data_dir, runtime.worker))
                           if runtime.metrics.enabled and runtime.worker > 0 else None)
        self.runner: web.AppRunner | None = None
        url = cfg.database_url
        # readiness: a new connection per check (a pooled one keeps an unreadable file open)
        self._probe = None if url.startswith("sqlite") else create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": 3})

    @property
    def http(self) -> bool:
        """Worker 0 serves HTTP; the others only answer it their counts."""
        return self.runtime.worker == 0 and self.runtime.app.config.listeners[LISTENER].enabled

    async def start(self) -> None:
        if self.exposition is not None:
            await self.exposition.start()
        if not self.http:
            return
        listener = self.runtime.app.config.listeners[LISTENER]
        with_host = ipaddress.ip_address(listener.host) if _is_ip(listener.host) else None
        if with_host is None or not with_host.is_loopback:
            log.warning("admin listener not on loopback: plain HTTP, no authentication",
                        host=listener.host)
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=SHUTDOWN)
        await self.runner.setup()
        site = web.TCPSite(self.runner, listener.host, listener.port, reuse_address=True)
        await site.start()
        log.info("admin listening", host=listener.host, port=listener.port)

    async def stop(self, deadline: float) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
        if self.exposition is not None:
            await self.exposition.stop(deadline)
        if self._probe is not None:
            self._probe.dispose()

    # ------------------------------------------------------------------ handlers
    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        try:
            database = await asyncio.wait_for(loop.run_in_executor(None, self._database),
                                              CHECK_TIMEOUT)
        except TimeoutError:
            database = f"no answer in {CHECK_TIMEOUT:g} s"
        checks["database"] = database or "ok"
        checks["keys"] = self._keys() or "ok"
        version = self.runtime.whitelist.current.version_id
        checks["whitelist"] = "ok" if version else "no whitelist imported (mss whitelist import)"
        checks["listeners"] = "ok" if self.serving() else "not serving"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    def _database(self) -> str | None:
        """None when the database opens and reads, else why not (thread)."""
        try:
            if self._probe is None:  # SQLite: the file itself, read-only, never created
                path = self.runtime.app.engine.url.database or ""
                # the file opened by this check (SQLite may reuse a descriptor it holds)
                os.close(os.open(path, os.O_RDWR))
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
                try:
                    conn.execute("SELECT count(*) FROM meta").fetchone()
                finally:
                    conn.close()
            else:
                with self._probe.connect() as c:
                    c.execute(select(func.count()).select_from(db.meta)).scalar()
                    c.execute(text("SELECT 1"))
        except Exception as exc:  # the reason, never the URL (it may hold a password)
            return f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return None

    def _keys(self) -> str | None:
        try:
            if not self.runtime.app.keyring.provider.kek_id:  # (PKCS#11: asks the token)
                return "master key unavailable"
        except Exception as exc:
            return f"master key unavailable: {type(exc).__name__}"
        return None

    async def metrics(self, request: web.Request) -> web.Response:
        runtime = self.runtime
        if not runtime.metrics.enabled:
            raise web.HTTPNotFound(text="metrics disabled (metrics.enabled = false)\n")
        cfg = runtime.app.config
        texts = [generate_latest(runtime.metrics.registry).decode()]
        others = await asyncio.gather(*(read_worker(socket_path(cfg.data_dir, n))
                                        for n in range(1, cfg.workers)))
        texts += [t for t in others if t is not None]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Summed(texts))
        registry.register(_Workers(cfg.workers, len(texts)))
        registry.register(_State(runtime))
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class _State(Collector):
    """The scrape-time gauges; a database that does not answer leaves them out and says so
    (``mss_database_up 0``) rather than failing the scrape."""

    def __init__(self, runtime: Runtime) -> None:
        self.inner = StateCollector(runtime.app.reader, runtime.app.config,
                                    runtime.verifier.crls.status)

    def collect(self) -> Any:
        up = GaugeMetricFamily("mss_database_up", "1 when the scrape read the database")
        try:
            families: list[Metric] = list(self.inner.collect())
        except Exception as exc:
            log.warning("metrics: database not read", error=repr(exc))
            families = []
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
