"""Publish our hosted mailboxes: as LDIF, or into a writable LDAP subtree.

Each enabled mailbox not on the liste rouge becomes an ``inetOrgPerson`` + ``mssMailbox``
entry ``uid=<address>,<base>`` carrying mail, type, idNat (8+RPPS) and structure id
(1+FINESS). Publication adds new mailboxes, updates changed attributes and removes what was
deleted (from ``mss mailbox delete`` on, grace period included), renamed (the old address;
the new one is added), disabled or put on the liste rouge here; a suspended mailbox stays
(it still exists, its mail waits). The address and the type of an entry are never modified
in place (the national rules forbid it): a changed type is a delete plus an add, and is
reported. A second run changes nothing.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn
from sqlalchemy import Engine

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from directory.ldap_source import ldap_connection
from directory.sources import SyncError
from mss.config import DirectoryConfig, PublishConfig

OBJECT_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson", "mssMailbox")
IMMUTABLE = ("mail", "type")


@dataclass
class PublishReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    retyped: list[str] = field(default_factory=list)
    unchanged: int = 0


class Publishable(Protocol):
    """What publication reads of a hosted mailbox. The mail store owns the mailboxes: the
    caller (the CLI) reads them and hands them in, so the directory never reaches into it."""

    @property
    def address(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def rpps(self) -> str | None: ...
    @property
    def finess(self) -> str | None: ...
    @property
    def liste_rouge(self) -> bool: ...
    @property
    def delete_after(self) -> float | None: ...  # mss mailbox delete: unpublished at once


def desired_entries(mailboxes: Iterable[Publishable]) -> dict[str, dict[str, str]]:
    """Our publishable mailboxes: address -> logical attributes."""
    out = {}
    for m in mailboxes:
        if not m.enabled or m.liste_rouge or m.delete_after is not None:
            continue
        local = m.address.split("@", 1)[0]
        entry = {"mail": m.address, "type": m.type, "display_name": m.address,
                 "surname": local}
        if m.rpps:
            entry["id_nat"] = "8" + m.rpps
        if m.finess:
            entry["structure_id"] = "1" + m.finess
        out[m.address] = entry
    return out


def _ldap_attributes(entry: dict[str, str], mapping: dict[str, str]) -> dict[str, str]:
    return {mapping[k]: v for k, v in entry.items()}


def entry_dn(address: str, base: str) -> str:
    return f"uid={escape_rdn(address)},{base}"


def to_ldif(entries: Iterable[dict[str, str]], base: str, mapping: dict[str, str]) -> str:
    """RFC 2849 LDIF (base64 for values that are not safe strings)."""
    lines: list[str] = []
    for entry in entries:
        lines.append(f"dn: {entry_dn(entry['mail'], base)}")
        lines += [f"objectClass: {c}" for c in OBJECT_CLASSES]
        lines.append(f"uid: {entry['mail']}")
        for name, value in _ldap_attributes(entry, mapping).items():
            if value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")):
                lines.append(f"{name}: {value}")
            else:
                lines.append(f"{name}:: {base64.b64encode(value.encode()).decode()}")
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


def publish(engine: Engine, desired: dict[str, dict[str, str]], config: DirectoryConfig,
            to: PublishConfig, password: str, actor: str) -> PublishReport:
    """Bring *to*'s subtree in line with *desired* (:func:`desired_entries` of our
    mailboxes), over the same verified TLS as sync (:func:`directory.sync.ldap_connection`):
    a server that fails the check gets no bind request, so never the password."""
    mapping, publish_url, base = config.attributes, to.url, to.base_dn
    report = PublishReport()
    t0 = time.monotonic()
    try:
        ldap = ldap_connection(publish_url, to.tls, to.ca_file, config.timeout, to.bind_dn,
                               password, read_only=False)
        try:
            present: dict[str, tuple[str, dict[str, Any]]] = {}
            wanted = list({mapping[k] for k in
                           ("mail", "type", "display_name", "surname", "id_nat",
                            "structure_id")})
            for item in ldap.extend.standard.paged_search(
                    base, "(objectClass=mssMailbox)", search_scope=ldap3.LEVEL,
                    attributes=wanted, paged_size=500, generator=True):
                if item.get("type") == "searchResEntry":
                    attrs = {k.lower(): v for k, v in item["attributes"].items()}
                    mail = attrs.get(mapping["mail"].lower())
                    mail = (mail[0] if isinstance(mail, list) and mail else mail) or ""
                    present[str(mail).lower()] = (item["dn"], attrs)
            for address, entry in desired.items():
                target = _ldap_attributes(entry, mapping)
                if address not in present:
                    _add(ldap, entry, base, target)
                    report.added += 1
                    continue
                dn, attrs = present[address]
                current = {k: _one(attrs.get(k.lower())) for k in target}
                if current.get(mapping["type"]) != entry["type"]:
                    ldap.delete(dn)  # a type never changes in place: delete, then add
                    _add(ldap, entry, base, target)
                    report.retyped.append(address)
                    continue
                changes = {k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in target.items()
                           if k not in (mapping[i] for i in IMMUTABLE) and current.get(k) != v}
                gone = [mapping[k] for k in ("id_nat", "structure_id")
                        if k not in entry and _one(attrs.get(mapping[k].lower()))]
                changes.update({k: [(ldap3.MODIFY_DELETE, [])] for k in gone})
                if changes:
                    ldap.modify(dn, changes)
                    report.updated += 1
                else:
                    report.unchanged += 1
            for address, (dn, _attrs) in present.items():
                if address not in desired:
                    ldap.delete(dn)
                    report.removed += 1
        finally:
            ldap.unbind()
    except LDAPException as exc:
        with engine.begin() as conn:
            append(conn, [AuditRecord(Event.DIRECTORY_PUBLISH, Outcome.SERIOUS_FAILURE, actor=actor,
                                      reason=f"{type(exc).__name__}: {exc}",
                                      detail={"server": publish_url, **_counts(report)})])
        raise SyncError(f"publication failed: {type(exc).__name__}: {exc}") from None
    with engine.begin() as conn:
        append(conn, [AuditRecord(Event.DIRECTORY_PUBLISH, actor=actor, detail={
            "server": publish_url, "seconds": round(time.monotonic() - t0, 3),
            **_counts(report)})])
    return report


def _counts(report: PublishReport) -> dict[str, Any]:
    return {"added": report.added, "updated": report.updated, "removed": report.removed,
            "retyped": len(report.retyped), "unchanged": report.unchanged}


def _one(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def _add(ldap: ldap3.Connection, entry: dict[str, str], base: str,
         attributes: dict[str, str]) -> None:
    ldap.add(entry_dn(entry["mail"], base), list(OBJECT_CLASSES),
             {"uid": entry["mail"], "cn": entry["display_name"], **attributes})
