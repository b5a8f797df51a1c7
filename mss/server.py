"""``mss serve``: one runtime per process, its parts started in order and stopped in
reverse order, every stop bounded by one deadline (SIGTERM: finish in flight, exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import structlog

from audit.events import Event
from audit.journal import AuditRecord, append
from mss.app import App, open_app
from mss.config import ConfigError
from mss.lifecycle import STOP_FLOOR, Component, remaining
from mss.runtime import Runtime
from proxy.admin.listener import AdminListener
from proxy.imap.listeners import ImapListeners
from proxy.outbound.worker import DeliveryWorker
from proxy.portal.listener import PortalListener
from proxy.smtp.listeners import SmtpListeners

log = structlog.get_logger("mss.server")
SHUTDOWN_GRACE = 30.0  # seconds given to DATA transactions in flight at SIGTERM


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``server.event_loop`` names: None for asyncio's own, uvloop's (the
    same asyncio API, its transports in libuv) when installed, else a ConfigError."""
    if event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError("config: server.event_loop: uvloop is not installed "
                          "(pip install 'mss[uvloop]', or event_loop = \"asyncio\")") from None
    return uvloop.new_event_loop


def run_loop(event_loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run *main* in a new event loop of the kind ``server.event_loop`` names."""
    try:
        factory = loop_factory(event_loop)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def serve_workers(config_path: Path, workers: int) -> int:
    """Fork *workers* serving processes sharing the ports (SO_REUSEPORT); forward SIGTERM
    and SIGINT to them; exit status 0 when every worker stopped cleanly."""
    children: list[int] = []
    parent = os.getpid()
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # child: its own engines, committer and event loop
            code = 0
            try:
                _stop_with_parent(parent)
                app = open_app(config_path)
                run_loop(app.config.server.event_loop, serve(app, worker=index))
            except BaseException as exc:  # noqa: BLE001 - report and exit non-zero
                log.error("worker failed", worker=index, error=repr(exc))
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _stop_with_parent(parent: int) -> None:
    """A worker gets SIGTERM (a clean stop: in-flight sessions finish) when the process
    that forked it dies, even by SIGKILL, which it cannot forward: no orphan keeps serving
    the ports and the database. Linux's prctl(PR_SET_PDEATHSIG); elsewhere nothing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("workers will not stop with their parent",
                    error=os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Shutdown:
    """The one deadline of a shutdown, fixed when the first part stops."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._deadline: float | None = None

    @property
    def deadline(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.grace
        return self._deadline

    async def stop(self, part: Component) -> None:
        deadline = self.deadline
        name = getattr(part, "name", type(part).__name__)
        began = time.monotonic()
        try:  # bounded here too, should a part overrun its own bound
            await asyncio.wait_for(part.stop(deadline), remaining(deadline) + 2 * STOP_FLOOR)
            log.debug("part stopped", part=name, seconds=round(time.monotonic() - began, 3))
        except TimeoutError:
            log.error("stop overran the deadline", part=name)
        except Exception as exc:  # the other parts must still stop
            log.error("stop failed", part=name, error=repr(exc))


async def _start(stack: contextlib.AsyncExitStack, part: Component,
                 shutdown: _Shutdown) -> None:
    """Start *part*, its stop registered first: a part that fails half-way (a listener
    port taken after others were bound) still releases what it took."""
    stack.push_async_callback(shutdown.stop, part)
    await part.start()


@contextlib.contextmanager
def _signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set *stop* while serving; the handlers are removed after."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


class _ServerRecords:
    """``server.start`` once the listeners are bound, ``server.stop`` once every other
    part stopped; worker 0 signs a checkpoint at both (shipped: the witnesses know where
    the chain begins and ends)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.started = False

    async def start(self) -> None:
        cfg, worker = self.runtime.app.config, self.runtime.worker
        listening = {name: f"{lc.host}:{lc.port}" for name, lc in cfg.listeners.items()
                     if lc.enabled and (name != "portal" or cfg.portal.enabled)}
        await self.runtime.committer.run(lambda conn: append(conn, [AuditRecord(
            Event.SERVER_START, actor="mss", detail={"listeners": listening, "worker": worker})]))
        self.started = True
        if worker == 0:
            await self.runtime.checkpoint()
        log.info("ready", listeners=listening, worker=worker,
                 whitelist_version=self.runtime.whitelist.current.version_id)

    async def stop(self, deadline: float) -> None:
        if not self.started:
            return
        await self.runtime.committer.run(
            lambda conn: append(conn, [AuditRecord(Event.SERVER_STOP, actor="mss")]))
        if self.runtime.worker == 0:  # shipped at the next start at the latest
            await self.runtime.checkpoint()


async def serve(app: App, worker: int = 0, *, stop: asyncio.Event | None = None,
                ready: asyncio.Event | None = None,
                grace: float = SHUTDOWN_GRACE) -> None:
    """Serve *app* (worker *worker* of ``server.workers``) until stopped.

    Without *stop*, SIGTERM and SIGINT stop the node (their handlers are installed for the
    time of the call, so this must then run in the main thread's loop). With *stop*, no
    signal handler is installed and setting the event stops the node the same way; serve
    may then run in the event loop of any thread (an in-process node; from another thread
    set it with ``loop.call_soon_threadsafe(stop.set)``). *ready*, when given, is set once
    every listener is bound and ``server.start`` is committed (the log's "ready" line).

    Parts start in order (committer, elections, whitelist watch, CRL refresh, change
    watcher, the elected periodic jobs and shipper, delivery worker, SMTP and IMAP
    listeners, the portal) and stop in reverse
    order, each by one deadline *grace* seconds after the stop began: the SMTP listeners
    wait for DATA in flight and answer the rest 421 4.3.2 (RFC 5321 §3.8), IMAP says BYE
    (RFC 3501 §7.1.5), deliveries in flight finish or give their lease back, the committer
    commits what was submitted. When serve returns, no task and no socket of it is left.
    """
    stopping = asyncio.Event() if stop is None else stop
    signals = _signals(stopping) if stop is None else contextlib.nullcontext()
    shutdown = _Shutdown(grace)
    with signals:
        runtime = Runtime.build(app, worker)
        async with contextlib.AsyncExitStack() as stack:
            for part in runtime.services():
                await _start(stack, part, shutdown)
            records = _ServerRecords(runtime)
            stack.push_async_callback(shutdown.stop, records)  # after every part below
            # issue 17: /metrics, /healthz, /readyz (ready once records.start is committed)
            await _start(stack, AdminListener(runtime, lambda: records.started
                                              and not stopping.is_set()), shutdown)
            if app.config.delivery.enabled:  # every worker: claims are leased per row
                await _start(stack, DeliveryWorker(runtime), shutdown)
            for listeners in (SmtpListeners(runtime), ImapListeners(runtime)):
                await _start(stack, listeners, shutdown)
            if app.config.portal.enabled and app.config.listeners["portal"].enabled:
                await _start(stack, PortalListener(runtime), shutdown)
            await records.start()
            if ready is not None:
                ready.set()
            await stopping.wait()
            log.info("stopping")
    log.info("stopped")
