"""Typed configuration loaded from one TOML file: one schema, read and rendered from it.

The dataclasses below are the schema. Each key is a field declared once with :func:`key`:
its default, the check its value must pass and its doc; a section is a dataclass whose
docstring documents its table. :func:`parse_config` walks the fields (no default is repeated
in a parse function) and the same declaration renders ``config/mss.toml``
(``python -m mss.config --write``; ``--check`` compares). A key or table that no section
declares (a typo: ``crl_file`` for ``crl_files``) is an error naming its path and the nearest
valid name, never silently ignored. Relative paths are resolved against ``server.data_dir``
so a data dir can be moved as a whole. An invalid value raises :class:`ConfigError` naming
the key's full path and what is wrong; ``mss serve`` and every CLI command stop on it
(exit 2) before opening any socket.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import os
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Self, TypeVar, cast, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from mss.addresses import AddressError, normalize_address, normalize_domain

DEFAULT_CONFIG_NAME = "mss.toml"
T = TypeVar("T")


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


class Invalid(ValueError):
    """A rule across the keys of one section broken: *key* is relative to the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# ----------------------------------------------------------------------------- declaring


@dataclass(frozen=True)
class Check:
    """A rule one value follows; *text* completes "must be ..." in the error."""

    text: str
    ok: Callable[[Any], bool]
    typed: bool = True  # the text follows the type's noun: "an integer >= 1"


def ge(low: float) -> Check:
    return Check(f">= {low}", lambda v: v >= low)


def gt(low: float) -> Check:
    return Check(f"> {low}", lambda v: v > low)


def within(low: float, high: float, *, below: bool = False) -> Check:
    text = f"in [{low}, {high})" if below else f"between {low} and {high}"
    return Check(text, lambda v: low <= v < high if below else low <= v <= high)


def one_of(*choices: str) -> Check:
    return Check(" or ".join(json.dumps(c) for c in choices), lambda v: v in choices, False)


def scheme(*schemes: str, empty: bool = False) -> Check:
    """A URL of one of *schemes* ("" too when *empty*)."""
    return Check(f"a URL starting with {' or '.join(schemes)}" + (' (or "")' if empty else ""),
                 lambda v: v.startswith(schemes) or empty and v == "", False)


Like = str | Callable[[Callable[[str], Any]], Any]


def key(default: Any = MISSING, doc: str = "", check: Check | None = None, *,
        like: Like | None = None, example: Any = None, norm: Callable[[Any], Any] | None = None,
        single: str | None = None, names: Mapping[str, Any] | None = None,
        base: bool = False) -> Any:
    """A key of its section's table. *like*: absent, it takes this other key's value (a
    path: "tls.ca_file", a sibling: "host") or what the function computes from the keys read
    so far (its argument looks them up); *example* is rendered commented out when there is
    no default; *norm* normalises a given value (ValueError: invalid); *single*: the one-item
    spelling of a list (``url`` for ``urls``); *names*: the known tables of a ``dict`` of
    sections (name -> defaults) or the known keys of a ``dict`` of strings (name -> default);
    *base*: relative paths read after this key are resolved against its value."""
    meta = {"doc": doc, "check": check, "like": like, "example": example, "norm": norm,
            "single": single, "names": names, "base": base}
    if isinstance(default, Mapping):  # a table: each config gets its own dict
        return field(default_factory=lambda: dict(default), metadata=meta)
    if isinstance(default, type):  # a section: its default is its own defaults
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@functools.cache
def _keys(cls: Any) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """The key fields of a section with their types (a field without doc is not a key)."""
    hints = get_type_hints(cls)
    return tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if "doc" in f.metadata)


def _section(kind: Any) -> type | None:
    """The section (dataclass) a key's type holds: D, D | None, tuple[D, ...], dict[str, D]."""
    for arg in (kind, *get_args(kind)):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class ServerConfig:
    """Relative paths below are resolved against server.data_dir, itself relative to the
    directory holding this file."""

    data_dir: Path = key(Path("."), "where the database, keys and PKI live", base=True)
    workers: int = key(1, "serving processes sharing the ports (SO_REUSEPORT); 0: one per "
                       "CPU core", within(0, 64))
    event_loop: str = key("asyncio", "the serving processes' event loop: \"asyncio\" "
                          "(the standard library's) or \"uvloop\" (libuv: less CPU per "
                          "connection; bench/compare.py measures both; the uvloop package "
                          "must be installed)", one_of("asyncio", "uvloop"))
    election_interval: float = key(5.0, "periodic jobs (audit checkpoints and shipping, "
                                   "whitelist fetch, directory sync) run in one process of "
                                   "the cluster: every this many seconds the others try to "
                                   "take over, and the leader checks it still leads", gt(0))


@dataclass(frozen=True)
class DatabaseConfig:
    """SQLite (embedded default, WAL mode, fsync at every commit) or
    postgresql+psycopg://...; a primary and its standby (two sites):
    postgresql+psycopg://user@/db?host=h1:p1&host=h2:p2&target_session_attrs=read-write
    (docs/operations.md)."""

    url: str = key("sqlite:///mss.db", "SQLAlchemy URL (a relative SQLite path: in "
                   "server.data_dir)", scheme("sqlite:", "postgresql"))
    change_poll: float = key(0.2, "SQLite: seconds between reads of the database's change "
                             "counter by each serving process: IDLE sessions and the queue "
                             "worker see other processes' commits within this", gt(0))
    notify_poll: float = key(10.0, "PostgreSQL: other nodes' commits wake IDLE and the queue "
                             "worker at once (LISTEN/NOTIFY); every this many seconds, each "
                             "serving process compares its sleepers with the database anyway "
                             "(commits of the CLI, notifications lost)", gt(0))

    def checked(self) -> Self:
        # several servers (two sites): SQLAlchemy passes libpq a host list as
        # ?host=h1:p1&host=h2:p2 or ?host=h1,h2&port=p1,p2; in "host=h1:p1,h2:p2" the
        # ports would be read as part of the host names (PostgreSQL docs §34.1.1.3)
        query = urlsplit(self.url).query
        hosts = [v for k, v in (kv.partition("=")[::2] for kv in query.split("&"))
                 if k == "host"]
        if any("," in h and ":" in h for h in hosts):
            raise Invalid("url", "a host list with ports is written "
                          "?host=h1:p1&host=h2:p2 (or ?host=h1,h2&port=p1,p2), "
                          f"not host={hosts[0]}")
        return self


@dataclass(frozen=True)
class KeysConfig:
    """Master key versions live in the database, wrapped by a key-encryption key (KEK)
    that never leaves its provider: "file" (master_key_file: 'version:base64' lines, mode
    0600, refused if group/other can read it; copy the same file to every node) or
    "pkcs11" (a non-extractable AES key in an HSM token, made by 'mss keys init-hsm').
    'mss keys rotate' adds a master version in the database and re-wraps every mailbox
    key: every node sharing the database sees it (docs/keys.md)."""

    provider: str = key("file", "where the KEK is", one_of("file", "pkcs11"))
    master_key_file: Path = key(Path("keys/master.key"), "the key file (provider \"file\"; with "
                                "\"pkcs11\", if present: opens what it wrapped until 'mss keys "
                                "rotate' moved every key under the token's KEK)")
    pkcs11_module: Path = key(Path("/usr/lib/softhsm/libsofthsm2.so"),
                              "the PKCS#11 library of the HSM (provider \"pkcs11\")")
    token_label: str = key("mss", "the token holding the KEK")
    key_label: str = key("mss-kek", "the KEK's label in the token")
    pin_file: Path | None = key(None, "the token's user PIN (mode 0600), or pin_env; never "
                                "logged, never in this file", example="keys/hsm.pin")
    pin_env: str | None = key(None, "environment variable holding the PIN",
                              example="MSS_HSM_PIN")


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate chain and key (IGC-Santé SERV SSL in production), and the trust
    anchors the servers our queue delivers to are verified against in the TLS handshake
    (also the default of pki.anchors and of audit.destinations ca_file). Peers' client
    certificates on the MX and relay listeners are verified against pki.anchors, after it."""

    cert_file: Path = key(Path("pki/server.crt"), "PEM certificate chain, leaf first")
    key_file: Path = key(Path("pki/server.key"), "its private key")
    ca_file: Path = key(Path("pki/ca.crt"), "PEM bundle of trust anchors")


def _postmaster(value: str) -> str:
    """smtp.postmaster normalised (an address), or "" when unset."""
    if not value.strip():
        return ""
    try:
        return normalize_address(value)
    except AddressError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP listeners (proxy/smtp)."""

    hostname: str = key("localhost", "greeting, EHLO and Received: headers")
    max_message_size: int = key(50 * 1024 * 1024, "bytes; advertised as SIZE, larger mail "
                                "gets 552", ge(1))
    max_recipients: int = key(100, "per message; more get 452 4.5.3", ge(1))
    session_timeout: float = key(300.0, "seconds of silence between commands", gt(0))
    preauth_timeout: float = key(60.0, "seconds from connecting to AUTH (submission, relay) "
                                 "or to a verified client certificate at MAIL FROM (MX, "
                                 "relay), whatever is sent meanwhile; then 421 4.4.2", gt(0))
    data_timeout: float = key(600.0, "seconds for the whole DATA phase", gt(0))
    line_length_limit: int = key(1000, "octets per line incl. CRLF (RFC 5321 §4.5.3.1.6: "
                                 "at least 1000)", ge(1000))
    max_errors: int = key(20, "bad commands before '421' and close", ge(1))
    auth_failures: int = key(5, "failed AUTHs of one login or from one address ...", ge(1))
    auth_window: float = key(900.0, "... within this many seconds ...", gt(0))
    auth_lockout: float = key(300.0, "... then AUTH gets 454 4.7.0 this long (audited)", gt(0))
    postmaster: str = key("", "RFC 5321 §4.5.1: hosted mailbox (e.g. "
                          "\"admin@demo.mssante.fr\") that receives mail for postmaster@ every "
                          "hosted domain without a postmaster mailbox of its own, and for "
                          "RCPT TO:<Postmaster>; \"\" = none (then only an existing "
                          "postmaster@domain mailbox gets it)", norm=_postmaster)


FRONT_AUTH = ("password", "app-password", "oauthbearer", "xoauth2")  # listeners' default
AUTH_METHODS = one_of("password", "app-password", "oauthbearer", "xoauth2", "external")


@dataclass(frozen=True)
class ListenerConfig:
    """One listener."""

    name: str  # the table's name (listeners.NAME), not a key
    host: str = key("127.0.0.1", "address to bind")
    port: int = key(0, "TCP port", within(0, 65535))
    enabled: bool = key(True, "false: not started")
    max_connections: int = key(1000, "open connections in total", ge(1))
    max_connections_per_address: int = key(100, "from one client IP address", ge(1))
    max_preauth: int = key(500, "not yet authenticated", ge(1))
    max_preauth_per_address: int = key(32, "not yet authenticated, from one client IP address "
                                       "(above the 20 parallel sessions of a Postfix peer)",
                                       ge(1))
    # issue 15: which login mechanisms a submission or IMAP listener offers (the "fronts"
    # of EX_LPS_0300); the MX and relay listeners ignore it
    auth: tuple[str, ...] = key(FRONT_AUTH,
                                "login mechanisms offered (submission, IMAP): \"password\" "
                                "(the mailbox password, AUTH PLAIN/LOGIN, IMAP LOGIN), "
                                "\"app-password\" (per device, same wire mechanisms), "
                                "\"oauthbearer\" and \"xoauth2\" (tokens of [[auth.oidc]] "
                                "issuers, RFC 7628), \"external\" (a client certificate bound "
                                "to an APP mailbox, RFC 4422 appendix A)", AUTH_METHODS)
    public_name: str = key("", "the host name clients reach this listener by (SRV targets of "
                           "'mss dns records', autoconfig); \"\": smtp.hostname")
    # issue 18: the XDM policy of this SMTP listener (docs/mssante-messages.md)
    xdm: str = key("", "SMTP listeners: IHE XDM and X-MSS checks of this listener, \"check\", "
                   "\"refuse\" or \"off\"; \"\": messages.xdm",
                   one_of("", "check", "refuse", "off"))


XDM_POLICIES = one_of("check", "refuse", "off")


@dataclass(frozen=True)
class MessagesConfig:
    """What the SMTP listeners check of MSSanté messages (docs/mssante-messages.md): the
    IHE XDM attachment (ITI-32) and the X-MSS header fields (Référentiel #2 ECO.2.4)."""

    xdm: str = key("check", "\"check\": XDM packages and X-MSS fields read and checked, "
                   "the message accepted and what is wrong audited (smtp.message.accepted "
                   "detail.xdm_problems); \"refuse\": a message with a problem gets 554 5.6.0 "
                   "with a public reason; \"off\": not read (no patient pseudonym either). "
                   "Each SMTP listener may set its own (listeners.NAME.xdm)", XDM_POLICIES)
    require_nil: bool = key(False, "submission and relay: a message without an X-MSS-NIL "
                            "field (the sending product's reference) gets 550 5.6.0")


def _listener(port: int, doc: str, **defaults: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType({"port": port, "doc": doc, **defaults})


# the four EX_LPS_0300 fronts (PSC tokens, client certificates): 'mss init' writes their auth
FRONTS = ("submission", "imap", "submission-cert", "imap-cert")
LISTENERS = MappingProxyType({  # name -> its defaults and what it serves (its header comment)
    "mx": _listener(2525, "other operators: STARTTLS required, no AUTH"),
    "submission": _listener(2587, "professionals' clients: STARTTLS, then AUTH"),
    "submissions": _listener(2465, "same, implicit TLS (RFC 8314)"),
    "relay": _listener(2526, "institutions' mail servers (mss relay add): STARTTLS, "
                       "then a registered client certificate or AUTH"),
    "imap": _listener(2143, "mail clients: IMAP, STARTTLS before any login"),
    "imaps": _listener(2993, "same, implicit TLS (RFC 8314); no ALPN required"),
    # issue 15, EX_LPS_0300: the client-certificate fronts of professional software (APP
    # mailboxes, SASL EXTERNAL); submission and imap above are the Pro Santé Connect fronts
    "submission-cert": _listener(2588, "software's SMTP front: STARTTLS asking for a client "
                                 "certificate, then AUTH EXTERNAL (APP mailboxes)",
                                 auth=("external",)),
    "imap-cert": _listener(2144, "software's IMAP front: STARTTLS asking for a client "
                           "certificate, then AUTHENTICATE EXTERNAL", auth=("external",)),
    "portal": _listener(2443, "professionals' browsers (HTTPS): the portal, Thunderbird "
                        "autoconfig, Outlook autodiscover; served only with portal.enabled"),
    # issue 17: monitoring, plain HTTP on loopback (docs/metrics.md)
    "admin": _listener(2909, "operators' monitoring (HTTP, no TLS: keep it on loopback): "
                       "/metrics (Prometheus), /healthz, /readyz"),
})


@dataclass(frozen=True)
class PkiConfig:
    """Verification of the client certificates of peer operators (MX) and institutions'
    servers (relay), done after the TLS handshake so that every refusal gets an SMTP reply
    and an audit reason (docs/trust-space.md "Inbound"). The MX requires a client
    certificate. The same checks (revocation included) apply to the servers our queue
    delivers to (docs/trust-space.md "Outbound delivery")."""

    anchors: Path = key(Path("pki/ca.crt"), "PEM bundle of trust anchors (production: the "
                        "IGC-Santé roots)", like="tls.ca_file")
    intermediates: Path | None = key(None, "PEM bundle of intermediate CAs (e.g. IGC-Santé "
                                     "ORGANISATIONS), for peers that send their leaf alone",
                                     example="pki/intermediates.crt")
    crl_files: tuple[Path, ...] = key((), "CRL files (PEM or DER), re-read when they change")
    crl_urls: tuple[str, ...] = key((), "CRLs fetched over http(s), cached on disk and in "
                                    "memory", scheme("http://", "https://"))
    crl_unavailable: str = key("fail-closed", "no current CRL for the peer's issuer (while "
                               "crl_files or crl_urls are set): \"fail-closed\" answers "
                               "454 4.7.0 (try later), \"fail-open\" accepts (audited)",
                               one_of("fail-closed", "fail-open"))
    crl_fetch_timeout: float = key(10.0, "seconds per CRL download", gt(0))
    crl_refresh_interval: float = key(3600.0, "seconds between downloads (earlier at "
                                      "nextUpdate)", gt(0))
    crl_retry_interval: float = key(60.0, "seconds before retrying a failed download", gt(0))
    crl_cache_dir: Path = key(Path("crl-cache"), "downloaded CRLs")
    verify_cache_ttl: float = key(300.0, "seconds a verification result is reused for the "
                                  "same chain (never past a certificate's validity)", ge(0))


@dataclass(frozen=True)
class ImapConfig:
    """The IMAP server (proxy/imap)."""

    session_timeout: float = key(1800.0, "seconds without a command once logged in "
                                 "(RFC 3501 §5.4: at least 30 minutes)", gt(0))
    preauth_timeout: float = key(60.0, "seconds to log in after connecting", gt(0))
    max_line_length: int = key(65536, "bytes of one command line, literals excluded",
                               ge(1000))
    max_literal_size: int = key(50 * 1024 * 1024, "APPENDLIMIT (RFC 7889): largest literal",
                                ge(1), like="smtp.max_message_size")
    max_errors: int = key(20, "BAD replies before the connection is closed", ge(1))
    idle_poll: float = key(30.0, "safety poll of the folders IDLE sessions selected (one read "
                           "per process): commits wake them at once (this process) or within "
                           "database.change_poll (others)", gt(0))
    login_failures: int = key(5, "failed logins of one user or from one address ...", ge(1))
    login_window: float = key(900.0, "... within this many seconds ...", gt(0))
    login_lockout: float = key(300.0, "... lock logins of that user / address this long",
                               gt(0))
    enabled_check: float = key(10.0, "seconds between checks that a logged-in session's "
                               "mailbox is still enabled (a disabled one is logged out)", gt(0))


@dataclass(frozen=True)
class SessionsConfig:
    """The session registry (mss sessions list / end, docs/sessions.md): every serving
    process records its logged-in sessions in the database, with a heartbeat."""

    node: str = key("", "this node's name in mss sessions list (\"\": the host name)")
    heartbeat: float = key(30.0, "seconds between heartbeats of each serving process; the "
                           "sessions of a process silent for 3 heartbeats are no longer "
                           "listed (it died), then removed", gt(0))


@dataclass(frozen=True)
class LifecycleConfig:
    """Mailbox lifecycle (issue 16, docs/lifecycle.md): suspension and deletion."""

    suspended_inbound: str = key("defer", "mail for a suspended mailbox (or one of a "
                                 "suspended domain): \"defer\" answers 450 4.2.1 (the sender "
                                 "retries), \"keep\" accepts and stores it",
                                 one_of("defer", "keep"))
    delete_grace: float = key(30 * 86400.0, "seconds between 'mss mailbox delete' and the "
                              "purge (mss mailbox undelete meanwhile); then the mailbox key is "
                              "destroyed and its rows removed", ge(0))
    purge_interval: float = key(300.0, "seconds between rounds of the purge job of mss serve "
                                "(mailboxes whose grace period ended; 0: off)", ge(0))


@dataclass(frozen=True)
class SendingLimitsConfig:
    """Sending limits per hour window (mss/sending.py, docs/limits.md), counted in the
    database so that every worker and node adds up: over one, SMTP answers 451 4.7.1 (at
    MAIL FROM for messages, at RCPT TO for recipients) and IMAP APPEND NO [LIMIT]; audited
    limit.exceeded once per key, limit and window. 0 = no limit."""

    window: float = key(3600.0, "seconds of one counting window (fixed windows, aligned on "
                        "the epoch)", gt(0))
    messages_per_mailbox: int = key(200, "messages a mailbox may submit per window "
                                    "(submission listeners)", ge(0))
    recipients_per_mailbox: int = key(1000, "recipients of those messages per window", ge(0))
    messages_per_relay: int = key(5000, "messages a relay (mss relay add) may send per window",
                                  ge(0))
    recipients_per_relay: int = key(20000, "recipients of those messages per window", ge(0))
    append_bytes_per_mailbox: int = key(1024 * 1024 * 1024, "bytes a login may IMAP APPEND "
                                        "per window", ge(0))


@dataclass(frozen=True)
class LimitsConfig:
    """Process-wide bounds (mss/limits.py), per serving process."""

    pending_bytes: int = key(512 * 1024 * 1024, "bytes of SMTP DATA and IMAP literals being "
                             "read, all sessions together; past it DATA gets 452 4.3.1 and a "
                             "literal NO [UNAVAILABLE] (both temporary)", ge(1))
    report_interval: float = key(10.0, "seconds: at most one log line / audit record per kind "
                                 "(refused connection per cap, event loop error)", gt(0))
    sending: SendingLimitsConfig = key(SendingLimitsConfig, "")


@dataclass(frozen=True)
class WhitelistFetchConfig:
    """The published list, fetched by 'mss serve' (one elected process of the cluster) and
    by 'mss whitelist fetch': a conditional GET (ETag / If-Modified-Since), the checksum
    verified when sha256_url is set, then the same import as 'mss whitelist import' (shrink
    guard; the last good list stays in force on any failure). Every attempt is audited
    (whitelist.fetch)."""

    url: str = key("", "e.g. the agency's https URL; \"\" = no periodic fetch",
                   scheme("https://", "http://", "file://", empty=True))
    sha256_url: str = key("", "its published SHA-256 (\"<hex>\" or \"<hex>  name\")",
                          scheme("https://", "http://", "file://", empty=True))
    interval: float = key(21600.0, "seconds between fetches (0: off)", ge(0))
    timeout: float = key(60.0, "seconds per HTTP request", gt(0))
    max_bytes: int = key(64 * 1024 * 1024, "a larger document is refused", ge(1))
    ca_file: Path | None = key(None, "anchors for an https URL (absent: the system store)",
                               example="pki/agency-ca.crt")

    def checked(self) -> Self:
        if self.sha256_url and not self.url:
            raise Invalid("sha256_url", "given without whitelist.fetch.url")
        return self


@dataclass(frozen=True)
class WhitelistConfig:
    """The national whitelist of the trust space (docs/trust-space.md)."""

    max_shrink_ratio: float = key(0.10, "refuse an import dropping more domains, unless "
                                  "--force", within(0, 1))
    reload_interval: float = key(5.0, "seconds between checks for a newly imported version "
                                 "and for changed local peer blocks (mss peer block)", gt(0))
    fetch: WhitelistFetchConfig = key(WhitelistFetchConfig, "")


@dataclass(frozen=True)
class DeliveryConfig:
    """The outbound queue worker in 'mss serve' (every serving process runs one; rows are
    claimed with a lease, so several workers and several nodes never send the same row at
    once)."""

    enabled: bool = key(True, "false: queue only (another node delivers)")
    nameservers: tuple[str, ...] = key((), "DNS servers for MX lookups; [] = /etc/resolv.conf")
    dns_port: int = key(53, "their port (private DNS, tests)", within(1, 65535))
    dns_timeout: float = key(5.0, "seconds per DNS lookup", gt(0))
    port: int = key(25, "SMTP port of peer MX hosts (RFC 5321 §4.5.4.1)", within(1, 65535))
    connect_timeout: float = key(30.0, "seconds to connect and read the greeting", gt(0))
    command_timeout: float = key(300.0, "seconds per SMTP command (RFC 5321 §4.5.3.2)", gt(0))
    max_attempts: int = key(8, "attempts before the message expires (DSN to sender)", ge(1))
    retry_base: float = key(1200.0, "seconds before the 2nd attempt; then x retry_factor",
                            gt(0))
    retry_factor: float = key(2.0, "waits 20 min, 40 min, ... 21 h: 8 attempts, ~42 h", ge(1))
    retry_max: float = key(86400.0, "cap of one wait, seconds", gt(0))
    jitter: float = key(0.2, "each wait +/- this fraction, at random", within(0, 1, below=True))
    max_age: float = key(172800.0, "seconds in the queue before expiry (DSN to sender)", gt(0))
    lease: float = key(900.0, "a claimed row is taken over by any worker after this; an "
                       "attempt is cut at 80 % of it (> 2.5 x connect_timeout)", gt(0))
    poll_interval: float = key(30.0, "safety poll of the queue worker: a commit queuing a row "
                               "wakes it (this process at once, others within "
                               "database.change_poll); retries wake it when due", gt(0))
    batch: int = key(50, "rows claimed per poll", ge(1))
    max_concurrency: int = key(20, "deliveries in flight per serving process", ge(1))
    max_per_destination: int = key(4, "of which to one destination domain", ge(1))
    session_reuse: int = key(100, "messages over one SMTP session at most (1: a new "
                             "connection, TLS handshake included, per message)", ge(1))
    session_idle: float = key(5.0, "seconds an idle session waits for the next message to the "
                              "same host (0: close at once; RFC 5321 §4.5.3.2.7: servers "
                              "wait 5 min)", within(0, 240))
    # RFC 3461 §4.1 NOTIFY=DELAY (and NOTIFY absent): a "delayed" report (RFC 3464) to the
    # sender of a message still queued this long after it was accepted
    delay_warning: float = key(14400.0, "seconds queued before a \"delayed\" report to the "
                               "sender (NOTIFY=DELAY or no NOTIFY; 0: never)", ge(0))
    delay_warning_repeat: float = key(14400.0, "seconds at least between two \"delayed\" "
                                      "reports of one recipient", gt(0))

    def checked(self) -> Self:
        if self.lease * 0.8 <= 2 * self.connect_timeout:
            raise Invalid("lease", "must exceed 2.5 x delivery.connect_timeout (an attempt "
                          "must end within 80 % of its lease)")
        return self


_SENDER_TYPES = ("PER", "ORG", "APP", "CAB")  # mss.mailstore.mailboxes.MAILBOX_TYPES


def _sender_type(value: str) -> str:
    """One mailbox type of citizen.senders, upper-cased."""
    if value.upper() not in _SENDER_TYPES:
        raise ValueError(f"unknown mailbox type {value!r}: PER, ORG, APP or CAB")
    return value.upper()


@dataclass(frozen=True)
class CitizenConfig:
    """Citizen messaging (Mon espace santé, docs/mssante-messages.md "Citizen messaging"):
    mail between professionals and patients at <INS>@domain. The domain must still be on
    the whitelist (its operator's certificate checked as any peer's, both ways); it is
    exempt from the professional directory check."""

    domain: str = key("patient.mssante.fr", "the patients' domain (\"\": no citizen rules, "
                      "the domain is treated as any other)", norm=lambda v: v.strip().lower())
    senders: tuple[str, ...] = key(("PER", "ORG"), "mailbox types that may write to patients "
                                   "(submission, relay); others get 550 5.7.1",
                                   norm=_sender_type)


@dataclass(frozen=True)
class LoggingConfig:
    """JSON lines on stderr, never a secret nor message content."""

    level: str = key("info", "debug | info | warning | error", one_of("debug", "info", "warning",
                                                                  "error"), norm=str.lower)
    file: Path | None = key(None, "JSON lines appended to this file instead of stderr",
                            example="mss.log")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics (docs/metrics.md), served with /healthz and /readyz on the "admin"
    listener (plain HTTP: keep it on loopback or behind a TLS proxy). Counts are kept per
    serving process and summed across server.workers at each scrape."""

    enabled: bool = key(True, "false: no counter is kept and /metrics answers 404 (/healthz "
                        "and /readyz still served)")


_DNS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?", re.I)


def _checkable_name(name: str) -> bool:
    """True if *name* can be matched against a certificate (RFC 6125 §6: a DNS name or an
    IP address; not empty, not a wildcard)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_DNS_NAME.fullmatch(name))


@dataclass(frozen=True)
class AuditDestination:
    """Audit record repositories (IHE ATNA): zero or more. Each record is sent as an RFC 5424
    message, MSGID IHE+RFC-3881, the DICOM AuditMessage XML as MSG."""

    name: str = key("", "shown by 'mss audit status' (default: destination<i>)",
                    example="siem")
    transport: str = key("tls", "tls (RFC 5425, octet counting) or udp (RFC 5426: at most "
                         "2048 octets a datagram, long records reduced or not sent: only tls "
                         "carries the whole trail)", one_of("tls", "udp"))
    host: str = key("127.0.0.1", "the receiver")
    port: int = key(6514, "default 6514 for tls, 514 for udp", within(1, 65535),
                    like=lambda get: 6514 if get("transport") == "tls" else 514)
    ca_file: Path | None = key(Path("pki/ca.crt"), "trust anchors for the receiver (\"\": "
                               "the system store)", like="tls.ca_file")
    cert_file: Path | None = key(Path("pki/server.crt"), "our client certificate, mutual TLS "
                                 "(ATNA node authentication; \"\": none)", like="tls.cert_file")
    key_file: Path | None = key(Path("pki/server.key"), "its key", like="tls.key_file")
    server_name: str = key("", "name checked in the receiver's certificate (tls; an IP host "
                           "against its IP SANs); a receiver of the same CA with another "
                           "name gets nothing. A name no certificate can carry (\"\", a "
                           "wildcard) stops start-up", like="host", example="audit.example.fr")

    def checked(self) -> Self:
        if self.transport == "tls" and not _checkable_name(self.server_name):
            # RFC 5425 §5.2: the receiver's name is always checked
            raise Invalid("host" if self.server_name == self.host else "server_name",
                          f"{self.server_name!r} cannot be checked in the receiver's "
                          "certificate (a DNS name or an IP address)")
        return self


@dataclass(frozen=True)
class AuditConfig:
    """The hash-chained audit trail, its signed checkpoints and its shipping."""

    ship_interval: float = key(1.0, "seconds between outbox polls when idle", gt(0))
    batch: int = key(500, "records per write to a destination", ge(1))
    retention_days: int = key(365, "'mss audit purge' keeps at least this (six months of "
                              "traces at least)", ge(183))
    checkpoint_interval: float = key(300.0, "seconds between signed checkpoints of the chain "
                                     "(also one at start and at a clean stop; each shipped as "
                                     "a record)", gt(0))
    signing_key_file: Path = key(Path("keys/audit-signing.key"), "Ed25519, created 0600 on "
                                 "first use")
    pseudonym_key_file: Path = key(Path("keys/pseudonym.key"), "HMAC key of patient "
                                   "pseudonyms (the INS of an XDM attachment)")
    ttp_public_key_file: Path | None = key(None, "a trusted third party's X25519 public key "
                                           "(PEM, 'mss-ttp keygen'): the patient's INS is "
                                           "also kept sealed to it (HPKE, RFC 9180), which "
                                           "only 'mss-ttp reveal' with its private key opens "
                                           "(docs/mssante-messages.md)",
                                           example="keys/ttp-public.pem")
    destinations: tuple[AuditDestination, ...] = key((), "")

    def checked(self) -> Self:
        named = [d if d.name else dataclasses.replace(d, name=f"destination{i}")
                 for i, d in enumerate(self.destinations)]
        for index, dest in enumerate(named):
            if dest.name in [d.name for d in named[:index]]:
                raise Invalid(f"destinations[{index}].name", f"duplicate name {dest.name!r}")
        return dataclasses.replace(self, destinations=tuple(named))


# RFC 6154 §2: the special-use attributes a retention rule may name a folder by
SPECIAL_USE = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
               "\\Trash")


def _rule_domain(value: str) -> str:
    return normalize_domain(value) if value.strip() else ""


def _rule_folder(value: str) -> str:
    """A special-use attribute in its RFC 6154 spelling, INBOX in any case, or a name."""
    if value.startswith("\\"):
        found = [u for u in SPECIAL_USE if u.lower() == value.lower()]
        if not found:
            raise ValueError(f"{value!r} is not a special-use attribute (RFC 6154: "
                             f"{', '.join(SPECIAL_USE)})")
        return found[0]
    return "INBOX" if value.upper() == "INBOX" else value.strip("/")


@dataclass(frozen=True)
class RetentionRule:
    """Retention rules (docs/retention.md): the messages of the folders a rule matches are
    expunged once they have been in their folder this many days (since delivery, APPEND,
    COPY or MOVE into it; messages stored before schema 0010: since their internal date).
    The first rule matching a folder applies, in file order: put the specific ones first.
    A mailbox under legal hold (mss mailbox hold) is never touched."""

    days: float = key(MISSING, "age in days past which its messages are expunged; 0: kept "
                      "(exempts what later rules would match)", ge(0), example=30)
    domain: str = key("", "a hosted domain (\"\": every domain)", norm=_rule_domain)
    folder: str = key("", "a folder by its special-use attribute (\"\\\\Trash\", RFC 6154) or "
                      "by its name (\"INBOX\", \"Archive/2019\"); \"\": every folder",
                      norm=_rule_folder, example="\\Trash")


@dataclass(frozen=True)
class RetentionConfig:
    """Message retention, applied by a periodic job of 'mss serve' (one elected process of
    the cluster) and by 'mss retention run': expunges as an IMAP EXPUNGE would (sessions
    see it, modseqs move), audited retention.expunge with counts, never a folder name."""

    interval: float = key(3600.0, "seconds between rounds of the job (0: no job; 'mss "
                          "retention run' applies the rules at once)", ge(0))
    batch: int = key(100, "messages expunged per transaction (each holds the writer's lock: "
                     "deliveries wait that long; bench/retention.py)", ge(1))
    rules: tuple[RetentionRule, ...] = key((), "")

    def checked(self) -> Self:
        for later, rule in enumerate(self.rules):
            for first, earlier in enumerate(self.rules[:later]):
                if earlier.domain in ("", rule.domain) and earlier.folder in ("", rule.folder):
                    raise Invalid(f"rules[{later}]", f"never applies: rules[{first}] before "
                                  "it matches every folder it matches (the first matching "
                                  "rule applies)")
        return self


def cleartext_bind(url: str, tls: str, has_password: bool) -> bool:
    """A password bind to *url* would cross a network unencrypted: ``ldap://`` with tls =
    "none" to a host that is not loopback (127.0.0.0/8, ::1, localhost: a local slapd),
    RFC 4513 §6.3.4. TLS before any credential."""
    if not has_password or tls != "none" or url.startswith("ldaps://"):
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere


def _no_cleartext_bind(urls: tuple[str, ...], tls: str, has_password: bool) -> None:
    for one in urls:
        if cleartext_bind(one, tls, has_password):
            raise Invalid("tls", f"\"none\" would send the bind password in clear to {one}; "
                          "use ldaps:// or tls = \"starttls\" or \"ldaps\" (only a loopback "
                          "host may go without TLS)")


def read_secret(key: str, env: str | None, path: Path | None) -> str | None:
    """A password from an environment variable or a file (never from the TOML itself)."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"config: {key}.password_env: ${env} is not set")
        return value
    if path:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"config: {key}.password_file: {exc.strerror}") from None
    return None


LDAP = scheme("ldap://", "ldaps://")
LDAP_TLS = one_of("none", "starttls", "ldaps")


@dataclass(frozen=True)
class PublishConfig:
    """'mss directory publish' writes our mailboxes here (a writable LDAP subtree)."""

    url: str = key(MISSING, "the LDAP server", LDAP, example="ldaps://annuaire.example.fr")
    bind_dn: str = key(MISSING, "our entry, allowed to write there",
                       example="cn=operator,dc=sante,dc=fr")
    base_dn: str = key(MISSING, "the subtree written", example="ou=operator,dc=sante,dc=fr")
    password_file: Path | None = key(None, "or password_env; never logged",
                                     example="keys/publish.password")
    password_env: str | None = key(None, "environment variable holding the password",
                                   example="MSS_PUBLISH_PASSWORD")
    tls: str = key("none", "as directory.tls: an ldaps:// url is always TLS, \"starttls\" "
                   "upgrades before the bind; the server's chain and the url's host are "
                   "verified first (\"none\": loopback hosts only, as above)", LDAP_TLS)
    ca_file: Path | None = key(None, "trust anchors of the server (absent: system store)",
                               like="directory.ca_file", example="pki/ldap-ca.crt")

    def checked(self) -> Self:
        _no_cleartext_bind((self.url,), self.tls,
                           bool(self.password_file or self.password_env))
        return self


FHIR_RESOURCES = ("Practitioner", "PractitionerRole", "Organization")


@dataclass(frozen=True)
class FhirConfig:
    """The Annuaire Santé FHIR API (v2): directory source = "fhir" reads its mailboxes,
    'mss directory publish --fhir' writes ours (FHIR Patch); docs/directory-fhir.md."""

    base_url: str = key(MISSING, "the API's base (https only)", scheme("https://"),
                        example="https://gateway.api.esante.gouv.fr/fhir/v2")
    api_key_file: Path | None = key(None, "file holding the ESANTE-API-KEY value (or "
                                    "api_key_env); never logged", example="keys/esante.key")
    api_key_env: str | None = key(None, "environment variable holding the API key",
                                  example="MSS_ESANTE_API_KEY")
    ca_file: Path | None = key(None, "trust anchors of the API (absent: system store)",
                               example="pki/esante-ca.crt")
    page_size: int = key(1000, "_count: resources per searchset page", within(1, 5000))
    timeout: float = key(30.0, "seconds per HTTP request", gt(0))
    retries: int = key(5, "retries of a request answered 429 or 5xx (or a GET whose "
                       "connection broke), then the run fails", ge(0))
    retry_wait: float = key(1.0, "seconds before the first retry when the server sends no "
                            "Retry-After, doubled each time", ge(0))
    retry_max_wait: float = key(60.0, "longest wait honoured, Retry-After included", ge(0))
    resources: tuple[str, ...] = key(FHIR_RESOURCES, "resource types searched for mailboxes")
    liste_rouge: str = key("flag", "publish --fhir: a mailbox on the liste rouge is published "
                           "with listeRouge = true, the national directory hiding it "
                           "(\"flag\"), or not published at all (\"omit\")",
                           one_of("flag", "omit"))

    def checked(self) -> Self:
        unknown = [r for r in self.resources if r not in FHIR_RESOURCES]
        if unknown or not self.resources:
            raise Invalid("resources", f"must list some of {', '.join(FHIR_RESOURCES)}")
        return self


DEFAULT_ATTRIBUTES = MappingProxyType({
    "mail": "mail", "type": "mssMailboxType", "id_nat": "mssIdNat", "display_name": "cn",
    "given_name": "givenName", "surname": "sn", "profession": "mssProfession",
    "structure_id": "mssStructureId", "service": "mssService", "city": "l",
    "liste_rouge": "mssListeRouge",
})
DIRECTORY_FIELDS = tuple(DEFAULT_ATTRIBUTES)


@dataclass(frozen=True)
class ExtractionConfig:
    """The national bulk extraction "Extraction des BAL MSSanté" (source = "extraction"): a
    ZIP of a pipe-delimited UTF-8 text file, loaded in full every interval
    (docs/directory.md)."""

    url: str = key("", "the agency's https URL (TLS verified)",
                   scheme("https://", empty=True),
                   example="https://service.annuaire.sante.fr/annuaire-sante-webservices/"
                   "V300/services/extraction/Extraction_Correspondance_MSSante")
    file: Path | None = key(None, "a local copy (ZIP or text), read instead of url when set",
                            example="directory/Extraction_Correspondance_MSSante.zip")
    ca_file: Path | None = key(None, "anchors of the https server (the agency's chain ends "
                               "at IGC-Santé; absent: the system store)",
                               example="pki/igc-sante-ca.crt")
    interval: float = key(86400.0, "seconds between loads in mss serve (0: off); the file "
                          "is published daily", ge(0))
    timeout: float = key(120.0, "seconds per network read", gt(0))
    max_bytes: int = key(1024 * 1024 * 1024, "a larger download or unpacked file is refused",
                         ge(1))

    def checked(self) -> Self:
        if not self.url and not self.file:
            raise Invalid("url", "give url (https) or file")
        return self


DIRECTORY_SOURCES = ("ldap", "extraction", "fhir")


@dataclass(frozen=True)
class DirectoryConfig:
    """The professional directory, synchronised from one source (absent: no sync, no
    recipient check)."""

    source: str = key("ldap", "ldap (urls, base_dn...) | extraction ([directory.extraction]) "
                      "| fhir", one_of(*DIRECTORY_SOURCES))
    urls: tuple[str, ...] = key((), "source = \"ldap\": failover in order (url = "
                                "\"ldaps://...\" for a single server)", LDAP, single="url",
                                example=["ldaps://annuaire.example.fr",
                                         "ldaps://annuaire2.example.fr"])
    base_dn: str = key("", "source = \"ldap\": the subtree searched",
                       example="ou=people,dc=sante,dc=fr")
    bind_dn: str | None = key(None, "absent: anonymous", example="cn=reader,dc=sante,dc=fr")
    password_file: Path | None = key(None, "or password_env; never logged",
                                     example="keys/ldap.password")
    password_env: str | None = key(None, "environment variable holding the password",
                                   example="MSS_LDAP_PASSWORD")
    filter: str = key("(objectClass=mssMailbox)", "entries synchronised")
    tls: str = key("none", "none | starttls | ldaps (an ldaps:// url is ldaps); with TLS the "
                   "server's chain and the url's host are verified in the handshake, before "
                   "the bind; \"none\" with a password only to a loopback host (127.0.0.0/8, "
                   "::1, localhost), else start-up stops: no password in clear", LDAP_TLS)
    ca_file: Path | None = key(None, "anchors of the LDAP servers (absent: system store)",
                               example="pki/ldap-ca.crt")
    page_size: int = key(1000, "RFC 2696 paged search", ge(1))
    timeout: float = key(30.0, "seconds per LDAP operation", gt(0))
    interval: float = key(3600.0, "seconds between syncs in mss serve (0: off; source = "
                          "\"extraction\": extraction.interval)")
    full_every: float = key(86400.0, "a full sync (detects deletions) at least this often")
    reject_invalid: bool = key(False, "true: an entry without mail, with an invalid mail or a "
                               "mail held twice fails the whole run")
    check_recipients: bool = key(True, "submission and relay: remote recipients must be "
                                 "listed (not the MX)")
    unpublished_domains: tuple[str, ...] = key((), "whitelisted domains not in the directory",
                                               norm=str.lower)
    attributes: dict[str, str] = key(DEFAULT_ATTRIBUTES, "every attribute name is mappable "
                                     "(AD, OpenLDAP...)", names=DEFAULT_ATTRIBUTES)
    publish: PublishConfig | None = key(None, "")
    fhir: FhirConfig | None = key(None, "")
    extraction: ExtractionConfig | None = key(None, "")

    def password(self) -> str | None:
        return read_secret("directory", self.password_env, self.password_file)

    def sync_interval(self) -> float:
        """Seconds between runs in mss serve: the source's own schedule."""
        if self.source == "extraction" and self.extraction is not None:
            return self.extraction.interval
        return self.interval

    def checked(self) -> Self:
        if self.source == "fhir":
            if self.fhir is None:
                raise Invalid("fhir", "source = \"fhir\" needs a [directory.fhir] section "
                              "(base_url, the API key)")
            return self
        if self.source == "extraction":
            if self.extraction is None:
                raise Invalid("extraction", "source = \"extraction\" needs a "
                              "[directory.extraction] section (url or file)")
            return self
        if not self.urls:
            raise Invalid("urls", "required with source = \"ldap\" (at least one ldap:// "
                          "or ldaps:// URL)")
        if not self.base_dn:
            raise Invalid("base_dn", "required with source = \"ldap\"")
        # TLS before any credential (RFC 4513 §6.3.4), checked before any connection
        _no_cleartext_bind(self.urls, self.tls,
                           bool(self.bind_dn and (self.password_file or self.password_env)))
        return self


# issue 15 (tokens branch): the OpenID Connect issuers whose bearer tokens log people in
_HTTPS = scheme("https://")


@dataclass(frozen=True)
class OidcIssuerConfig:
    """OpenID Connect issuers whose access tokens log professionals in (SASL OAUTHBEARER,
    XOAUTH2; the portal's login): JWTs checked against the issuer's JWKS (OIDC Discovery),
    or opaque tokens sent to its RFC 7662 introspection endpoint. Pro Santé Connect:
    issuer "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet", required_acr
    "eidas1" (docs/authentication.md)."""

    issuer: str = key(MISSING, "the issuer identifier: the tokens' iss, exactly", _HTTPS,
                      example="https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet")
    audience: tuple[str, ...] = key(MISSING, "the aud a token must carry (one of these); "
                                    "empty stops start-up", example=["https://mss.example.fr"])
    name: str = key("", "names the issuer in the audit and in other sections (default: "
                    "oidc<i>)", example="psc")
    discovery_url: str = key("", "its OpenID Connect discovery document (default: issuer + "
                             "/.well-known/openid-configuration)", _HTTPS,
                             like=lambda get: get("issuer").rstrip("/")
                             + "/.well-known/openid-configuration",
                             example="https://auth.esw.esante.gouv.fr/auth/realms/"
                             "esante-wallet/.well-known/openid-configuration")
    required_acr: str = key("", "the acr a token must carry (\"\": none required; PSC: "
                            "\"eidas1\")")
    national_id_claim: str = key("preferred_username", "the claim holding the person's "
                                 "national identifier (PSC: the idNat, also in SubjectNameID)")
    clock_skew: float = key(60.0, "seconds of leeway on exp, nbf and iat", ge(0))
    jwks_max_age: float = key(3600.0, "cached signing keys are used at most this many "
                              "seconds after their last successful fetch (then re-fetched; "
                              "the issuer down: temporary failure, never an acceptance)", gt(0))
    jwks_refetch_interval: float = key(10.0, "a token signed by an unknown kid re-fetches the "
                                       "JWKS at most once per this many seconds", ge(0))
    introspection: bool = key(False, "true: opaque tokens go to the discovery document's "
                              "introspection_endpoint (RFC 7662), with client_id and its secret")
    client_id: str = key("", "our client at the issuer (introspection, the portal)",
                         example="mss-operator")
    client_secret_file: Path | None = key(None, "its secret (mode 0600, refused otherwise; "
                                          "never logged)", example="keys/oidc-client.secret")
    introspection_cache: float = key(60.0, "seconds an introspection answer is reused (always "
                                     "less than the token's remaining life; 0: never)", ge(0))
    ca_file: Path | None = key(None, "trust anchors of the issuer's HTTPS (absent or \"\": the "
                               "system store)", example="pki/oidc-ca.crt")
    timeout: float = key(5.0, "seconds for one request to the issuer", gt(0))

    def checked(self) -> Self:
        if not self.audience or not all(self.audience):
            raise Invalid("audience", "must list the audience the tokens carry (a token for "
                          "any audience would be accepted)")
        if self.introspection and not (self.client_id and self.client_secret_file):
            raise Invalid("introspection", "needs client_id and client_secret_file (RFC 7662 "
                          "§2.1: the endpoint authenticates its callers)")
        return self


@dataclass(frozen=True)
class AuthConfig:
    """Strong authentication of professionals: token issuers (issue 15)."""

    introspection_cache_entries: int = key(10000, "opaque tokens whose introspection answer "
                                           "is kept, per serving process (the oldest dropped "
                                           "first)", ge(1))
    oidc: tuple[OidcIssuerConfig, ...] = key((), "")

    def checked(self) -> Self:
        named = [o if o.name else dataclasses.replace(o, name=f"oidc{i}")
                 for i, o in enumerate(self.oidc)]
        for index, one in enumerate(named):
            if one.name in [o.name for o in named[:index]]:
                raise Invalid(f"oidc[{index}].name", f"duplicate name {one.name!r}")
            if one.issuer in [o.issuer for o in named[:index]]:
                raise Invalid(f"oidc[{index}].issuer", f"duplicate issuer {one.issuer!r}")
        introspecting = [i for i, o in enumerate(named) if o.introspection]
        if len(introspecting) > 1:  # an opaque token names no issuer: it would go to each
            raise Invalid(f"oidc[{introspecting[1]}].introspection", "only one issuer may "
                          "introspect opaque tokens (a token would be shown to every one)")
        return dataclasses.replace(self, oidc=tuple(named))

    def issuer(self, name: str) -> OidcIssuerConfig | None:
        return next((o for o in self.oidc if o.name == name), None)


@dataclass(frozen=True)
class PortalConfig:
    """The professionals' portal (proxy/portal, docs/portal.md) on the "portal" listener
    (HTTPS, the tls.cert_file certificate): login through an [[auth.oidc]] issuer
    (authorization code + PKCE), then app passwords, access history and client settings;
    the same listener answers Thunderbird autoconfig and Outlook autodiscover. Off until
    an issuer is set."""

    enabled: bool = key(False, "true: serve the portal listener (needs issuer)")
    issuer: str = key("", "the name of the [[auth.oidc]] issuer professionals log in with",
                      example="psc")
    client_id: str = key("", "the portal's OAuth client at the issuer (\"\": that issuer's "
                         "client_id)")
    client_secret_file: Path | None = key(None, "its secret, mode 0600, never logged "
                                          "(absent: that issuer's client_secret_file)",
                                          example="keys/portal-client.secret")
    public_url: str = key("", "https URL browsers reach the portal by, without a trailing "
                          "slash (the redirect URI is public_url + \"/login/callback\"); "
                          "\"\": https://<listeners.portal.public_name>:<port>",
                          scheme("https://", empty=True), norm=lambda v: v.rstrip("/"))
    scope: str = key("openid profile", "scopes asked at the issuer (the ID token or UserInfo "
                     "must then carry the issuer's national_id_claim; PSC: \"openid "
                     "scope_all\")")
    session_idle: float = key(900.0, "seconds without a request before a session ends",
                              gt(0))
    session_max: float = key(28800.0, "seconds a session lasts at most from its login", gt(0))
    login_timeout: float = key(600.0, "seconds from the redirect to the issuer to the "
                               "callback", gt(0))

    def checked(self) -> Self:
        if self.enabled and not self.issuer:
            raise Invalid("issuer", "required when enabled = true (the [[auth.oidc]] name "
                          "professionals log in with)")
        return self


@dataclass(frozen=True)
class Config:
    """mss configuration: every key, with its default. Load order for every command:
    --config PATH, then $MSS_CONFIG, then ./var/mss.toml. An invalid value stops 'mss serve'
    and every CLI command at start-up (exit 2) with the key's name and what is wrong. An
    unknown key or table (a typo: crl_file for crl_files) is refused the same way, naming
    its path and the nearest valid name, never ignored."""

    path: Path  # the file read, not a key
    server: ServerConfig = key(ServerConfig, "")
    database: DatabaseConfig = key(DatabaseConfig, "")
    keys: KeysConfig = key(KeysConfig, "")
    tls: TlsConfig = key(TlsConfig, "")
    smtp: SmtpConfig = key(SmtpConfig, "")
    listeners: dict[str, ListenerConfig] = key(
        {}, "Listeners: host and port each; 'enabled = false' turns one off. Each listener "
        "also has connection caps (per serving process); over one the client gets "
        "'421 4.7.0' (SMTP) or '* BYE' (IMAP) and is closed, audited connection.refused "
        "(docs/flow.md \"Every listener\"). \"Pre-auth\": not yet logged in (IMAP), no AUTH "
        "nor verified client certificate (SMTP). Raise the per-address caps for "
        "institutions whose users share one NAT address.", names=LISTENERS)
    pki: PkiConfig = key(PkiConfig, "")
    imap: ImapConfig = key(ImapConfig, "")
    sessions: SessionsConfig = key(SessionsConfig, "")  # issue 16 (sessions branch)
    limits: LimitsConfig = key(LimitsConfig, "")
    whitelist: WhitelistConfig = key(WhitelistConfig, "")
    delivery: DeliveryConfig = key(DeliveryConfig, "")
    logging: LoggingConfig = key(LoggingConfig, "")
    audit: AuditConfig = key(AuditConfig, "")
    retention: RetentionConfig = key(RetentionConfig, "")  # issue 16 (retention branch)
    directory: DirectoryConfig | None = key(None, "")
    auth: AuthConfig = key(AuthConfig, "")  # issue 15 (tokens branch)
    portal: PortalConfig = key(PortalConfig, "")  # issue 15 (portal branch)
    metrics: MetricsConfig = key(MetricsConfig, "")  # issue 17 (metrics branch)
    lifecycle: LifecycleConfig = key(LifecycleConfig, "")  # issue 16 (lifecycle branch)
    messages: MessagesConfig = key(MessagesConfig, "")  # issue 18 (xdm branch)
    citizen: CitizenConfig = key(CitizenConfig, "")  # issue 18 (dsn branch)

    def checked(self) -> Self:
        if self.portal.enabled and self.auth.issuer(self.portal.issuer) is None:
            raise Invalid("portal.issuer", f"{self.portal.issuer!r} names no [[auth.oidc]] "
                          "issuer (their name key)")
        return self

    # the attribute paths of the flat schema this one replaced
    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def workers(self) -> int:
        """server.workers, 0 resolved to the CPU cores this process may run on."""
        return self.server.workers or len(os.sched_getaffinity(0)) or 1

    @property
    def change_poll(self) -> float:
        return self.database.change_poll

    @property
    def master_key_file(self) -> Path:
        return self.keys.master_key_file

    @property
    def log_level(self) -> str:
        return self.logging.level

    @property
    def log_file(self) -> Path | None:
        return self.logging.file

    @property
    def database_url(self) -> str:
        """database.url, a relative SQLite path resolved against server.data_dir."""
        return resolve_database_url(self.database.url, self.data_dir)


def resolve_database_url(url: str, data_dir: Path) -> str:
    """*url*, a relative SQLite path resolved against *data_dir* (``sqlite:///mss.db``)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(data_dir / url[len("sqlite:///"):])
    return url


# ----------------------------------------------------------------------------- reading


_NOUNS = MappingProxyType({int: "an integer", float: "a number", str: "a string",
                           bool: "true or false", Path: "a path"})


def _noun(kind: Any) -> str:
    args = [a for a in get_args(kind) if a is not NoneType]
    if get_origin(kind) is tuple:
        return f"a list ({_noun(args[0])} each)"
    return _NOUNS[args[0] if isinstance(kind, UnionType) else kind]


def _convert(value: Any, kind: Any) -> Any:
    """*value* as the annotation *kind*; TypeError if it is not one."""
    args = [a for a in get_args(kind) if a is not NoneType]
    if isinstance(kind, UnionType):  # X | None: "" means None for a path
        return None if value == "" and args[0] is Path else _convert(value, args[0])
    if get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise TypeError
        return tuple(_convert(v, args[0]) for v in value)
    expected = {Path: str, float: int | float}.get(kind, kind)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, expected):
        raise TypeError
    return Path(value) if kind is Path else float(value) if kind is float else value


def _shown(value: Any) -> str:
    """*value* as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    return repr(value) if isinstance(value, int | float) else "a table"


def _unknown(raw: dict[str, Any], valid: set[str], path: str) -> None:
    """Refuse the first key nobody declares, naming its path and the nearest valid name."""
    for name in sorted(set(raw) - valid):
        value = raw[name]
        what = "table" if isinstance(value, dict) or isinstance(value, list) and value and all(
            isinstance(v, dict) for v in value) else "key"
        near = difflib.get_close_matches(name, sorted(valid), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ConfigError(f"config: {_join(path, name)}: unknown {what}{hint}")


class _Reader:
    """Builds sections from TOML tables, remembering every value read by its full path (for
    ``like``) and the directory relative paths are resolved against."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seen: dict[str, Any] = {}

    def section(self, cls: type[T], raw: Any, path: str, given: dict[str, Any] | None = None,
                defaults: dict[str, Any] | None = None) -> T:
        if not isinstance(raw, dict):
            raise ConfigError(f"config: {path}: must be a table (got {_shown(raw)})")
        fields = _keys(cast(type, cls))
        _unknown(raw, {f.name for f, _ in fields}
                 | {f.metadata["single"] for f, _ in fields if f.metadata["single"]}, path)
        values = dict(given or {})
        for f, kind in fields:
            values[f.name] = self.value(f, kind, raw, path, (defaults or {}).get(f.name, MISSING))
        obj = cls(**values)
        checked: Callable[[], T] | None = getattr(obj, "checked", None)
        try:
            return checked() if checked else obj
        except Invalid as exc:
            raise ConfigError(f"config: {_join(path, exc.key)}: {exc}") from None

    def value(self, f: dataclasses.Field[Any], kind: Any, raw: dict[str, Any], parent: str,
              default: Any) -> Any:
        name, meta = _join(parent, f.name), f.metadata
        sub = _section(kind)
        if get_origin(kind) is dict:
            return self.named(sub or str, raw.get(f.name, {}), name, meta["names"])
        if get_origin(kind) is tuple and sub:  # an array of tables
            items = raw.get(f.name, [])
            if not isinstance(items, list):
                raise ConfigError(f"config: {name}: must be an array of tables")
            return tuple(self.section(sub, item, f"{name}[{i}]") for i, item in enumerate(items))
        if sub:
            if f.name not in raw and f.default is None:
                return None  # an optional section, absent
            return self.section(sub, raw.get(f.name, {}), name)
        value = self.scalar(f, kind, raw, parent, default)
        if isinstance(value, Path):
            value = self.base / value
        elif isinstance(value, tuple) and value and isinstance(value[0], Path):
            value = tuple(self.base / v for v in value)
        if meta["base"]:
            self.base = value
        self.seen[name] = value
        return value

    def scalar(self, f: dataclasses.Field[Any], kind: Any, raw: dict[str, Any], parent: str,
               default: Any) -> Any:
        name, meta = _join(parent, f.name), f.metadata
        if f.name not in raw and meta["single"] in raw:
            raw = {f.name: [raw[meta["single"]]]}
        if f.name in raw:
            return self.given(raw[f.name], kind, name, meta["check"], meta["norm"])
        if default is not MISSING:
            return default
        like = meta["like"]
        if isinstance(like, str):
            return self.seen[like if "." in like else _join(parent, like)]
        if like is not None:
            return like(lambda sibling: self.seen[_join(parent, sibling)])
        if f.default is not MISSING:
            return f.default
        raise ConfigError(f"config: {name}: required (e.g. {_shown(meta['example'])})")

    @staticmethod
    def given(raw: Any, kind: Any, name: str, check: Check | None,
              norm: Callable[[Any], Any] | None) -> Any:
        """A value given in the file, converted, normalised and checked."""
        rule = f" {check.text}" if check and check.typed else ""
        try:
            value = _convert(raw, kind)
            items = [norm(v) if norm else v for v in (value if isinstance(value, tuple)
                                                      else (value,))]
        except TypeError:
            raise ConfigError(f"config: {name}: must be {_noun(kind)}{rule} "
                              f"(got {_shown(raw)})") from None
        except ValueError as exc:
            raise ConfigError(f"config: {name}: {exc}") from None
        for item in items:
            if check and item is not None and not check.ok(item):
                one = get_args(kind)[0] if get_origin(kind) is tuple else kind
                raise ConfigError(f"config: {name}: must be "
                                  f"{_noun(one) + rule if check.typed else check.text} "
                                  f"(got {_shown(item)})")
        return tuple(items) if isinstance(value, tuple) else items[0]

    def named(self, kind: type, raw: Any, name: str, names: Mapping[str, Any]
              ) -> dict[str, Any]:
        """A table of known names: sections (listeners) or strings (directory.attributes)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"config: {name}: must be a table (got {_shown(raw)})")
        _unknown(raw, set(names), name)
        if kind is str:
            return {n: self.given(raw[n], str, f"{name}.{n}", None, None) if n in raw
                    else default for n, default in names.items()}
        return {n: self.section(kind, raw.get(n, {}), f"{name}.{n}", given={"name": n},
                                defaults={k: v for k, v in defaults.items() if k != "doc"})
                for n, defaults in names.items()}


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The config file to use: ``--config``, then ``$MSS_CONFIG``, then ``./var/mss.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MSS_CONFIG")
    if env:
        return Path(env)
    return Path("var") / DEFAULT_CONFIG_NAME


def load_config(path: str | os.PathLike[str]) -> Config:
    cfg_path = Path(path).resolve()
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config: {cfg_path} not found (run 'mss init' or pass --config)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {cfg_path}: invalid TOML: {exc}") from None
    return parse_config(raw, cfg_path)


def parse_config(raw: dict[str, Any], cfg_path: Path) -> Config:
    return _Reader(cfg_path.parent).section(Config, raw, "", given={"path": cfg_path})


# ----------------------------------------------------------------------------- rendering

COLUMN, WIDTH = 37, 96  # where a key's doc starts; the width of the rendered file


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(
        " ".join(text.split()), WIDTH - 2, break_on_hyphens=False)]


def _line(text: str, doc: str, hidden: bool) -> list[str]:
    """``key = value`` with its doc aligned at COLUMN (continued below it)."""
    text = f"# {text}" if hidden else text
    notes = textwrap.wrap(doc, WIDTH - COLUMN - 2, break_on_hyphens=False)
    if not notes:
        return [text]
    lead = "#" + " " * (COLUMN - 1) if hidden else " " * COLUMN
    if len(text) >= COLUMN - 1:  # a long line: its doc after it if it fits, else below
        one = f"{text} # {doc}"
        return [one] if len(one) <= WIDTH else [text] + [f"{lead}# {note}" for note in notes]
    return [f"{text:<{COLUMN - 1}} # {notes[0]}"] + [f"{lead}# {note}" for note in notes[1:]]


def _render(cls: type, path: str, hidden: bool, docs: bool = True,
            defaults: dict[str, Any] | None = None) -> list[str]:
    """The keys of section *cls*, then its tables; *hidden*: commented out (an example)."""
    out: list[str] = []
    tables: list[str] = []
    for f, kind in _keys(cls):
        meta = f.metadata
        if _section(kind) or get_origin(kind) is dict:
            tables += ["", *_render_table(f, kind, _join(path, f.name), hidden)]
            continue
        value = (defaults or {}).get(f.name, f.default)
        if value in (MISSING, None) or hidden and meta["example"] is not None:
            value = meta["example"]
        like = meta["like"]
        doc = meta["doc"] + (f" (default: {like})" if isinstance(like, str) else "")
        out += _line(f"{f.name} = {_shown(value)}", doc if docs else "",
                     hidden or f.default is None)
    return out + tables


def _render_table(f: dataclasses.Field[Any], kind: Any, path: str, hidden: bool) -> list[str]:
    """A field holding tables: a section, an optional one, an array or a dict of them."""
    sub, meta = _section(kind), f.metadata
    if sub is None:  # a table of strings
        return _line(f"[{path}]", meta["doc"], hidden) + [
            f"{'# ' if hidden else ''}{n} = {_shown(v)}" for n, v in meta["names"].items()]
    if get_origin(kind) is dict:  # one table per known name, keys documented in the first
        lines = _comment(meta["doc"])
        for i, (name, defaults) in enumerate(meta["names"].items()):
            lines += ([""] if i else []) + _line(f"[{path}.{name}]", defaults["doc"], False)
            lines += _render(sub, f"{path}.{name}", hidden, docs=not i, defaults=defaults)
        return lines
    many = get_origin(kind) is tuple
    absent = hidden or f.default is None or many
    header = f"[[{path}]]" if many else f"[{path}]"
    return [*_comment((sub.__doc__ or "") + (" Example:" if many else "")),
            f"# {header}" if absent else header, *_render(sub, path, absent)]


def render() -> str:
    """config/mss.toml: every section, key, default and doc of the schema."""
    lines = _comment(Config.__doc__ or "")
    for f, kind in _keys(Config):
        lines += ["", *_render_table(f, kind, f.name, False)]
    return "\n".join(lines) + "\n"


def render_default_config(domain: str, database_url: str = "sqlite:///mss.db") -> str:
    """The ``mss.toml`` that ``mss init`` writes (paths relative to the data dir)."""
    listeners = "".join(f'[listeners.{name}]\nhost = "127.0.0.1"\nport = {d["port"]}\n'
                        + (f'auth = {_shown(d.get("auth", FRONT_AUTH))}\n' if name in FRONTS
                           else "") + "\n"
                        for name, d in LISTENERS.items())
    return f"""# mss configuration written by 'mss init' (see config/mss.toml for every key)
[server]
data_dir = "."

[database]
url = "{database_url}"

[keys]
master_key_file = "keys/master.key"

[tls]
# DEVELOPMENT-ONLY certificates generated by 'mss init'; replace with IGC-Santé ones.
cert_file = "pki/server.crt"
key_file = "pki/server.key"
ca_file = "pki/ca.crt"

[smtp]
hostname = "mx.{domain}"
max_message_size = 52428800

# The four EX_LPS_0300 fronts ('mss dns records' prints their SRV records): submission and
# imap take Pro Santé Connect tokens and app passwords, submission-cert and imap-cert the
# IGC-Santé certificates of application (APP) mailboxes (docs/authentication.md).
{listeners}[portal]
# the web portal and autoconfig (docs/portal.md): set issuer (an [[auth.oidc]] name) first
enabled = false

# Pro Santé Connect as the token issuer (docs/identity.md); tokens are refused until set:
# [[auth.oidc]]
# name = "psc"
# issuer = "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet"
# audience = ["<the audience PSC puts in the tokens issued for your service>"]
# required_acr = "eidas1"
# national_id_claim = "preferred_username"  # the idNat ("8" + RPPS)

[logging]
level = "info"
"""


if __name__ == "__main__":  # python -m mss.config --write (render) | --check (compare)
    TARGET = Path(__file__).resolve().parents[1] / "config" / DEFAULT_CONFIG_NAME
    if sys.argv[1:] not in (["--write"], ["--check"]):
        sys.exit("usage: python -m mss.config --write | --check")
    if sys.argv[1:] == ["--write"]:
        TARGET.write_text(render(), encoding="utf-8")
    sys.exit(0 if TARGET.read_text(encoding="utf-8") == render() else
             f"{TARGET}: differs from the schema (python -m mss.config --write renders it)")
