"""Typed configuration loaded from one TOML file.

Every key is documented in ``config/mss.toml``. The dataclasses below are the schema: each
field of a section's dataclass is a key of its table, read with the field's type and default
(:func:`_fill`), so adding a key is adding a field. A key that no section asks for (a typo:
``crl_file`` for ``crl_files``) is an error naming its path and the nearest valid name, never
silently ignored. Relative paths are resolved against ``server.data_dir`` so a data dir can be
moved as a whole. An invalid value raises :class:`ConfigError` naming the key and what is
wrong; ``mss serve`` and every CLI command stop on it (exit 2) before opening any socket.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

DEFAULT_CONFIG_NAME = "mss.toml"


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class ListenerConfig:
    name: str  # the table's name (listeners.NAME), not a key
    port: int
    host: str = "127.0.0.1"
    enabled: bool = True
    # connection caps of this listener, per serving process (mss/limits.py); over one the
    # client gets 421 4.7.0 (SMTP) or * BYE (IMAP) and the connection closes, audited
    max_connections: int = 1000  # open connections in total
    max_connections_per_address: int = 100  # from one client IP address
    max_preauth: int = 500  # not yet authenticated (IMAP login, SMTP AUTH / certificate)
    max_preauth_per_address: int = 32  # of those, from one client IP address


LISTENER_LIMITS = ("max_connections", "max_connections_per_address", "max_preauth",
                   "max_preauth_per_address")


@dataclass(frozen=True)
class LimitsConfig:
    """Process-wide resource bounds (``[limits]``, mss/limits.py)."""

    pending_bytes: int = 512 * 1024 * 1024  # DATA and literals being read, all sessions
    report_interval: float = 10.0  # one log line / audit record per kind this often


@dataclass(frozen=True)
class SmtpConfig:
    hostname: str = "localhost"
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    session_timeout: float = 300.0
    # before AUTH (submission, relay) or a verified client certificate at MAIL FROM (MX,
    # relay): one deadline from the connection for the whole phase, then 421 4.4.2
    preauth_timeout: float = 60.0
    data_timeout: float = 600.0
    line_length_limit: int = 1000  # RFC 5321 §4.5.3.1.6 text line incl. CRLF
    max_errors: int = 20  # bad commands before the session is closed
    auth_failures: int = 5  # failed AUTHs of one login or from one address ...
    auth_window: float = 900.0  # ... within this many seconds ...
    auth_lockout: float = 300.0  # ... refuse AUTH for that login / address this long (454)
    # RFC 5321 §4.5.1: the hosted mailbox receiving mail for postmaster@ each hosted domain
    # without a postmaster mailbox of its own, and for <Postmaster>; "" = none
    postmaster: str = ""


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path = Path("pki/server.crt")
    key_file: Path = Path("pki/server.key")
    ca_file: Path = Path("pki/ca.crt")


@dataclass(frozen=True)
class WhitelistFetchConfig:
    """Where ``mss serve`` fetches the national list from (``[whitelist.fetch]``)."""

    url: str = ""  # http(s):// or file://; "" = no periodic fetch
    sha256_url: str = ""  # the published checksum of the list, verified when given
    interval: float = 21600.0  # seconds between conditional GETs (0: off)
    timeout: float = 60.0
    max_bytes: int = 64 * 1024 * 1024
    ca_file: Path | None = None  # trust anchors for an https URL (None: system store)


@dataclass(frozen=True)
class WhitelistConfig:
    max_shrink_ratio: float = 0.10
    reload_interval: float = 5.0
    fetch: WhitelistFetchConfig = field(default_factory=WhitelistFetchConfig)


@dataclass(frozen=True)
class AuditDestination:
    """A syslog receiver of the audit trail (an ATNA audit record repository)."""

    name: str
    transport: str = "tls"  # "tls" (RFC 5425) | "udp" (RFC 5426)
    host: str = "127.0.0.1"
    port: int = 6514  # 514 when transport = "udp"
    ca_file: Path | None = None  # trust anchors for the receiver's certificate
    cert_file: Path | None = None  # our client certificate (ATNA node authentication)
    key_file: Path | None = None
    server_name: str | None = None  # name checked in the receiver's certificate (tls: host)


@dataclass(frozen=True)
class AuditConfig:
    destinations: tuple[AuditDestination, ...] = ()
    ship_interval: float = 1.0  # seconds between polls of the outbox when idle
    batch: int = 500
    retention_days: int = 365
    checkpoint_interval: float = 300.0
    signing_key_file: Path = Path("keys/audit-signing.key")
    pseudonym_key_file: Path = Path("keys/pseudonym.key")


DIRECTORY_FIELDS = ("mail", "type", "id_nat", "display_name", "given_name", "surname",
                    "profession", "structure_id", "service", "city", "liste_rouge")
DEFAULT_ATTRIBUTES = {
    "mail": "mail", "type": "mssMailboxType", "id_nat": "mssIdNat", "display_name": "cn",
    "given_name": "givenName", "surname": "sn", "profession": "mssProfession",
    "structure_id": "mssStructureId", "service": "mssService", "city": "l",
    "liste_rouge": "mssListeRouge",
}


@dataclass(frozen=True)
class PublishConfig:
    """Where our mailboxes are published (a writable LDAP subtree)."""

    url: str
    bind_dn: str
    base_dn: str
    password_file: Path | None = None
    password_env: str | None = None
    tls: str = "none"  # none | starttls | ldaps (an ldaps:// url is ldaps), as directory.tls
    ca_file: Path | None = None  # trust anchors of the server (default: directory.ca_file)


@dataclass(frozen=True)
class DirectoryConfig:
    """LDAP source of the professional directory (absent: no sync, no recipient check)."""

    urls: tuple[str, ...]
    base_dn: str
    bind_dn: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    filter: str = "(objectClass=mssMailbox)"
    tls: str = "none"  # none | starttls | ldaps
    ca_file: Path | None = None
    page_size: int = 1000
    timeout: float = 30.0
    interval: float = 3600.0  # seconds between syncs in mss serve (0: off)
    full_every: float = 86400.0  # a full sync at least this often
    reject_invalid: bool = False  # True: a bad entry fails the run
    check_recipients: bool = True  # submission and relay: remote recipients must be listed
    unpublished_domains: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    publish: PublishConfig | None = None

    def password(self) -> str | None:
        return read_secret("directory", self.password_env, self.password_file)


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


@dataclass(frozen=True)
class DeliveryConfig:
    """The outbound queue worker (DESIGN.md §2 "Outbound queue"); every key in mss.toml."""

    enabled: bool = True
    nameservers: tuple[str, ...] = ()  # empty: the system resolver (/etc/resolv.conf)
    dns_port: int = 53
    dns_timeout: float = 5.0
    port: int = 25  # SMTP port of the peers' MX hosts (RFC 5321 §4.5.4.1)
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2 (DATA end: 10 minutes max)
    max_attempts: int = 8
    retry_base: float = 1200.0  # first retry after about this many seconds
    retry_factor: float = 2.0  # each next wait multiplied by this
    retry_max: float = 86400.0  # no wait longer than this
    jitter: float = 0.2  # +/- this fraction of each wait, at random
    max_age: float = 172800.0  # a message not delivered after this is expired (DSN)
    lease: float = 900.0  # a claimed row is reclaimed by any worker after this
    poll_interval: float = 30.0  # safety poll: commits wake the worker (mss/changes.py)
    batch: int = 50  # rows claimed at once
    max_concurrency: int = 20  # deliveries in flight per worker process
    max_per_destination: int = 4  # of which to one destination domain
    session_reuse: int = 100  # messages sent over one SMTP session at most (1: no reuse)
    session_idle: float = 5.0  # seconds an idle session is kept for the next message (0: none)


@dataclass(frozen=True)
class PkiConfig:
    """Verification of peers' client certificates on the MX and relay listeners and of
    the servers the queue delivers to (docs/trust-space.md "Inbound", "Outbound
    delivery"); every key documented in config/mss.toml."""

    anchors: Path  # PEM bundle of trust anchors (default: tls.ca_file)
    intermediates: Path | None = None  # PEM bundle of intermediate CAs (optional)
    crl_files: tuple[Path, ...] = ()
    crl_urls: tuple[str, ...] = ()
    crl_unavailable: str = "fail-closed"  # fail-closed (454 4.7.0) | fail-open (accept)
    crl_fetch_timeout: float = 10.0
    crl_refresh_interval: float = 3600.0
    crl_retry_interval: float = 60.0
    crl_cache_dir: Path = Path("crl-cache")
    verify_cache_ttl: float = 300.0


@dataclass(frozen=True)
class ImapConfig:
    """The IMAP server (proxy/imap); every key in config/mss.toml ``[imap]``."""

    session_timeout: float = 1800.0  # RFC 3501 §5.4: at least 30 minutes once logged in
    preauth_timeout: float = 60.0  # before login
    max_line_length: int = 65536  # one command line (literals excluded)
    max_literal_size: int = 50 * 1024 * 1024  # APPENDLIMIT (RFC 7889)
    max_errors: int = 20  # BAD replies before the connection is closed
    idle_poll: float = 30.0  # IDLE's safety poll: commits wake it (mss/changes.py)
    login_failures: int = 5  # failed logins of a user or from an address ...
    login_window: float = 900.0  # ... within this many seconds ...
    login_lockout: float = 300.0  # ... refuse further logins for this long
    enabled_check: float = 10.0  # seconds between checks that a session's mailbox is enabled


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    database_url: str
    master_key_file: Path
    tls: TlsConfig
    smtp: SmtpConfig
    listeners: dict[str, ListenerConfig]
    whitelist: WhitelistConfig = field(default_factory=WhitelistConfig)
    log_level: str = "info"
    log_file: Path | None = None
    workers: int = 1
    change_poll: float = 0.2  # seconds between reads of the change counter (mss/changes.py)
    audit: AuditConfig = field(default_factory=AuditConfig)
    directory: DirectoryConfig | None = None
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    pki: PkiConfig | None = None  # always set by parse_config (anchors default to tls.ca_file)
    imap: ImapConfig = field(default_factory=ImapConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


DEFAULT_LISTENERS: dict[str, int] = {"mx": 2525, "submission": 2587, "submissions": 2465,
                                     "relay": 2526, "imap": 2143, "imaps": 2993}

T = TypeVar("T")
PathOf = Callable[[str], Path]


class _Table:
    """One TOML table being read. It remembers every key asked for, present or not, so
    that :meth:`done` can refuse a key nobody asked for, naming its path and the nearest
    valid name (a typo must never silently fall back to a default)."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"config: [{path}] must be a table")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.asked: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self.raw.get(key, default)

    def table(self, key: str) -> _Table:
        """A sub-table (absent: empty)."""
        return _Table(self.get(key, {}), self.name(key))

    def tables(self, key: str) -> list[_Table]:
        """An array of tables (``[[key]]``; absent: none)."""
        items = self.get(key, [])
        if not isinstance(items, list):
            raise ConfigError(f"config: [[{self.name(key)}]] must be an array of tables")
        return [_Table(item, f"{self.name(key)}[{i}]") for i, item in enumerate(items)]

    def value(self, key: str, kind: Any, default: Any = dataclasses.MISSING) -> Any:
        """The key's value as *kind* (a type annotation); *default* when absent."""
        if key not in self.raw:
            self.asked.add(key)
            if default is dataclasses.MISSING:
                raise ConfigError(f"config: {self.name(key)} is required")
            return default
        return _convert(self.get(key), kind, self.name(key))

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.asked)
        if unknown:
            key = unknown[0]
            what = "table" if isinstance(self.raw[key], dict) else "key"
            near = difflib.get_close_matches(key, sorted(self.asked), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"config: unknown {what} {self.name(key)!r}{hint}")


def _convert(value: Any, kind: Any, name: str) -> Any:
    """*value* checked against the annotation *kind* (paths stay strings: see _fill)."""
    args = [a for a in get_args(kind) if a is not NoneType]
    if isinstance(kind, UnionType):  # X | None: "" means None for a path
        return None if value == "" and args[0] is Path else _convert(value, args[0], name)
    if get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"config: {name}: expected a list, got {value!r}")
        return tuple(_convert(v, args[0], name) for v in value)
    expected = {Path: str, float: int | float}.get(kind, kind)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, expected):
        raise ConfigError(f"config: {name}: expected {getattr(kind, '__name__', kind)}, "
                          f"got {value!r}")
    return float(value) if kind is float else value


def _is_path(kind: Any) -> bool:
    return kind is Path or Path in get_args(kind)


def _fill(cls: type[T], table: _Table, path_of: PathOf, given: dict[str, Any] | None = None,
          defaults: dict[str, Any] | None = None) -> T:
    """*cls* read from *table*: each field not *given* is the key of the same name, of the
    field's type, defaulting to *defaults* or the field's default; a dataclass field is a
    sub-table. Unknown keys are refused before any value is checked (a typo first)."""
    given, defaults = dict(given or {}), defaults or {}
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    table.asked.update(n for n in names if n not in given)
    table.done()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            continue
        kind = hints[f.name]
        sub = next((a for a in (kind, *get_args(kind)) if isinstance(a, type)
                    and dataclasses.is_dataclass(a)), None)
        if sub is not None:
            given[f.name] = (None if sub is not kind and f.name not in table.raw
                             else _fill(sub, table.table(f.name), path_of))
            continue
        default = defaults.get(f.name, f.default)
        if default is dataclasses.MISSING and callable(f.default_factory):
            default = f.default_factory()
        value = table.value(f.name, kind, default)
        if _is_path(kind) and value is not None:
            value = (tuple(Path(path_of(str(v))) for v in value) if isinstance(value, tuple)
                     else Path(path_of(str(value))))
        given[f.name] = value
    return cls(**given)


def _positive(obj: Any, prefix: str, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) <= 0:
            raise ConfigError(f"config: {prefix}.{key}: must be > 0, got {getattr(obj, key)!r}")


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
    top = _Table(raw, "")
    server = top.table("server")
    data_dir = cfg_path.parent / server.value("data_dir", str, ".")
    workers = server.value("workers", int, 1)
    server.done()
    if not 1 <= workers <= 64:
        raise ConfigError(f"config: server.workers: must be between 1 and 64, got {workers}")

    def path_of(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (data_dir / p)

    db = top.table("database")
    url = db.value("url", str, "sqlite:///mss.db")
    change_poll = db.value("change_poll", float, 0.2)
    db.done()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(path_of(url[len("sqlite:///"):]))
    elif not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"config: database.url: unsupported scheme in {url!r}")
    if change_poll <= 0:
        raise ConfigError(f"config: database.change_poll: must be > 0, got {change_poll!r}")

    keys = top.table("keys")
    master_key_file = path_of(keys.value("master_key_file", str, "keys/master.key"))
    keys.done()

    log = top.table("logging")
    level = log.value("level", str, "info").lower()
    log_file = log.value("file", Path | None, None)
    log.done()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"config: logging.level: unknown level {level!r}")

    tls = _fill(TlsConfig, top.table("tls"), path_of)
    smtp = _smtp_config(_fill(SmtpConfig, top.table("smtp"), path_of))
    config = Config(
        path=cfg_path, data_dir=data_dir, database_url=url, master_key_file=master_key_file,
        tls=tls, smtp=smtp, listeners=_listeners(top.table("listeners"), path_of),
        whitelist=_whitelist_config(_fill(WhitelistConfig, top.table("whitelist"), path_of)),
        log_level=level, log_file=path_of(log_file) if log_file else None, workers=workers,
        change_poll=change_poll,
        audit=_audit_config(top.table("audit"), path_of, tls),
        directory=_directory_config(top, path_of),
        delivery=_delivery_config(_fill(DeliveryConfig, top.table("delivery"), path_of)),
        pki=_pki_config(_fill(PkiConfig, top.table("pki"), path_of,
                              defaults={"anchors": tls.ca_file})),
        imap=_imap_config(_fill(ImapConfig, top.table("imap"), path_of,
                                defaults={"max_literal_size": smtp.max_message_size})),
        limits=_limits_config(_fill(LimitsConfig, top.table("limits"), path_of)),
    )
    top.done()
    return config


def _smtp_config(smtp: SmtpConfig) -> SmtpConfig:
    _positive(smtp, "smtp", "max_message_size", "max_recipients", "session_timeout",
              "preauth_timeout", "data_timeout", "max_errors", "auth_failures", "auth_window",
              "auth_lockout")
    if smtp.line_length_limit < 1000:
        raise ConfigError("config: smtp.line_length_limit: RFC 5321 §4.5.3.1.6 needs >= 1000")
    return dataclasses.replace(smtp, postmaster=_postmaster(smtp.postmaster))


def _listeners(table: _Table, path_of: PathOf) -> dict[str, ListenerConfig]:
    listeners = {name: _fill(ListenerConfig, table.table(name), path_of, given={"name": name},
                             defaults={"port": port})
                 for name, port in DEFAULT_LISTENERS.items()}
    table.done()
    for name, listener in listeners.items():
        if not 0 <= listener.port <= 65535:
            raise ConfigError(f"config: listeners.{name}.port: out of range: {listener.port}")
        _positive(listener, f"listeners.{name}", *LISTENER_LIMITS)
    return listeners


def _whitelist_config(whitelist: WhitelistConfig) -> WhitelistConfig:
    if not 0.0 <= whitelist.max_shrink_ratio <= 1.0:
        raise ConfigError("config: whitelist.max_shrink_ratio: must be between 0 and 1")
    _positive(whitelist, "whitelist", "reload_interval")
    prefix, fetch = "whitelist.fetch", whitelist.fetch
    for key in ("url", "sha256_url"):
        value = getattr(fetch, key)
        if value and not value.startswith(("https://", "http://", "file://")):
            raise ConfigError(f"config: {prefix}.{key}: expected an http(s):// or file:// URL")
    if fetch.sha256_url and not fetch.url:
        raise ConfigError(f"config: {prefix}.sha256_url: given without {prefix}.url")
    if fetch.interval < 0:
        raise ConfigError(f"config: {prefix}.interval: must be >= 0 (0: off)")
    _positive(fetch, prefix, "timeout", "max_bytes")
    return whitelist


_DNS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?", re.I)


def _checkable_name(name: str) -> bool:
    """True if *name* can be matched against a certificate (RFC 6125 §6: a DNS name or an
    IP address; not empty, not a wildcard)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_DNS_NAME.fullmatch(name))


def _audit_destination(table: _Table, index: int, path_of: PathOf,
                       tls: TlsConfig) -> AuditDestination:
    transport = table.value("transport", str, "tls")
    if transport not in ("tls", "udp"):
        raise ConfigError(f"config: {table.name('transport')}: 'tls' or 'udp', "
                          f"got {transport!r}")
    dest = _fill(AuditDestination, table, path_of, given={"transport": transport}, defaults={
        "name": f"destination{index}", "port": 6514 if transport == "tls" else 514,
        "ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file})
    if not 0 < dest.port <= 65535:
        raise ConfigError(f"config: {table.name('port')}: out of range: {dest.port}")
    if transport == "tls":  # the receiver's name is always checked (RFC 5425 §5.2)
        server_name = dest.host if dest.server_name is None else dest.server_name
        if not _checkable_name(server_name):
            key = "server_name" if dest.server_name is not None else "host"
            raise ConfigError(f"config: {table.name(key)}: {server_name!r} cannot be checked "
                              "in the receiver's certificate (a DNS name or an IP address)")
        dest = dataclasses.replace(dest, server_name=server_name)
    return dest


def _audit_config(table: _Table, path_of: PathOf, tls: TlsConfig) -> AuditConfig:
    destinations = tuple(_audit_destination(item, index, path_of, tls)
                         for index, item in enumerate(table.tables("destinations")))
    names = [d.name for d in destinations]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"config: audit.destinations[{index}].name: duplicate name "
                              f"{name!r}")
    config = _fill(AuditConfig, table, path_of, given={"destinations": destinations})
    if config.retention_days < 183:
        raise ConfigError("config: audit.retention_days: at least 183 (six months of traces)")
    _positive(config, "audit", "checkpoint_interval", "ship_interval", "batch")
    return config


def _delivery_config(config: DeliveryConfig) -> DeliveryConfig:
    _positive(config, "delivery", "dns_port", "port", "dns_timeout", "connect_timeout",
              "command_timeout", "max_attempts", "retry_base", "retry_max", "max_age",
              "lease", "poll_interval", "batch", "max_concurrency", "max_per_destination",
              "session_reuse")
    if config.retry_factor < 1.0:
        raise ConfigError("config: delivery.retry_factor: must be >= 1")
    if config.lease * 0.8 <= 2 * config.connect_timeout:
        raise ConfigError("config: delivery.lease: must exceed 2.5 x delivery.connect_timeout "
                          "(an attempt must end within 80 % of its lease)")
    if not 0.0 <= config.jitter < 1.0:
        raise ConfigError("config: delivery.jitter: must be in [0, 1)")
    if not 0.0 <= config.session_idle <= 240.0:  # RFC 5321 §4.5.3.2.7: servers wait 5 min
        raise ConfigError("config: delivery.session_idle: must be in [0, 240] seconds")
    if config.port > 65535 or config.dns_port > 65535:
        raise ConfigError("config: delivery.port/dns_port: out of range")
    return config


def _pki_config(config: PkiConfig) -> PkiConfig:
    for url in config.crl_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"config: pki.crl_urls: not an http(s) URL: {url!r}")
    if config.crl_unavailable not in ("fail-closed", "fail-open"):
        raise ConfigError("config: pki.crl_unavailable: 'fail-closed' or 'fail-open', got "
                          f"{config.crl_unavailable!r}")
    _positive(config, "pki", "crl_fetch_timeout", "crl_refresh_interval", "crl_retry_interval")
    if config.verify_cache_ttl < 0:
        raise ConfigError("config: pki.verify_cache_ttl: must be >= 0")
    return config


def _imap_config(config: ImapConfig) -> ImapConfig:
    _positive(config, "imap", *(f.name for f in dataclasses.fields(config)))
    if config.max_line_length < 1000:
        raise ConfigError("config: imap.max_line_length: must be >= 1000")
    return config


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


def _no_cleartext_bind(key: str, urls: tuple[str, ...], tls: str, has_password: bool) -> None:
    for url in urls:
        if cleartext_bind(url, tls, has_password):
            raise ConfigError(f"config: {key}: \"none\" would send the bind password in "
                              f"clear to {url}; use ldaps:// or tls = \"starttls\" or "
                              f"\"ldaps\" (only a loopback host may go without TLS)")


def _directory_config(top: _Table, path_of: PathOf) -> DirectoryConfig | None:
    if top.get("directory") is None:
        return None
    table, p = top.table("directory"), "directory"
    mapping = table.table("attributes")
    given: dict[str, Any] = {"attributes": {key: mapping.value(key, str, default)
                                            for key, default in DEFAULT_ATTRIBUTES.items()}}
    mapping.done()
    one = table.get("url")  # one server: 'url' instead of 'urls'
    if one is not None and "urls" not in table.raw:
        given["urls"] = (_convert(one, str, f"{p}.url"),)
    config = _fill(DirectoryConfig, table, path_of, given=given)
    if not config.urls or not all(u.startswith(("ldap://", "ldaps://")) for u in config.urls):
        raise ConfigError(f"config: {p}.urls: a list of ldap:// or ldaps:// URLs, "
                          f"got {list(config.urls)!r}")
    publish = config.publish
    for key, mode in (("tls", config.tls), ("publish.tls", publish.tls if publish else "none")):
        if mode not in ("none", "starttls", "ldaps"):
            raise ConfigError(f"config: {p}.{key}: none, starttls or ldaps, got {mode!r}")
    if publish and not publish.url.startswith(("ldap://", "ldaps://")):
        raise ConfigError(f"config: {p}.publish.url: not an LDAP URL: {publish.url!r}")
    if publish and publish.ca_file is None:
        publish = dataclasses.replace(publish, ca_file=config.ca_file)
    # TLS before any credential (RFC 4513 §6.3.4), checked before any connection
    _no_cleartext_bind(f"{p}.tls", config.urls, config.tls,
                       bool(config.bind_dn and (config.password_file or config.password_env)))
    if publish:
        _no_cleartext_bind(f"{p}.publish.tls", (publish.url,), publish.tls,
                           bool(publish.password_file or publish.password_env))
    _positive(config, p, "page_size", "timeout")
    return dataclasses.replace(config, publish=publish, unpublished_domains=tuple(
        d.lower() for d in config.unpublished_domains))


def _postmaster(value: str) -> str:
    """smtp.postmaster normalised (an address), or "" when unset."""
    if not value.strip():
        return ""
    from mss.store import StoreError, normalize_address

    try:
        return normalize_address(value)
    except StoreError as exc:
        raise ConfigError(f"config: smtp.postmaster: {exc}") from None


def render_default_config(domain: str) -> str:
    """The ``mss.toml`` that ``mss init`` writes (paths relative to the data dir)."""
    return f"""# mss configuration written by 'mss init' (see config/mss.toml for every key)
[server]
data_dir = "."

[database]
url = "sqlite:///mss.db"

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

[listeners.mx]
host = "127.0.0.1"
port = 2525

[listeners.submission]
host = "127.0.0.1"
port = 2587

[listeners.submissions]
host = "127.0.0.1"
port = 2465

[listeners.relay]
host = "127.0.0.1"
port = 2526

[listeners.imap]
host = "127.0.0.1"
port = 2143

[listeners.imaps]
host = "127.0.0.1"
port = 2993

[logging]
level = "info"
"""


def _limits_config(limits: LimitsConfig) -> LimitsConfig:
    _positive(limits, "limits", "pending_bytes", "report_interval")
    return limits
