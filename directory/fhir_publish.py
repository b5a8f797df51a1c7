"""Publish our hosted mailboxes into the Annuaire Santé over FHIR Patch (R4 §2.41).

A PER mailbox is a telecom of its holder's Practitioner, found by idNatPs ("8" + RPPS, the
value the IG stores under urn:oid:1.2.250.1.71.4.2.1); an ORG, APP or CAB mailbox one of
its structure's Organization, by idNatSt ("1" + FINESS, urn:oid:1.2.250.1.71.4.2.2). Each
change is one conditional ``PATCH [base]/<Type>?identifier=<system>|<value>`` whose body
is a ``Parameters`` of FHIR Patch operations on ``telecom``:
- a new mailbox: ``delete`` of any copy of the address then ``add`` of the ContactPoint
  (``insert`` needs an index into a list we do not read; ``add`` appends, which is an
  insert at the end; the delete first makes the Patch idempotent, so safe to retry);
- changed metadata (liste rouge, service): ``replace`` of ``telecom.where(value='...')``
  by the whole ContactPoint, same address and type;
- a changed type: ``delete`` then ``add`` in one Patch (the address and the type are never
  modified in place); a changed holder (RPPS, FINESS): delete at the old, add at the new;
- a mailbox gone (deleted, disabled, renamed here): ``delete``.
A mailbox on the liste rouge is published with the metadata's ``listeRouge`` = true (the
national directory knows it and hides it) or, [directory.fhir] liste_rouge = "omit", not at
all (and deleted if it was). What was published is kept in
directory_fhir_published: a second run with nothing changed sends nothing. Every call is
audited with its outcome; a 404 (no such holder) or 412 (several) is reported for that
mailbox and the run goes on; a 429 or 5xx still there after the retries stops it (what was
done stays recorded). ``dry_run`` builds the same documents and sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from audit.events import Event, Outcome
from audit.journal import AuditRecord, append
from directory.fhir import (
    EMAIL_TYPE,
    ID_NAT_PS,
    ID_NAT_STRUCT,
    MSS_METADATA,
    TRE_R256,
    TRE_R257,
    FhirClient,
    _issue,
    api_key,
)
from directory.publish import Publishable
from directory.sources import SyncError
from mss import db
from mss.config import FhirConfig


def contact_point(address: str, kind: str, liste_rouge: bool) -> dict[str, Any]:
    """Our mailbox as an as-mailbox-mss ContactPoint (FR Core email type MSSANTE and the
    as-ext-mailbox-mss-metadata extension: type from TRE_R257, listeRouge)."""
    return {"system": "email", "value": address, "extension": [
        {"url": EMAIL_TYPE, "valueCoding": {"system": TRE_R256, "code": "MSSANTE"}},
        {"url": MSS_METADATA, "extension": [
            {"url": "type", "valueCodeableConcept": {
                "coding": [{"system": TRE_R257, "code": kind}]}},
            {"url": "listeRouge", "valueBoolean": liste_rouge}]}]}


@dataclass(frozen=True)
class Wanted:
    mail: str
    kind: str  # PER | ORG | APP | CAB
    resource_type: str
    identifier: str  # system|value
    telecom: dict[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps([self.resource_type, self.identifier, self.telecom], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def wanted(mailboxes: Iterable[Publishable], liste_rouge: str = "flag"
           ) -> tuple[dict[str, Wanted], list[str]]:
    """Our publishable mailboxes (enabled, not being deleted; on the liste rouge flagged,
    or left out when *liste_rouge* is "omit") and, for those that cannot be published, why
    (no RPPS for a PER, no FINESS for a structure's)."""
    out, skipped = {}, []
    for m in mailboxes:
        if not m.enabled or m.delete_after is not None:
            continue
        if m.liste_rouge and liste_rouge == "omit":
            continue
        if m.type == "PER":
            if not m.rpps:
                skipped.append(f"{m.address}: type PER without RPPS")
                continue
            target = ("Practitioner", f"{ID_NAT_PS}|8{m.rpps}")
        else:
            if not m.finess:
                skipped.append(f"{m.address}: type {m.type} without FINESS")
                continue
            target = ("Organization", f"{ID_NAT_STRUCT}|1{m.finess}")
        out[m.address] = Wanted(m.address, m.type, *target,
                                contact_point(m.address, m.type, m.liste_rouge))
    return out, skipped


def _operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    part: list[dict[str, Any]] = [{"name": "type", "valueCode": kind},
                                  {"name": "path", "valueString": path}]
    if "name" in parts:
        part.append({"name": "name", "valueString": parts["name"]})
    if "value" in parts:
        part.append({"name": "value", "valueContactPoint": parts["value"]})
    return {"name": "operation", "part": part}


def _where(resource_type: str, address: str) -> str:
    return f"{resource_type}.telecom.where(value='{address}')"


def add_ops(w: Wanted) -> list[dict[str, Any]]:
    """Delete then add: the Patch is idempotent (a retry, or a state lost, never leaves the
    address twice) and the address is ours, so any copy of it on the resource goes."""
    return [delete_op(w.resource_type, w.mail),
            _operation("add", w.resource_type, name="telecom", value=w.telecom)]


def delete_op(resource_type: str, address: str) -> dict[str, Any]:
    return _operation("delete", _where(resource_type, address))


def replace_op(w: Wanted) -> dict[str, Any]:
    return _operation("replace", _where(w.resource_type, w.mail), value=w.telecom)


@dataclass
class Call:
    """One conditional PATCH: what it does to one mailbox, then to the published state."""

    mail: str
    action: str  # add | replace | retype | move-out | move-in | delete
    resource_type: str
    identifier: str
    operations: list[dict[str, Any]]
    then: Wanted | None  # the state row after success (None: the row goes)

    @property
    def body(self) -> dict[str, Any]:
        return {"resourceType": "Parameters", "parameter": self.operations}

    def url(self, client: FhirClient) -> str:
        return client.url(self.resource_type, {"identifier": self.identifier})


def plan(desired: dict[str, Wanted], published: dict[str, dict[str, Any]]) -> list[Call]:
    """The PATCH calls that bring the national directory from *published* to *desired*."""
    calls = []
    for mail, w in desired.items():
        prev = published.get(mail)
        if prev is None:
            calls.append(Call(mail, "add", w.resource_type, w.identifier, add_ops(w), w))
        elif prev["digest"] == w.digest:
            continue
        elif (prev["resource_type"], prev["identifier"]) != (w.resource_type, w.identifier):
            calls.append(Call(mail, "move-out", prev["resource_type"], prev["identifier"],
                              [delete_op(prev["resource_type"], mail)], None))
            calls.append(Call(mail, "move-in", w.resource_type, w.identifier, add_ops(w), w))
        elif prev["mailbox_type"] != w.kind:  # never in place: delete + add
            calls.append(Call(mail, "retype", w.resource_type, w.identifier, add_ops(w), w))
        else:
            calls.append(Call(mail, "replace", w.resource_type, w.identifier,
                              [replace_op(w)], w))
    for mail, prev in published.items():
        if mail not in desired:
            calls.append(Call(mail, "delete", prev["resource_type"], prev["identifier"],
                              [delete_op(prev["resource_type"], mail)], None))
    return calls


@dataclass
class FhirPublishReport:
    sent: int = 0
    done: dict[str, int] = field(default_factory=dict)  # action -> count
    failed: list[str] = field(default_factory=list)  # "mail: status reason"
    skipped: list[str] = field(default_factory=list)
    unchanged: int = 0
    documents: list[str] = field(default_factory=list)  # dry run: the PATCH requests


def published_state(engine: Engine) -> dict[str, dict[str, Any]]:
    t = db.directory_fhir_published
    with engine.connect() as conn:
        return {r.mail: dict(r._mapping) for r in conn.execute(select(t))}


def publish_fhir(engine: Engine, mailboxes: Iterable[Publishable], config: FhirConfig,
                 actor: str, *, dry_run: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> FhirPublishReport:
    """Bring the national directory in line with our mailboxes; see the module's text."""
    desired, skipped = wanted(mailboxes, config.liste_rouge)
    published = published_state(engine)
    calls = plan(desired, published)
    called = {c.mail for c in calls}
    report = FhirPublishReport(skipped=skipped,
                               unchanged=sum(1 for mail in desired if mail not in called))
    client = FhirClient(config, None if dry_run else api_key(config), sleep)
    if dry_run:
        for call in calls:
            report.documents.append(
                f"PATCH {urllib.parse.unquote(call.url(client))}\n"
                "Content-Type: application/fhir+json\n\n"
                + json.dumps(call.body, indent=2, ensure_ascii=False))
        return report
    t = db.directory_fhir_published
    try:
        for call in calls:
            status, answer = _send(client, call)
            report.sent += 1
            if status == 429 or status >= 500:  # still, after the retries: the API's trouble
                raise SyncError(f"{client.label} answered {status}{_issue(answer)} after "
                                f"{config.retries} retries ({call.mail}: {call.action})")
            ok = 200 <= status < 300
            reason = None if ok else f"{status}{_issue(answer) or ' ' + _STATUS.get(status, '')}"
            with engine.begin() as conn:
                if ok:
                    conn.execute(delete(t).where(t.c.mail == call.mail))
                    if call.then is not None:
                        w = call.then
                        conn.execute(insert(t).values(
                            mail=w.mail, resource_type=w.resource_type,
                            identifier=w.identifier, mailbox_type=w.kind, digest=w.digest,
                            published_at=time.time()))
                append(conn, [_audit(call, client, status, reason, actor)])
            if ok:
                report.done[call.action] = report.done.get(call.action, 0) + 1
            else:
                report.failed.append(f"{call.mail}: {call.action} refused, {reason}")
    except SyncError as exc:  # the API unreachable: what was done stays recorded
        with engine.begin() as conn:
            append(conn, [AuditRecord(Event.DIRECTORY_PUBLISH, Outcome.SERIOUS_FAILURE,
                                      actor=actor, reason=str(exc),
                                      detail={"server": client.label, "sent": report.sent})])
        raise SyncError(f"publication stopped after {report.sent} calls: {exc}") from None
    finally:
        client.close()
    return report


_STATUS = MappingProxyType({404: "no resource has this identifier",
                            412: "several resources have this identifier",
                            422: "the patch was refused"})


def _send(client: FhirClient, call: Call) -> tuple[int, Any]:
    # every Patch we send is idempotent (add_ops; replace and delete are): safe to retry
    return client.send("PATCH", call.url(client), call.body, idempotent=True)


def _audit(call: Call, client: FhirClient, status: int, reason: str | None,
           actor: str) -> AuditRecord:
    outcome = Outcome.SUCCESS if reason is None else \
        Outcome.MINOR_FAILURE if status in (404, 409, 412, 422) else Outcome.SERIOUS_FAILURE
    return AuditRecord(Event.DIRECTORY_PUBLISH, outcome, actor=actor, mailbox=call.mail,
                       reason=reason, detail={"server": client.label, "action": call.action,
        "resource": f"{call.resource_type}?identifier={urllib.parse.quote(call.identifier)}",
        "status": status})
