"""The portal's pages and autoconfiguration answers (aiohttp.web handlers, jinja2 pages).

Reads run on the node's reader engine in an executor thread, writes through the group
committer with their audit record in the same transaction (never acknowledged before it
is committed). Every page but the login and autoconfig ones needs a logged-in session;
every POST a CSRF token and, when the browser sends one, our own Origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web
from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from mss.addresses import AddressError, normalize_address
from mss.config import Config
from mss.identity.rp import LoginFailed, RelyingParty
from mss.mailstore import app_passwords, domains
from mss.mailstore.errors import StoreError
from mss.mailstore.mailboxes import Mailbox
from mss.runtime import Runtime
from proxy.portal import autoconfig, history, people, sessions
from proxy.portal.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    foreign_origin,
    same_token,
    security_headers,
    set_cookie,
)

log = structlog.get_logger("proxy.portal")
T = TypeVar("T")
HERE = str(Path(__file__).parent)  # templates/ and static/
SCOPES = ("imap", "smtp")
MAX_LABEL = 64
MAX_BODY = 64 * 1024  # octets of a request body (forms, autodiscover)
LISTENER = "portal"


@dataclass(frozen=True)
class Settings:
    idle: float
    maximum: float
    login_timeout: float
    origin: str  # https://host[:port], the Origin of our pages
    redirect_uri: str


def settings_of(config: Config) -> Settings:
    cfg, lc = config.portal, config.listeners[LISTENER]
    public = cfg.public_url or f"https://{lc.public_name or config.smtp.hostname}:{lc.port}"
    parts = urlsplit(public)
    return Settings(cfg.session_idle, cfg.session_max, cfg.login_timeout,
                    f"{parts.scheme}://{parts.netloc}", public + "/login/callback")


class Portal:
    """The aiohttp application of one serving process."""

    def __init__(self, runtime: Runtime, rp: RelyingParty | None) -> None:
        self.runtime = runtime
        self.app = runtime.app
        self.rp = rp
        self.settings = settings_of(self.app.config)

    # ------------------------------------------------------------------ plumbing
    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[security_headers], client_max_size=MAX_BODY)
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(Path(HERE, "templates")),
                             autoescape=jinja2.select_autoescape(default=True))
        app.router.add_get("/", self.home)
        app.router.add_get("/login", self.login)
        app.router.add_get("/login/callback", self.callback)
        app.router.add_post("/logout", self.logout)
        app.router.add_post("/app-passwords", self.create_app_password)
        app.router.add_post("/app-passwords/{id:[0-9]+}/revoke", self.revoke_app_password)
        app.router.add_get("/history", self.history)
        app.router.add_get("/settings", self.client_settings)
        app.router.add_static("/static/", Path(HERE, "static"), show_index=False)
        for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
            app.router.add_get(path, self.thunderbird)
        for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
            app.router.add_post(path, self.autodiscover)
        return app

    async def read(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.app.reader.connect() as conn:
                return work(conn)
        return await asyncio.get_running_loop().run_in_executor(None, run)

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await self.runtime.committer.run(work)

    def record(self, request: web.Request, event: Event, outcome: Outcome = Outcome.SUCCESS,
               session: sessions.Session | None = None, **fields: Any) -> AuditRecord:
        fields.setdefault("actor", fields.get("mailbox") or request.remote)
        return AuditRecord(event, outcome, remote_addr=request.remote,
                           session=session.public_id if session else None,
                           listener=LISTENER, **fields)

    async def refuse(self, request: web.Request, reason: str,
                     session: sessions.Session | None = None) -> web.Response:
        """403, audited portal.refused."""
        record = self.record(request, Event.PORTAL_REFUSED, Outcome.MINOR_FAILURE, session,
                             reason=reason, detail={"path": request.path[:200]})
        self.runtime.committer.submit(lambda conn: append(conn, [record]))
        return self.page(request, "error.html", {"message": "This request was refused."},
                         status=403)

    def page(self, request: web.Request, template: str, context: dict[str, Any],
             status: int = 200) -> web.Response:
        return aiohttp_jinja2.render_template(template, request, context, status=status)

    async def session_of(self, request: web.Request) -> sessions.Session | None:
        """The logged-in session of the request, or None (expired ones are deleted)."""
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            return None
        found = await self.read(lambda conn: sessions.find(conn, secret))
        now, s = time.time(), self.settings
        if found is None or not found.logged_in:
            return None
        if not sessions.alive(found, now, idle=s.idle, maximum=s.maximum,
                              login_timeout=s.login_timeout):
            await self.write(lambda conn: sessions.end(conn, found))
            return None
        if now - found.last_seen >= sessions.TOUCH_EVERY:
            await self.write(lambda conn: sessions.touch(conn, found, now))
        return found

    async def person(self, session: sessions.Session) -> people.Person:
        assert session.national_id is not None
        national_id = session.national_id
        return await self.read(lambda conn: people.person(conn, national_id))

    async def logged_in(self, request: web.Request
                        ) -> tuple[sessions.Session, people.Person] | web.Response:
        session = await self.session_of(request)
        if session is None:
            return self.login_page(request, expired=SESSION_COOKIE in request.cookies)
        return session, await self.person(session)

    async def posted(self, request: web.Request
                     ) -> tuple[sessions.Session, people.Person, dict[str, str]] | web.Response:
        """A POST of a logged-in session with its CSRF token and our Origin."""
        session = await self.session_of(request)
        if session is None:
            return self.login_page(request, expired=True)
        if foreign_origin(request, self.settings.origin):
            return await self.refuse(request, "foreign origin", session)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not same_token(form.get("csrf"), session.csrf):
            return await self.refuse(request, "bad CSRF token", session)
        return session, await self.person(session), form

    async def posted_for_mailbox(self, request: web.Request) -> tuple[
            sessions.Session, people.Person, dict[str, str], Mailbox] | web.Response:
        """:meth:`posted`, naming one of the person's own mailboxes (field ``mailbox``)."""
        got = await self.posted(request)
        if isinstance(got, web.Response):
            return got
        session, person, form = got
        mailbox = person.owned(form.get("mailbox", ""))
        if mailbox is None:
            return await self.refuse(request, "mailbox not the session's", session)
        return session, person, form, mailbox

    def login_page(self, request: web.Request, *, expired: bool = False,
                   message: str = "") -> web.Response:
        response = self.page(request, "login.html", {
            "enabled": self.rp is not None, "expired": expired, "message": message})
        if expired:
            clear_cookie(response, SESSION_COOKIE)
        return response

    # ------------------------------------------------------------------ login
    async def login(self, request: web.Request) -> web.StreamResponse:
        """Start the authorization code flow (OIDC Core §3.1.2.1) with PKCE (RFC 7636)."""
        rp = self.rp
        if rp is None:
            return self.login_page(request, message="No login issuer is configured.")
        try:
            begun = await rp.begin(self.settings.redirect_uri)
        except LoginFailed as exc:
            log.warning("portal login unavailable", reason=exc.reason)
            return self.login_page(request, message="The login service is unreachable; "
                                   "try again later.")
        now, s = time.time(), self.settings

        def start(conn: Connection) -> str:
            sessions.prune(conn, now, idle=s.idle, maximum=s.maximum,
                           login_timeout=s.login_timeout)
            secret, _ = sessions.start_login(conn, rp.issuer_name, begun.state, begun.nonce,
                                             begun.verifier, now)
            return secret
        secret = await self.write(start)
        response = web.HTTPFound(begun.url)
        set_cookie(response, LOGIN_COOKIE, secret, max_age=int(s.login_timeout))
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """The issuer's redirect (OIDC Core §3.1.2.5): state, code exchange, ID token,
        the person's mailboxes; then a new session under a new secret."""
        secret = request.cookies.get(LOGIN_COOKIE, "")
        pending = await self.read(lambda conn: sessions.find(conn, secret)) if secret else None
        s, now = self.settings, time.time()
        if (pending is None or pending.logged_in or self.rp is None
                or not sessions.alive(pending, now, idle=s.idle, maximum=s.maximum,
                                      login_timeout=s.login_timeout)):
            return await self.login_failed(request, None, "no login in progress or it "
                                           "expired")
        if not same_token(request.query.get("state"), pending.state or ""):
            return await self.login_failed(request, pending, "state mismatch")
        if "error" in request.query:  # RFC 6749 §4.1.2.1
            return await self.login_failed(request, pending, "issuer answered error "
                                           f"{request.query['error'][:64]!r}")
        code = request.query.get("code", "")
        if not code:
            return await self.login_failed(request, pending, "no code")
        try:
            identity = await self.rp.complete(code, pending.verifier or "", pending.nonce or "",
                                              s.redirect_uri)
        except LoginFailed as exc:
            return await self.login_failed(request, pending, exc.reason)
        person = await self.read(lambda conn: people.person(conn, identity.national_id))
        if not person.mailboxes:
            return await self.login_failed(request, pending, "no mailbox for this national id",
                                           identity.audit_detail())

        def log_in(conn: Connection) -> tuple[str, sessions.Session]:
            made = sessions.log_in(conn, pending, identity.national_id, identity.subject, now)
            append(conn, [self.record(request, Event.PORTAL_LOGIN, session=made[1],
                                      mailbox=m.address, detail=identity.audit_detail())
                          for m in person.mailboxes])
            return made
        try:
            new_secret, _ = await self.write(log_in)
        except LookupError:
            return await self.login_failed(request, pending, "callback replayed")
        # a page, not a redirect: the Strict session cookie is then sent with the next
        # request, a same-site navigation (after the issuer's cross-site redirect it is not)
        response = self.page(request, "continue.html", {})
        set_cookie(response, SESSION_COOKIE, new_secret)
        clear_cookie(response, LOGIN_COOKIE)
        return response

    async def login_failed(self, request: web.Request, pending: sessions.Session | None,
                           reason: str, detail: dict[str, str] | None = None) -> web.Response:
        record = self.record(request, Event.PORTAL_LOGIN, Outcome.SERIOUS_FAILURE, pending,
                             reason=reason[:200], detail=detail or {})

        def fail(conn: Connection) -> None:
            if pending is not None:
                sessions.end(conn, pending)
            append(conn, [record])
        await self.write(fail)
        log.info("portal login failed", reason=reason, remote=request.remote)
        response = self.login_page(request, message="The login did not succeed.")
        response.set_status(403)
        clear_cookie(response, LOGIN_COOKIE)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        got = await self.posted(request)
        if isinstance(got, web.Response):
            return got
        session, person, _ = got

        def end(conn: Connection) -> None:
            sessions.end(conn, session)
            append(conn, [self.record(request, Event.PORTAL_LOGOUT, session=session,
                                      mailbox=m.address) for m in person.mailboxes])
        await self.write(end)
        response = self.login_page(request, message="You are logged out.")
        clear_cookie(response, SESSION_COOKIE)
        return response

    # ------------------------------------------------------------------ pages
    async def home(self, request: web.Request) -> web.StreamResponse:
        got = await self.logged_in(request)
        if isinstance(got, web.Response):
            return got
        session, person = got
        own = person.own
        listed = await self.read(lambda conn: [(m, app_passwords.list_for(conn, m.id))
                                               for m in own])
        return self.page(request, "home.html", {
            "session": session, "person": person, "mailboxes": listed, "scopes": SCOPES,
            "fmt": _time})

    async def create_app_password(self, request: web.Request) -> web.StreamResponse:
        got = await self.posted_for_mailbox(request)
        if isinstance(got, web.Response):
            return got
        session, person, form, mailbox = got
        label = " ".join(form.get("label", "").split())[:MAX_LABEL]
        scopes = tuple(s for s in SCOPES if form.get(f"scope_{s}") == "on")
        if not label or not scopes:
            return self.page(request, "error.html", {
                "message": "Give the device a name and at least one use (IMAP, SMTP)."},
                status=400)

        def create(conn: Connection) -> tuple[Any, str]:
            made, secret = app_passwords.create(conn, mailbox.id, label, scopes, "portal")
            append(conn, [self.record(request, Event.PORTAL_APP_PASSWORD_CREATE,
                                      session=session, mailbox=mailbox.address,
                                      detail={"app_password": made.id,
                                              "scopes": list(scopes)})])
            return made, secret
        try:
            made, secret = await self.write(create)
        except StoreError as exc:  # too many active ones, a control character
            return self.page(request, "error.html", {"message": str(exc)}, status=400)
        return self.page(request, "created.html", {
            "session": session, "person": person, "mailbox": mailbox, "made": made,
            "secret": secret, "settings": autoconfig.client_settings(self.app.config)})

    async def revoke_app_password(self, request: web.Request) -> web.StreamResponse:
        got = await self.posted_for_mailbox(request)
        if isinstance(got, web.Response):
            return got
        session, _, _, mailbox = got
        ident = int(request.match_info["id"])

        def revoke(conn: Connection) -> bool:
            done = app_passwords.revoke(conn, mailbox.id, ident)
            if done:
                append(conn, [self.record(request, Event.PORTAL_APP_PASSWORD_REVOKE,
                                          session=session, mailbox=mailbox.address,
                                          detail={"app_password": ident})])
            return done
        if not await self.write(revoke):
            return await self.refuse(request, "app password not the mailbox's or revoked",
                                     session)
        raise web.HTTPSeeOther("/")

    async def history(self, request: web.Request) -> web.StreamResponse:
        got = await self.logged_in(request)
        if isinstance(got, web.Response):
            return got
        session, person = got
        wanted = request.query.get("mailbox", "")
        chosen = [m for m in person.mailboxes if not wanted or m.address == wanted]
        if not chosen:
            return await self.refuse(request, "mailbox not the session's", session)
        before = request.query.get("before", "")
        before_id = int(before) if before.isdigit() else None
        addresses = [m.address for m in chosen]
        labels = history.default_labels()

        def read(conn: Connection) -> list[history.Access]:
            return history.history(conn, addresses, labels, before_id=before_id)
        rows = await self.read(read)
        record = self.record(request, Event.PORTAL_HISTORY_READ, session=session,
                             mailbox=addresses[0] if len(addresses) == 1 else None,
                             actor=person.own[0].address if person.own else person.national_id,
                             detail={"mailboxes": addresses, "rows": len(rows)})
        await self.write(lambda conn: append(conn, [record]))
        return self.page(request, "history.html", {
            "session": session, "person": person, "rows": rows, "wanted": wanted,
            "more": rows[-1].id if len(rows) == history.PAGE else None})

    async def client_settings(self, request: web.Request) -> web.StreamResponse:
        got = await self.logged_in(request)
        if isinstance(got, web.Response):
            return got
        session, person = got
        return self.page(request, "settings.html", {
            "session": session, "person": person,
            "settings": autoconfig.client_settings(self.app.config)})

    # ------------------------------------------------------------------ autoconfig
    async def hosted_domain(self, domain: str) -> bool:
        return await self.read(lambda conn: domains.is_hosted_domain(conn, domain))

    async def thunderbird(self, request: web.Request) -> web.StreamResponse:
        """Thunderbird autoconfig: ?emailaddress=, else the autoconfig.<domain> Host."""
        address = request.query.get("emailaddress", "")
        domain = address.rpartition("@")[2] if address else \
            (request.host.rpartition(":")[0] or request.host).removeprefix("autoconfig.")
        try:
            domain = normalize_address(f"x@{domain}").partition("@")[2]
        except AddressError:
            raise web.HTTPBadRequest(text="bad emailaddress") from None
        if not await self.hosted_domain(domain):
            raise web.HTTPNotFound(text="no such domain")
        body = autoconfig.thunderbird(autoconfig.client_settings(self.app.config), domain)
        return web.Response(body=body, content_type="application/xml", charset="utf-8")

    async def autodiscover(self, request: web.Request) -> web.StreamResponse:
        """Outlook autodiscover, the POX protocol (MS-OXDSCLI §2.2.3/2.2.4)."""
        try:
            address = normalize_address(autoconfig.autodiscover_address(await request.read()))
        except (autoconfig.AutodiscoverError, AddressError):
            return web.Response(body=autoconfig.autodiscover_error("600", "Invalid Request"),
                                status=400,
                                content_type="application/xml", charset="utf-8")
        if not await self.hosted_domain(address.partition("@")[2]):
            return web.Response(body=autoconfig.autodiscover_error("603", "No such domain"),
                                content_type="application/xml", charset="utf-8")
        body = autoconfig.autodiscover(autoconfig.client_settings(self.app.config), address)
        return web.Response(body=body, content_type="application/xml", charset="utf-8")


def _time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
