"""The portal listener, one component of ``mss serve``: aiohttp.web over TLS (the node's
tls.cert_file) on listeners.portal, served when portal.enabled. The OIDC relying party is
built at start on the process's TokenVerifier, for the [[auth.oidc]] issuer portal.issuer
names."""

from __future__ import annotations

import structlog
from aiohttp import web

from mss.identity.issuer import read_client_secret
from mss.identity.rp import RelyingParty
from mss.identity.tokens import TokenVerifier
from mss.runtime import Runtime
from proxy.portal.web import LISTENER, Portal

log = structlog.get_logger("proxy.portal")
KEEPALIVE = 75.0  # seconds an idle HTTP/1.1 connection is kept
MAX_FIELD = 8190  # octets of a request line or header (aiohttp's default, stated)
SHUTDOWN = 5.0  # seconds requests in flight get at a stop (they are short)


def relying_party(runtime: Runtime, verifier: TokenVerifier) -> RelyingParty:
    cfg = runtime.app.config.portal
    return RelyingParty(verifier, cfg.issuer, client_id=cfg.client_id,
                        client_secret=read_client_secret(cfg.client_secret_file,
                                                         "portal.client_secret_file"),
                        scope=cfg.scope)


class PortalListener:
    name = "portal"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = self.runtime.app
        listener = app.config.listeners[LISTENER]
        # the process's TokenVerifier (started with the runtime's services): portal.issuer
        # names an [[auth.oidc]] issuer (mss.config), so the runtime built one
        verifier = self.runtime.authenticator.tokens
        assert verifier is not None
        portal = Portal(self.runtime, relying_party(self.runtime, verifier))
        self.runner = web.AppRunner(portal.web_app(), access_log=None,
                                    keepalive_timeout=KEEPALIVE, max_line_size=MAX_FIELD,
                                    max_field_size=MAX_FIELD, handle_signals=False,
                                    shutdown_timeout=SHUTDOWN)
        await self.runner.setup()
        site = web.TCPSite(self.runner, listener.host, listener.port,
                           ssl_context=self.runtime.tls.submission, reuse_address=True,
                           reuse_port=app.config.workers > 1)
        await site.start()
        log.info("portal listening", host=listener.host, port=listener.port)

    async def stop(self, deadline: float) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:  # no new connection; requests in flight get SHUTDOWN s
            await runner.cleanup()
