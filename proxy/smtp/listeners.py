"""Start the SMTP listeners a configuration enables."""

from __future__ import annotations

import asyncio
import ssl

from mss.app import App
from mss.committer import GroupCommitter
from mss.limits import ListenerGuard, ProcessLimits
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


async def start_smtp(app: App, committer: GroupCommitter, whitelist: LiveWhitelist,
                     tls: dict[str, ssl.SSLContext], verifier: PeerVerifier | None = None,
                     limits: ProcessLimits | None = None
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
                              verifier=verifier, throttle=throttle)
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

        server = await loop.create_server(factory, listener.host, listener.port,
                                          ssl=context if implicit else None,
                                          ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT
                                          if implicit else None,
                                          reuse_address=True,
                                          reuse_port=app.config.workers > 1)
        servers.append(server)
        handlers.append(handler)
    return servers, handlers
