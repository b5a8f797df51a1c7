"""The LDAP source: an LDAP v3 tree in the project's schema (ldap3), attribute names mapped
by ``[directory.attributes]``.

Full: paged search (RFC 2696) of ``base_dn`` with ``filter``, from the first reachable URL
(failover in order). Incremental: entries with ``modifyTimestamp`` strictly after the last
run's mark (``(!(modifyTimestamp<=mark))``: RFC 4515 has no ``>``); deletions wait for the
next full run. A server that ends a search early (sizeLimitExceeded...) fails the run.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.config import set_config_parameter

from directory.sources import Rejected, Row, SyncError
from mss.config import DIRECTORY_FIELDS, ConfigError, DirectoryConfig, cleartext_bind

# plain dicts for entries: ldap3's case-insensitive dict costs ~12% of a full sync; we lower
# the names ourselves once per entry
set_config_parameter("CASE_INSENSITIVE_ATTRIBUTE_NAMES", False)
SKEW_MARGIN = 5  # seconds of clock difference tolerated between us and the LDAP server


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    return str(value).strip() or None


def map_entry(dn: str, attrs: dict[str, Any], mapping: dict[str, str]) -> Row:
    """One LDAP entry as a directory row (values as strings, mail lower-cased)."""
    row: Row = {"dn": dn}
    for name in DIRECTORY_FIELDS:
        row[name] = _first(attrs.get(mapping[name].lower()))
    if row["mail"]:
        row["mail"] = row["mail"].lower()
    row["liste_rouge"] = str(row["liste_rouge"]).upper() == "TRUE"
    return row


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 ships no type hints
    """ldap3's Tls with the server verified in the handshake: chain against *ca_file* (None:
    the system store) and the URL's host against the certificate (RFC 4513 §3.1.3). ldap3
    itself turns ``check_hostname`` off and, left to its defaults, validates nothing."""

    def __init__(self, ca_file: Path | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                         ca_certs_file=str(ca_file) if ca_file else None)

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)  # check_hostname on
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        connection.socket = context.wrap_socket(
            connection.socket, server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake)


def ldap_connection(url: str, tls: str, ca_file: Path | None, timeout: float,
                    user: str | None, password: str | None, *,
                    read_only: bool) -> ldap3.Connection:
    """A bound connection to *url* under the directory TLS policy, shared by sync and
    publication: ``ldaps://`` (or tls = "ldaps") is TLS from the first byte, tls =
    "starttls" upgrades before the bind (RFC 4513 §3); either way the server is verified
    (:class:`VerifiedTls`) before the bind request, and so the password, is sent. A
    password over plain ``ldap://`` is refused, before connecting, unless the host is
    loopback (:func:`mss.config.cleartext_bind`; the config reader refuses it first)."""
    if cleartext_bind(url, tls, bool(user and password)):
        raise ConfigError(f"directory: refusing to send a bind password in clear to {url}")
    use_ssl = url.startswith("ldaps://") or tls == "ldaps"
    server = ldap3.Server(url, use_ssl=use_ssl, connect_timeout=int(timeout),
                          tls=VerifiedTls(ca_file) if use_ssl or tls == "starttls" else None,
                          get_info=ldap3.NONE)
    conn = ldap3.Connection(server, user=user, password=password,
                            receive_timeout=int(timeout), read_only=read_only,
                            raise_exceptions=True, check_names=False)
    conn.open()
    if tls == "starttls":
        conn.start_tls()
    conn.bind()
    return conn


def _gt(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch))


def high_water(newest_seen: str | None, started: float) -> str | None:
    """The mark the next incremental run starts after (strictly): the newest modifyTimestamp
    seen, but never within SKEW_MARGIN of this run's start, where an entry could still have
    changed in the same second after we read it."""
    if newest_seen is None:
        return None
    return min(newest_seen, _gt(started - SKEW_MARGIN))


def _ts(value: Any) -> str | None:
    """modifyTimestamp (a datetime from ldap3, or GeneralizedTime text) as YYYYMMDDHHMMSSZ."""
    value = value[0] if isinstance(value, list) and value else value
    if value is None or value == []:
        return None
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y%m%d%H%M%SZ"))
    return str(value)[:14] + "Z"


class LdapSource:
    """:class:`directory.sources.Source` over LDAP: connects to the first reachable server of
    the list (failover in order)."""

    name = "ldap"
    incremental = True

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self._conn: ldap3.Connection | None = None
        self._newest: str | None = None

    def open(self) -> str:
        cfg = self.config
        errors = []
        for url in cfg.urls:
            try:
                self._conn = ldap_connection(url, cfg.tls, cfg.ca_file, cfg.timeout,
                                             cfg.bind_dn, cfg.password(), read_only=True)
                return url
            except LDAPException as exc:
                errors.append(f"{url}: {type(exc).__name__}")
        raise SyncError("no directory server reachable (" + "; ".join(errors) + ")")

    def rows(self, since: str | None) -> Iterator[Row | Rejected]:
        """Every entry of the filter, or those changed strictly after *since*."""
        search = self.config.filter if since is None else \
            f"(&{self.config.filter}(!(modifyTimestamp<={since})))"
        self._newest = since
        try:
            for dn, attrs in self._entries(search):
                stamp = _ts(attrs.get("modifytimestamp"))
                if stamp and (self._newest is None or stamp > self._newest):
                    self._newest = stamp
                yield map_entry(dn, attrs, self.config.attributes)
        except LDAPException as exc:
            raise SyncError(f"directory read failed: {type(exc).__name__}: {exc}") from None

    def high_water(self, started: float) -> str | None:
        return high_water(self._newest, started)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(LDAPException, OSError):  # the server may have gone
                self._conn.unbind()
            self._conn = None

    def _entries(self, search_filter: str) -> Iterator[tuple[str, dict[str, Any]]]:
        conn = self._conn
        assert conn is not None, "open() first"
        attributes = [*{a for a in self.config.attributes.values()}, "modifyTimestamp"]
        for item in conn.extend.standard.paged_search(
                self.config.base_dn, search_filter, search_scope=ldap3.SUBTREE,
                attributes=attributes, paged_size=self.config.page_size, generator=True):
            if item.get("type") == "searchResEntry":
                # attribute names compared case-insensitively (RFC 4512 §2.5)
                yield item["dn"], {k.lower(): v for k, v in item["attributes"].items()}
        # ldap3 does not raise on sizeLimitExceeded or timeLimitExceeded: a server that cut
        # the search short must fail the run, never truncate the directory
        code = (conn.result or {}).get("result", 0)
        if code:
            raise SyncError(f"the server ended the search early: "
                            f"{conn.result.get('description')} ({code}); check its size "
                            "limits for paged searches (OpenLDAP: size.prtotal)")

