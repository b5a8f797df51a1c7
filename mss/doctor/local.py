"""What the node holds: the whitelist in force (our DN per hosted domain, its age), the
modes of its secrets and data directory, its schema version."""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mss.config import Config
from mss.doctor.findings import Finding, fail, ok, warn
from mss.doctor.pki import Ours

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from trustspace.whitelist import Whitelist

WHITELIST_MAX_AGE = 7 * 86400.0  # seconds: an older list (no fetch configured) is stale


def check_whitelist(config: Config, conn: Connection, ours: Ours | None,
                    domains: Sequence[str], now: float) -> list[Finding]:
    from trustspace.dn import canonical_name
    from trustspace.registry import active_version_info, load_active

    info = active_version_info(conn)
    if info is None:
        return [fail("whitelist", "no national whitelist imported: mss whitelist import FILE, "
                     "or set whitelist.fetch.url")]
    fetch = config.whitelist.fetch
    limit = 3 * fetch.interval if fetch.url and fetch.interval else WHITELIST_MAX_AGE
    age = now - float(info["imported_at"])
    checked = _last_check(conn, fetch.url)
    if checked is not None:
        age = min(age, now - checked)  # an unchanged list fetched again is fresh
    findings = [(warn("whitelist age", f"{age / 3600:.0f} h since the list was last "
                      "updated: " + ("check the fetch (mss whitelist status)" if fetch.url
                                     else "import the agency's latest list"))
                 if age > limit else ok("whitelist age", f"version {info['id']}, "
                                        f"{age / 3600:.1f} h old"))]
    if ours is None:
        return findings
    whitelist: Whitelist = load_active(conn)
    dn = canonical_name(ours.leaf.subject)
    subject = ours.leaf.subject.rfc4514_string()
    for domain in domains:
        label = f"whitelist DN {domain}"
        if whitelist.dn_listed(domain, dn):
            findings.append(ok(label, subject))
        else:
            listed = sorted(whitelist.dns_for(domain))
            seen = f"the list names {'; '.join(listed)}" if listed else "the list lacks it"
            findings.append(fail(label, f"{seen}: ask the agency (ANS) to list {subject} for "
                                 f"{domain}, then import the new list (peers refuse our mail "
                                 "until then)"))
    return findings


def _last_check(conn: Connection, url: str) -> float | None:
    if not url:
        return None
    from sqlalchemy import select

    from mss import db

    s = db.whitelist_sources
    row = conn.execute(select(s.c.checked_at, s.c.last_error).where(s.c.url == url)).first()
    if row is None or row.checked_at is None or row.last_error:
        return None
    return float(row.checked_at)


# --------------------------------------------------------------------------- files

def check_modes(config: Config) -> list[Finding]:
    """Files 0600, the data directory 0700 (docs/keys.md): nobody else reads a key."""
    findings: list[Finding] = []
    data_dir = config.server.data_dir
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except OSError as exc:
        return [fail("data dir", f"{data_dir}: {exc.strerror or exc}")]
    findings.append(fail("data dir", f"{data_dir} is mode {mode:04o}: chmod 700 {data_dir}")
                    if mode & 0o077 else ok("data dir", f"{mode:04o}"))
    for label, path, required in _key_files(config):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            if required:
                findings.append(fail(f"key file {label}", f"{path} missing"))
            continue
        except OSError as exc:
            findings.append(fail(f"key file {label}", f"{path}: {exc.strerror or exc}"))
            continue
        findings.append(fail(f"key file {label}", f"{path} is mode {mode:04o}: chmod 600 {path}")
                        if mode & 0o077 else ok(f"key file {label}", f"{mode:04o}"))
    return findings


def _key_files(config: Config) -> Iterator[tuple[str, Path, bool]]:
    """(config key, path, must exist) of every secret the node reads."""
    yield "tls.key_file", config.tls.key_file, True
    if config.keys.provider == "file":
        yield "keys.master_key_file", config.keys.master_key_file, True
    if config.keys.pin_file:
        yield "keys.pin_file", config.keys.pin_file, True
    yield "audit.signing_key_file", config.audit.signing_key_file, False  # made on first use
    yield "audit.pseudonym_key_file", config.audit.pseudonym_key_file, False
    for i, dest in enumerate(config.audit.destinations):
        if dest.key_file and dest.key_file != config.tls.key_file:
            yield f"audit.destinations[{i}].key_file", dest.key_file, True
    directory = config.directory
    if directory is not None and directory.password_file:
        yield "directory.password_file", directory.password_file, True
    if directory is not None and directory.publish and directory.publish.password_file:
        yield "directory.publish.password_file", directory.publish.password_file, True
    for i, issuer in enumerate(config.auth.oidc):
        if issuer.client_secret_file:
            yield f"auth.oidc[{i}].client_secret_file", issuer.client_secret_file, True
    if config.portal.client_secret_file:
        yield "portal.client_secret_file", config.portal.client_secret_file, True


# --------------------------------------------------------------------------- database

def check_schema(conn: Connection) -> Finding:
    from mss.schema import HEAD, current

    revision = current(conn)
    if revision == HEAD:
        return ok("schema", HEAD)
    return fail("schema", f"database at {revision or 'no revision'}, this mss reads {HEAD}: "
                "mss db upgrade")
