"""Typed configuration loaded from one TOML file.

Every key is documented in ``config/mss.toml``. Relative paths are resolved against the
directory that holds the configuration file, so a data dir can be moved as a whole. An
invalid value raises :class:`ConfigError` naming the key and what is wrong; ``mss serve``
stops on it before opening any socket.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "mss.toml"


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    host: str
    port: int
    enabled: bool = True


@dataclass(frozen=True)
class SmtpConfig:
    hostname: str
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    session_timeout: float = 300.0
    data_timeout: float = 600.0
    line_length_limit: int = 1000  # RFC 5321 §4.5.3.1.6 text line incl. CRLF
    max_errors: int = 20  # bad commands before the session is closed
    auth_failures: int = 5  # failed AUTHs of one login or from one address ...
    auth_window: float = 900.0  # ... within this many seconds ...
    auth_lockout: float = 300.0  # ... refuse AUTH for that login / address this long (454)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    ca_file: Path


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
    transport: str  # "tls" (RFC 5425) | "udp" (RFC 5426)
    host: str
    port: int
    ca_file: Path | None = None  # trust anchors for the receiver's certificate
    cert_file: Path | None = None  # our client certificate (ATNA node authentication)
    key_file: Path | None = None
    server_name: str | None = None  # expected name in the receiver's certificate


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


DEFAULT_LISTENERS: dict[str, int] = {"mx": 2525, "submission": 2587, "submissions": 2465,
                                     "relay": 2526, "imap": 2143, "imaps": 2993}


def _get(table: dict[str, Any], key: str, prefix: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    name = f"{prefix}.{key}" if prefix else key
    if value is None:
        raise ConfigError(f"config: {name} is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config: {name}: expected {kind.__name__}, got {value!r}")
    return value


def _positive(value: float, name: str) -> None:
    if value <= 0:
        raise ConfigError(f"config: {name}: must be > 0, got {value!r}")


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config: [{key}] must be a table")
    return value


def _whitelist_fetch(raw: dict[str, Any], path_of: Any) -> WhitelistFetchConfig:
    prefix = "whitelist.fetch"
    url = _get(raw, "url", prefix, str, "")
    sha256_url = _get(raw, "sha256_url", prefix, str, "")
    for key, value in (("url", url), ("sha256_url", sha256_url)):
        if value and not value.startswith(("https://", "http://", "file://")):
            raise ConfigError(f"config: {prefix}.{key}: expected an http(s):// or file:// URL")
    if sha256_url and not url:
        raise ConfigError(f"config: {prefix}.sha256_url: given without {prefix}.url")
    ca_file = _get(raw, "ca_file", prefix, str, "")
    fetch = WhitelistFetchConfig(
        url=url, sha256_url=sha256_url,
        interval=_get(raw, "interval", prefix, float, 21600.0),
        timeout=_get(raw, "timeout", prefix, float, 60.0),
        max_bytes=_get(raw, "max_bytes", prefix, int, 64 * 1024 * 1024),
        ca_file=Path(path_of(ca_file)) if ca_file else None)
    if fetch.interval < 0:
        raise ConfigError(f"config: {prefix}.interval: must be >= 0 (0: off)")
    _positive(fetch.timeout, f"{prefix}.timeout")
    _positive(fetch.max_bytes, f"{prefix}.max_bytes")
    return fetch


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
    base = cfg_path.parent
    server = _table(raw, "server")
    data_dir = base / _get(server, "data_dir", "server", str, ".")

    def path_of(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (data_dir / p)

    db = _table(raw, "database")
    url = _get(db, "url", "database", str, "sqlite:///mss.db")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(path_of(url[len("sqlite:///"):]))
    elif not url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(f"config: database.url: unsupported scheme in {url!r}")
    change_poll = _get(db, "change_poll", "database", float, 0.2)
    _positive(change_poll, "database.change_poll")

    keys = _table(raw, "keys")
    master_key_file = path_of(_get(keys, "master_key_file", "keys", str, "keys/master.key"))

    tls_raw = _table(raw, "tls")
    tls = TlsConfig(
        cert_file=path_of(_get(tls_raw, "cert_file", "tls", str, "pki/server.crt")),
        key_file=path_of(_get(tls_raw, "key_file", "tls", str, "pki/server.key")),
        ca_file=path_of(_get(tls_raw, "ca_file", "tls", str, "pki/ca.crt")),
    )

    smtp_raw = _table(raw, "smtp")
    hostname = _get(smtp_raw, "hostname", "smtp", str, "localhost")
    smtp = SmtpConfig(
        hostname=hostname,
        max_message_size=_get(smtp_raw, "max_message_size", "smtp", int, 50 * 1024 * 1024),
        max_recipients=_get(smtp_raw, "max_recipients", "smtp", int, 100),
        session_timeout=_get(smtp_raw, "session_timeout", "smtp", float, 300.0),
        data_timeout=_get(smtp_raw, "data_timeout", "smtp", float, 600.0),
        line_length_limit=_get(smtp_raw, "line_length_limit", "smtp", int, 1000),
        max_errors=_get(smtp_raw, "max_errors", "smtp", int, 20),
        auth_failures=_get(smtp_raw, "auth_failures", "smtp", int, 5),
        auth_window=_get(smtp_raw, "auth_window", "smtp", float, 900.0),
        auth_lockout=_get(smtp_raw, "auth_lockout", "smtp", float, 300.0),
    )
    for key in ("max_message_size", "max_recipients", "session_timeout", "data_timeout",
                "max_errors", "auth_failures", "auth_window", "auth_lockout"):
        _positive(getattr(smtp, key), f"smtp.{key}")
    if smtp.line_length_limit < 1000:
        raise ConfigError("config: smtp.line_length_limit: RFC 5321 §4.5.3.1.6 needs >= 1000")

    listeners_raw = _table(raw, "listeners")
    unknown = set(listeners_raw) - set(DEFAULT_LISTENERS)
    if unknown:
        raise ConfigError(f"config: [listeners.{sorted(unknown)[0]}]: unknown listener")
    listeners: dict[str, ListenerConfig] = {}
    for name, default_port in DEFAULT_LISTENERS.items():
        section = listeners_raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"config: [listeners.{name}] must be a table")
        prefix = f"listeners.{name}"
        port = _get(section, "port", prefix, int, default_port)
        if not 0 <= port <= 65535:
            raise ConfigError(f"config: {prefix}.port: out of range: {port}")
        listeners[name] = ListenerConfig(
            name=name,
            host=_get(section, "host", prefix, str, "127.0.0.1"),
            port=port,
            enabled=_get(section, "enabled", prefix, bool, True),
        )

    wl_raw = _table(raw, "whitelist")
    whitelist = WhitelistConfig(
        max_shrink_ratio=_get(wl_raw, "max_shrink_ratio", "whitelist", float, 0.10),
        reload_interval=_get(wl_raw, "reload_interval", "whitelist", float, 5.0),
        fetch=_whitelist_fetch(_table(wl_raw, "fetch"), path_of),
    )
    if not 0.0 <= whitelist.max_shrink_ratio <= 1.0:
        raise ConfigError("config: whitelist.max_shrink_ratio: must be between 0 and 1")
    _positive(whitelist.reload_interval, "whitelist.reload_interval")

    log_raw = _table(raw, "logging")
    level = _get(log_raw, "level", "logging", str, "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"config: logging.level: unknown level {level!r}")
    log_file_raw = log_raw.get("file")
    if log_file_raw is not None and not isinstance(log_file_raw, str):
        raise ConfigError("config: logging.file: expected str")

    audit = _audit_config(_table(raw, "audit"), path_of, tls)

    workers = _get(server, "workers", "server", int, 1)
    if not 1 <= workers <= 64:
        raise ConfigError(f"config: server.workers: must be between 1 and 64, got {workers}")

    return Config(
        imap=_imap_config(_table(raw, "imap"), smtp.max_message_size),
        delivery=_delivery_config(_table(raw, "delivery")),
        pki=_pki_config(_table(raw, "pki"), path_of, tls),
        directory=_directory_config(raw.get("directory"), path_of),
        audit=audit,
        workers=workers,
        change_poll=change_poll,
        path=cfg_path,
        data_dir=data_dir,
        database_url=url,
        master_key_file=master_key_file,
        tls=tls,
        smtp=smtp,
        listeners=listeners,
        whitelist=whitelist,
        log_level=level,
        log_file=path_of(log_file_raw) if log_file_raw else None,
    )


def _audit_config(raw: dict[str, Any], path_of: Any, tls: TlsConfig) -> AuditConfig:
    destinations = []
    items = raw.get("destinations", [])
    if not isinstance(items, list):
        raise ConfigError("config: [[audit.destinations]] must be an array of tables")
    names = set()
    for index, item in enumerate(items):
        prefix = f"audit.destinations[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config: {prefix} must be a table")
        name = _get(item, "name", prefix, str, f"destination{index}")
        if name in names:
            raise ConfigError(f"config: {prefix}.name: duplicate name {name!r}")
        names.add(name)
        transport = _get(item, "transport", prefix, str, "tls")
        if transport not in ("tls", "udp"):
            raise ConfigError(f"config: {prefix}.transport: 'tls' or 'udp', got {transport!r}")
        port = _get(item, "port", prefix, int, 6514 if transport == "tls" else 514)
        if not 0 < port <= 65535:
            raise ConfigError(f"config: {prefix}.port: out of range: {port}")

        def optional_path(key: str, default: Path | None, item: dict[str, Any] = item,
                          prefix: str = prefix) -> Path | None:
            value = item.get(key)
            if value is None:
                return default
            if not isinstance(value, str):
                raise ConfigError(f"config: {prefix}.{key}: expected str")
            return Path(path_of(value))

        server_name = item.get("server_name")
        if server_name is not None and not isinstance(server_name, str):
            raise ConfigError(f"config: {prefix}.server_name: expected str")
        destinations.append(AuditDestination(
            name=name, transport=transport, host=_get(item, "host", prefix, str, "127.0.0.1"),
            port=port, ca_file=optional_path("ca_file", tls.ca_file),
            cert_file=optional_path("cert_file", tls.cert_file),
            key_file=optional_path("key_file", tls.key_file), server_name=server_name))
    config = AuditConfig(
        destinations=tuple(destinations),
        ship_interval=_get(raw, "ship_interval", "audit", float, 1.0),
        batch=_get(raw, "batch", "audit", int, 500),
        retention_days=_get(raw, "retention_days", "audit", int, 365),
        checkpoint_interval=_get(raw, "checkpoint_interval", "audit", float, 300.0),
        signing_key_file=Path(path_of(_get(raw, "signing_key_file", "audit", str,
                                           "keys/audit-signing.key"))),
        pseudonym_key_file=Path(path_of(_get(raw, "pseudonym_key_file", "audit", str,
                                             "keys/pseudonym.key"))),
    )
    if config.retention_days < 183:
        raise ConfigError("config: audit.retention_days: at least 183 (six months of traces)")
    _positive(config.checkpoint_interval, "audit.checkpoint_interval")
    _positive(config.ship_interval, "audit.ship_interval")
    _positive(config.batch, "audit.batch")
    return config


def _delivery_config(raw: dict[str, Any]) -> DeliveryConfig:
    p = "delivery"
    d = DeliveryConfig()
    nameservers = raw.get("nameservers", [])
    if not isinstance(nameservers, list) or not all(isinstance(n, str) for n in nameservers):
        raise ConfigError("config: delivery.nameservers: a list of IP addresses")
    values: dict[str, Any] = {"nameservers": tuple(nameservers)}
    for key, kind in (("enabled", bool), ("dns_port", int), ("dns_timeout", float),
                      ("port", int), ("connect_timeout", float), ("command_timeout", float),
                      ("max_attempts", int), ("retry_base", float), ("retry_factor", float),
                      ("retry_max", float), ("jitter", float), ("max_age", float),
                      ("lease", float), ("poll_interval", float), ("batch", int),
                      ("max_concurrency", int), ("max_per_destination", int),
                      ("session_reuse", int), ("session_idle", float)):
        values[key] = _get(raw, key, p, kind, getattr(d, key))
    config = DeliveryConfig(**values)
    for key in ("dns_port", "port", "dns_timeout", "connect_timeout", "command_timeout",
                "max_attempts", "retry_base", "retry_max", "max_age", "lease",
                "poll_interval", "batch", "max_concurrency", "max_per_destination",
                "session_reuse"):
        _positive(getattr(config, key), f"delivery.{key}")
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


def _pki_config(raw: dict[str, Any], path_of: Any, tls: TlsConfig) -> PkiConfig:
    p = "pki"
    d = PkiConfig(anchors=tls.ca_file)
    intermediates = _get(raw, "intermediates", p, str, "")
    files = raw.get("crl_files", [])
    urls = raw.get("crl_urls", [])
    for key, value in (("crl_files", files), ("crl_urls", urls)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config: pki.{key}: a list of strings")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"config: pki.crl_urls: not an http(s) URL: {url!r}")
    anchors = raw.get("anchors")
    if anchors is not None and not isinstance(anchors, str):
        raise ConfigError("config: pki.anchors: expected str")
    config = PkiConfig(
        anchors=Path(path_of(anchors)) if anchors else tls.ca_file,
        intermediates=Path(path_of(intermediates)) if intermediates else None,
        crl_files=tuple(Path(path_of(f)) for f in files), crl_urls=tuple(urls),
        crl_unavailable=_get(raw, "crl_unavailable", p, str, d.crl_unavailable),
        crl_fetch_timeout=_get(raw, "crl_fetch_timeout", p, float, d.crl_fetch_timeout),
        crl_refresh_interval=_get(raw, "crl_refresh_interval", p, float,
                                  d.crl_refresh_interval),
        crl_retry_interval=_get(raw, "crl_retry_interval", p, float, d.crl_retry_interval),
        crl_cache_dir=Path(path_of(_get(raw, "crl_cache_dir", p, str, "crl-cache"))),
        verify_cache_ttl=_get(raw, "verify_cache_ttl", p, float, d.verify_cache_ttl),
    )
    if config.crl_unavailable not in ("fail-closed", "fail-open"):
        raise ConfigError("config: pki.crl_unavailable: 'fail-closed' or 'fail-open', got "
                          f"{config.crl_unavailable!r}")
    for key in ("crl_fetch_timeout", "crl_refresh_interval", "crl_retry_interval"):
        _positive(getattr(config, key), f"pki.{key}")
    if config.verify_cache_ttl < 0:
        raise ConfigError("config: pki.verify_cache_ttl: must be >= 0")
    return config


def _imap_config(raw: dict[str, Any], max_message_size: int) -> ImapConfig:
    d = ImapConfig(max_literal_size=max_message_size)
    values: dict[str, Any] = {}
    for key, kind in (("session_timeout", float), ("preauth_timeout", float),
                      ("max_line_length", int), ("max_literal_size", int),
                      ("max_errors", int), ("idle_poll", float), ("login_failures", int),
                      ("login_window", float), ("login_lockout", float)):
        values[key] = _get(raw, key, "imap", kind, getattr(d, key))
        _positive(values[key], f"imap.{key}")
    if values["max_line_length"] < 1000:
        raise ConfigError("config: imap.max_line_length: must be >= 1000")
    return ImapConfig(**values)


def _publish_config(raw: Any, path_of: Any) -> PublishConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("config: [directory.publish] must be a table")
    p = "directory.publish"
    password_file = raw.get("password_file")
    return PublishConfig(url=_get(raw, "url", p, str, None),
                         bind_dn=_get(raw, "bind_dn", p, str, None),
                         base_dn=_get(raw, "base_dn", p, str, None),
                         password_file=Path(path_of(password_file)) if password_file else None,
                         password_env=raw.get("password_env"))


def _directory_config(raw: Any, path_of: Any) -> DirectoryConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("config: [directory] must be a table")
    p = "directory"
    urls = raw.get("urls", raw.get("url"))
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError("config: directory.urls: a list of ldap:// or ldaps:// URLs")
    for url in urls:
        if not url.startswith(("ldap://", "ldaps://")):
            raise ConfigError(f"config: directory.urls: not an LDAP URL: {url!r}")
    tls = _get(raw, "tls", p, str, "none")
    if tls not in ("none", "starttls", "ldaps"):
        raise ConfigError(f"config: directory.tls: none, starttls or ldaps, got {tls!r}")
    attributes = dict(DEFAULT_ATTRIBUTES)
    mapping = raw.get("attributes", {})
    if not isinstance(mapping, dict):
        raise ConfigError("config: [directory.attributes] must be a table")
    for key, value in mapping.items():
        if key not in DIRECTORY_FIELDS or not isinstance(value, str):
            raise ConfigError(f"config: directory.attributes.{key}: unknown field or not a str")
        attributes[key] = value
    password_file = raw.get("password_file")
    unpublished = raw.get("unpublished_domains", [])
    if not isinstance(unpublished, list):
        raise ConfigError("config: directory.unpublished_domains: a list of domains")
    config = DirectoryConfig(
        urls=tuple(urls), base_dn=_get(raw, "base_dn", p, str, None),
        bind_dn=raw.get("bind_dn"),
        password_file=Path(path_of(password_file)) if password_file else None,
        password_env=raw.get("password_env"),
        filter=_get(raw, "filter", p, str, "(objectClass=mssMailbox)"), tls=tls,
        ca_file=Path(path_of(raw["ca_file"])) if raw.get("ca_file") else None,
        page_size=_get(raw, "page_size", p, int, 1000),
        timeout=_get(raw, "timeout", p, float, 30.0),
        interval=_get(raw, "interval", p, float, 3600.0),
        full_every=_get(raw, "full_every", p, float, 86400.0),
        reject_invalid=_get(raw, "reject_invalid", p, bool, False),
        check_recipients=_get(raw, "check_recipients", p, bool, True),
        unpublished_domains=tuple(str(d).lower() for d in unpublished),
        attributes=attributes,
        publish=_publish_config(raw.get("publish"), path_of),
    )
    _positive(config.page_size, "directory.page_size")
    _positive(config.timeout, "directory.timeout")
    return config


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
