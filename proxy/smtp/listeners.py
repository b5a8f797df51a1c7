"""The SMTP listeners a configuration enables, as one component of ``mss serve``."""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Callable
from types import MappingProxyType

from mss.authenticator import offered
from mss.lifecycle import STOP_FLOOR, remaining
from mss.limits import Admission, ListenerGuard
from mss.runtime import Runtime
from proxy.smtp.handler import SmtpHandler
from proxy.smtp.protocol import MssSMTP

# listener name -> (mode, implicit TLS)
LISTENER_KINDS: MappingProxyType[str, tuple[str, bool]] = MappingProxyType({
    "mx": ("mx", False),
    "submission": ("submission", False),
    "submissions": ("submission", True),
    "relay": ("relay", False),
    "submission-cert": ("submission", False),  # EX_LPS_0300 certificate front (EXTERNAL)
})
TLS_HANDSHAKE_TIMEOUT = 30.0  # seconds for the implicit TLS handshake (submissions)
CLOSE_GRACE = 1.0  # seconds for a peer to see the 421 and close before the abort


class _AdmitBeforeTls(asyncio.Protocol):
    """submissions (RFC 8314 §3.3): the connection caps are checked at accept(), before
    any TLS work, so a refused client costs no handshake (it is closed, as imaps does);
    an admitted one gets the handshake (bounded) and then its SMTP session. Reading stays
    paused until ``start_tls`` so that the client's hello waits in the socket."""

    def __init__(self, smtp: MssSMTP, guard: ListenerGuard, context: ssl.SSLContext,
                 handshakes: set[asyncio.Task[None]]) -> None:
        self.smtp, self.guard, self.context = smtp, guard, context
        self.handshakes = handshakes  # the listeners' own: referenced while running

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        admission = self.guard.admit(peer[0] if peer else "")
        if admission is None:
            transport.close()
            return
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._handshake(transport, admission))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, admission: Admission) -> None:
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, self.smtp, self.context, server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            admission.release()  # start_tls closed the transport
            return
        if tls is None:
            admission.release()
            transport.close()
            return
        self.smtp.admission = admission  # admitted above: connection_made does not recount
        self.smtp.connection_made(tls)


class SmtpListeners:
    """Every SMTP listener of the process. ``start`` binds them; ``stop`` closes them (no
    new connection), lets the DATA transactions in flight finish until the deadline, then
    answers the other sessions 421 4.3.2 and closes them (RFC 5321 §3.8)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.servers: list[asyncio.Server] = []
        self.handlers: list[SmtpHandler] = []
        self.protocols: weakref.WeakSet[MssSMTP] = weakref.WeakSet()  # one per connection
        self.handshakes: set[asyncio.Task[None]] = set()  # submissions' TLS handshakes

    async def start(self) -> None:
        app = self.runtime.app
        authenticator = self.runtime.authenticator
        throttle = authenticator.throttle("smtp")  # submission and relay share it
        for name, listener in app.config.listeners.items():
            if not listener.enabled or name not in LISTENER_KINDS:  # IMAP: proxy/imap
                continue
            mode, implicit = LISTENER_KINDS[name]
            handler = SmtpHandler(app, self.runtime.committer, self.runtime.whitelist,
                                  "submission" if mode == "submission" else mode,  # type: ignore[arg-type]
                                  verifier=self.runtime.verifier, throttle=throttle,
                                  mailstore=self.runtime.mailstore,
                                  authenticator=authenticator, listener=listener,
                                  sending=self.runtime.sending,
                                  metrics=self.runtime.metrics,
                                  registry=self.runtime.registry)
            # MX and relay ask for a client certificate (verified after the handshake), and
            # so do the submission listeners offering EXTERNAL
            context = self.runtime.tls.for_listener(listener) if mode == "submission" \
                else self.runtime.tls.mx
            mechanisms = offered(listener, authenticator.has_tokens, mode)
            guard = ListenerGuard.of(listener, self.runtime.committer,
                                     app.config.limits.report_interval,
                                     self.runtime.limits.files)
            factory = self._factory(handler, name, mode, implicit, context, guard, mechanisms)

            def admit_first(factory: Callable[[], MssSMTP] = factory,
                            guard: ListenerGuard = guard,
                            context: ssl.SSLContext = context) -> _AdmitBeforeTls:
                return _AdmitBeforeTls(factory(), guard, context, self.handshakes)

            server = await asyncio.get_running_loop().create_server(
                admit_first if implicit else factory, listener.host, listener.port,
                reuse_address=True, reuse_port=app.config.workers > 1)
            self.servers.append(server)
            self.handlers.append(handler)

    def _factory(self, handler: SmtpHandler, name: str, mode: str, implicit: bool,
                 context: ssl.SSLContext, guard: ListenerGuard,
                 mechanisms: tuple[str, ...]) -> Callable[[], MssSMTP]:
        cfg = self.runtime.app.config.smtp
        loop = asyncio.get_running_loop()

        def factory() -> MssSMTP:
            smtp = MssSMTP(
                handler, listener=name, guard=guard, budget=self.runtime.limits.budget,
                line_length_limit=cfg.line_length_limit,
                data_timeout=cfg.data_timeout, max_errors=cfg.max_errors,
                preauth_timeout=cfg.preauth_timeout,
                implicit_tls=implicit, offer_auth=mode in ("submission", "relay"),
                mechanisms=mechanisms,
                hostname=cfg.hostname, ident="mss", data_size_limit=cfg.max_message_size,
                tls_context=None if implicit else context,
                require_starttls=not implicit,  # no mail and no credential in clear text
                timeout=cfg.session_timeout,
                auth_required=mode == "submission", auth_require_tls=not implicit,
                decode_data=False, loop=loop,
            )
            self.protocols.add(smtp)
            return smtp

        return factory

    def _connected(self) -> list[MssSMTP]:
        return [proto for proto in self.protocols if proto.transport is not None]

    async def stop(self, deadline: float) -> None:
        for server in self.servers:
            server.close()  # no new connections
        for task in list(self.handshakes):  # not a session yet: nothing in flight
            task.cancel()
        while time.monotonic() < deadline and any(p.busy for p in self._connected()):
            await asyncio.sleep(0.02)  # DATA in flight: its reply is still due
        for proto in self._connected():
            proto.shut_down()  # 421 4.3.2 and close
        await self._wait_closed(deadline)
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        self.handlers.clear()

    async def _wait_closed(self, deadline: float) -> None:
        """Until every connection is gone and every handshake ended, CLOSE_GRACE seconds
        at most (a TLS close waits for the peer's close_notify, which a client may never
        send): what is left then is aborted."""
        until = time.monotonic() + min(CLOSE_GRACE, remaining(deadline, STOP_FLOOR))
        while (self._connected() or self.handshakes) and time.monotonic() < until:
            await asyncio.sleep(0.02)
        for proto in self._connected():
            if proto.transport is not None:
                proto.transport.abort()  # type: ignore[attr-defined]
