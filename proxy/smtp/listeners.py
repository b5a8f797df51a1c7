"""Start the SMTP listeners a configuration enables."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from mss.app import App
from mss.committer import GroupCommitter
from mss.limits import Admission, ListenerGuard, ProcessLimits
from mss.mailstore import Mailstore
from mss.throttle import Throttle
from proxy.smtp.handler import SmtpHandler
from proxy.smtp.protocol import MssSMTP
from trustspace.cache import LiveWhitelist
from trustspace.verifier import PeerVerifier

# listener name -> (mode, implicit TLS)
LISTENER_KINDS: dict[str, tuple[str, bool]] = {
    "mx": ("mx", False),
    "submission": ("submission", False),
    "submissions": ("submission", True),
    "relay": ("relay", False),
}
TLS_HANDSHAKE_TIMEOUT = 30.0  # seconds for the implicit TLS handshake (submissions)


class _AdmitBeforeTls(asyncio.Protocol):
    """submissions (RFC 8314 §3.3): the connection caps are checked at accept(), before
    any TLS work, so a refused client costs no handshake (it is closed, as imaps does);
    an admitted one gets the handshake (bounded) and then its SMTP session. Reading stays
    paused until ``start_tls`` so that the client's hello waits in the socket."""

    handshakes: set[asyncio.Task[None]] = set()  # referenced while running

    def __init__(self, smtp: MssSMTP, guard: ListenerGuard, context: ssl.SSLContext) -> None:
        self.smtp, self.guard, self.context = smtp, guard, context

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


async def start_smtp(app: App, committer: GroupCommitter, whitelist: LiveWhitelist,
                     tls: dict[str, ssl.SSLContext], verifier: PeerVerifier | None = None,
                     limits: ProcessLimits | None = None, *, mailstore: Mailstore
                     ) -> tuple[list[asyncio.Server], list[SmtpHandler]]:
    loop = asyncio.get_running_loop()
    cfg = app.config.smtp
    servers: list[asyncio.Server] = []
    handlers: list[SmtpHandler] = []
    throttle = Throttle(cfg.auth_failures, cfg.auth_window, cfg.auth_lockout)
    budget = limits.budget if limits else None  # shared by every session of the process
    for name, listener in app.config.listeners.items():
        if not listener.enabled or name not in LISTENER_KINDS:  # IMAP: proxy/imap/listeners
            continue
        mode, implicit = LISTENER_KINDS[name]
        handler = SmtpHandler(app, committer, whitelist,
                              "submission" if mode == "submission" else mode,  # type: ignore[arg-type]
                              verifier=verifier, throttle=throttle, mailstore=mailstore)
        # MX and relay ask for a client certificate (verified after the handshake)
        context = tls["submission" if mode == "submission" else "mx"]
        guard = ListenerGuard.of(listener, committer, app.config.limits.report_interval,
                                 limits.files if limits else None)

        def factory(handler: SmtpHandler = handler, name: str = name, mode: str = mode,
                    implicit: bool = implicit, context: ssl.SSLContext = context,
                    guard: ListenerGuard = guard) -> MssSMTP:
            return MssSMTP(
                handler, listener=name, guard=guard, budget=budget,
                line_length_limit=cfg.line_length_limit,
                data_timeout=cfg.data_timeout, max_errors=cfg.max_errors,
                preauth_timeout=cfg.preauth_timeout,
                implicit_tls=implicit, offer_auth=mode in ("submission", "relay"),
                hostname=cfg.hostname, ident="mss", data_size_limit=cfg.max_message_size,
                tls_context=None if implicit else context,
                require_starttls=not implicit,  # no mail and no credential in clear text
                timeout=cfg.session_timeout,
                auth_required=mode == "submission", auth_require_tls=not implicit,
                decode_data=False, loop=loop,
            )

        def admit_first(factory: Callable[[], MssSMTP] = factory, guard: ListenerGuard = guard,
                        context: ssl.SSLContext = context) -> _AdmitBeforeTls:
            return _AdmitBeforeTls(factory(), guard, context)

        server = await loop.create_server(admit_first if implicit else factory,
                                          listener.host, listener.port,
                                          reuse_address=True,
                                          reuse_port=app.config.workers > 1)
        servers.append(server)
        handlers.append(handler)
    return servers, handlers
