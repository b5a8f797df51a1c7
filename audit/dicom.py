"""Audit records as DICOM PS3.15 Annex A.5 audit messages (the RFC 3881 lineage of IHE ATNA).

Element order is the one the standard's schema (A.5.1) fixes:
``AuditMessage = EventIdentification, ActiveParticipant+, AuditSourceIdentification,
ParticipantObjectIdentification*``; inside ``EventIdentification``: ``EventID``,
``EventTypeCode*``, ``EventOutcomeDescription?``; inside ``ParticipantObjectIdentification``:
``ParticipantObjectIDTypeCode``, ``ParticipantObjectName``, ``ParticipantObjectDetail*``.
Coded values carry ``csd-code``, ``codeSystemName`` and ``originalText`` (the PS3.16 code
meaning, exactly).

The per-message rules of A.5.3 (actions are in :mod:`audit.events`):

* Application Activity (A.5.3.1): the application started or stopped (role 110150
  "Application") and who started or stopped it (110151 "Application Launcher").
* Audit Log Used (A.5.3.2): a participant object for the audit log (system object,
  role 13 "Security Resource", id type (12, RFC-3881, "URI"), name "Security Audit Log").
* Security Alert (A.5.3.11): the reporting process (this node), who performed the action
  (``UserIsRequestor`` false), and the alert subject (system object) with a
  ``ParticipantObjectDetail`` of type "Alert Description".
* An exchange with a peer: the sender has 110153 "Source Role ID", the receiver 110152
  "Destination Role ID" (for deliveries to a peer, the node is the source).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from audit.events import (
    APPLICATION_ACTIVITY,
    AUDIT_LOG_USED,
    EXPORT,
    SECURITY_ALERT,
    Code,
    EventKind,
    kind,
)
from mss.config import Config

# DCM role codes (PS3.16 CID 402 "Audit Active Participant Role ID")
APPLICATION_ROLE = Code("110150", "DCM", "Application")
LAUNCHER_ROLE = Code("110151", "DCM", "Application Launcher")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
# Participant object id types: RFC 3881 / DCM ones where PS3.15 asks for them ...
URI_TYPE = Code("12", "RFC-3881", "URI")
NODE_ID_TYPE = Code("110182", "DCM", "Node ID")
# ... and ours (code system MSS, listed in docs/audit-events.md)
MESSAGE_ID_TYPE = Code("MSS-MESSAGE-ID", "MSS", "RFC 5322 Message-ID")
MAILBOX_TYPE = Code("MSS-MAILBOX", "MSS", "Mailbox address")
WHITELIST_TYPE = Code("MSS-WHITELIST-VERSION", "MSS", "Whitelist version")
PATIENT_TYPE = Code("MSS-PATIENT-PSEUDONYM", "MSS", "Keyed pseudonym of the patient INS")
AUDIT_LOG_NAME = "Security Audit Log"  # PS3.15 A.5.3.2
ALERT_DESCRIPTION = "Alert Description"  # PS3.15 A.5.3.11
# PS3.15 A.5.1.2.1: "4" is the schema's own value (application server process tier), not a
# code of a coding scheme: no codeSystemName
SOURCE_TYPE_APPLICATION_SERVER = "4"


@dataclass(frozen=True)
class Source:
    """Who writes the trail: our node (AuditSourceIdentification)."""

    source_id: str  # the node's host name
    site_id: str  # the operator's site (hosted domain)

    @property
    def node_user(self) -> str:
        return f"mss@{self.source_id}"

    @property
    def audit_log_uri(self) -> str:
        return f"mss-audit://{self.source_id}/audit_log"


def audit_source(cfg: Config) -> Source:
    """This node's host name and its operator's site (the host name's parent domain)."""
    host = cfg.smtp.hostname
    return Source(source_id=host, site_id=host.partition(".")[2] or host)


@dataclass(frozen=True)
class Participant:
    user_id: str
    requestor: bool
    role: Code | None = None
    address: str | None = None
    address_type: str | None = None  # "1" machine name, "2" IP address (A.5.1)
    user_name: str | None = None


@dataclass(frozen=True)
class ParticipantObject:
    object_id: str
    type_code: str  # 1 person, 2 system object, 3 organization, 4 other
    role: str  # ParticipantObjectTypeCodeRole (A.5.1.2.2)
    id_type: Code
    name: str
    details: tuple[tuple[str, str], ...] = ()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def peer_of(record: Mapping[str, Any]) -> Participant | None:
    """The peer server a queued copy went to (queue.* records), from the record's detail."""
    detail = record.get("detail") or {}
    host = detail.get("host")
    if not host:
        return None
    name = str(host).split("[", 1)[0]
    return Participant(str(detail.get("peer_dn") or host), False, DESTINATION_ROLE,
                       address=name, address_type="1",
                       user_name=str(host) if detail.get("peer_dn") else None)


def participants(record: Mapping[str, Any], event: EventKind,
                 source: Source) -> list[Participant]:
    """The ActiveParticipants of a record, by the rules of its EventID."""
    actor = record.get("actor") or "unknown"
    remote = record.get("remote_addr")
    node = Participant(source.node_user, False, None, source.source_id, "1")
    if event.event_id == APPLICATION_ACTIVITY:  # A.5.3.1: distinct roles
        return [Participant(source.node_user, False, APPLICATION_ROLE, source.source_id, "1"),
                Participant(actor, True, LAUNCHER_ROLE)]
    if event.event_id == SECURITY_ALERT:  # A.5.3.11: reporter, then performer (not requestor)
        performer = Participant(actor, False, SOURCE_ROLE if remote else None,
                                remote, "2" if remote else None)
        return [Participant(source.node_user, True, APPLICATION_ROLE, source.source_id, "1"),
                performer]
    if event.event_id == EXPORT and (peer := peer_of(record)) is not None:
        # a delivery to a peer operator: we send (source), the peer receives (destination)
        return [Participant(source.node_user, True, SOURCE_ROLE, source.source_id, "1"),
                peer]
    if remote:  # an exchange: the peer (or user's client) sends, we receive
        return [Participant(actor, True, SOURCE_ROLE, remote, "2"),
                Participant(node.user_id, False, DESTINATION_ROLE, source.source_id, "1")]
    # an operator's or the node's own action
    return [Participant(actor, True, None),
            Participant(node.user_id, False, APPLICATION_ROLE, source.source_id, "1")]


def participant_objects(record: Mapping[str, Any], event: EventKind,
                        source: Source) -> list[ParticipantObject]:
    detail = record.get("detail") or {}
    objects: list[ParticipantObject] = []
    if event.event_id == AUDIT_LOG_USED:  # A.5.3.2: the audit log, with what was done
        objects.append(ParticipantObject(
            source.audit_log_uri, "2", "13", URI_TYPE, AUDIT_LOG_NAME,
            tuple((k, _text(v)) for k, v in sorted(detail.items()) if v is not None)))
    if event.event_id == SECURITY_ALERT:  # A.5.3.11: the alert subject and its description
        description = record.get("reason") or event.description
        if record["event"].startswith("audit."):
            subject_id, subject_type, subject_name = (source.audit_log_uri, URI_TYPE,
                                                      AUDIT_LOG_NAME)
        else:
            subject_id, subject_type, subject_name = (source.node_user, NODE_ID_TYPE,
                                                      source.source_id)
        objects.append(ParticipantObject(subject_id, "2", "13", subject_type, subject_name,
                                         ((ALERT_DESCRIPTION, str(description)),)))
    if record.get("message_id"):
        message_details = (("MailFrom", record.get("mail_from")), ("RcptTo", record.get("rcpt")),
                           ("Session", record.get("session")),
                           ("Listener", record.get("listener")))
        objects.append(ParticipantObject(
            record["message_id"], "2", "3", MESSAGE_ID_TYPE, "message",
            tuple((k, str(v)) for k, v in message_details if v is not None)))
    if record.get("mailbox"):
        objects.append(ParticipantObject(record["mailbox"], "1", "6", MAILBOX_TYPE,
                                         record["mailbox"]))
    if record.get("whitelist_version") is not None:
        objects.append(ParticipantObject(str(record["whitelist_version"]), "2", "5",
                                         WHITELIST_TYPE, "liste blanche MSSante"))
    if detail.get("patient"):
        objects.append(ParticipantObject(str(detail["patient"]), "1", "1", PATIENT_TYPE,
                                         "patient (pseudonym)"))
    return objects


def _coded(parent: Element, tag: str, code: Code) -> Element:
    return SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                    "originalText": code.display})


def _participant(message: Element, p: Participant) -> None:
    attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
    if p.user_name:
        attrs["UserName"] = p.user_name
    if p.address:
        attrs |= {"NetworkAccessPointID": p.address,
                  "NetworkAccessPointTypeCode": p.address_type or "1"}
    element = SubElement(message, "ActiveParticipant", attrs)
    if p.role is not None:
        _coded(element, "RoleIDCode", p.role)


def _object(message: Element, o: ParticipantObject) -> None:
    obj = SubElement(message, "ParticipantObjectIdentification", {
        "ParticipantObjectID": o.object_id, "ParticipantObjectTypeCode": o.type_code,
        "ParticipantObjectTypeCodeRole": o.role})
    _coded(obj, "ParticipantObjectIDTypeCode", o.id_type)
    SubElement(obj, "ParticipantObjectName").text = o.name
    for name, value in o.details:
        SubElement(obj, "ParticipantObjectDetail", {  # A.5.1: values are base64
            "type": name, "value": base64.b64encode(value.encode("utf-8")).decode("ascii")})


REDUCED_REASON = 200  # characters of EventOutcomeDescription kept in a reduced message


def to_element(record: Mapping[str, Any], source: Source, *, reduced: bool = False
               ) -> Element:
    """One journal row (as from :func:`audit.journal.query`) as an ``AuditMessage``;
    *reduced*: only the first participant object (the one the event is about: the audit
    log, the alert subject, else the message), reason and details cut short, this node's
    address left to AuditSourceIdentification (for a datagram transport that cannot carry
    the whole, RFC 5426 §3.2)."""
    event = kind(record["event"])
    message = Element("AuditMessage")
    ident = SubElement(message, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": record["ts"],  # ISO 8601 UTC
        "EventOutcomeIndicator": str(record["outcome"])})
    _coded(ident, "EventID", event.event_id)
    _coded(ident, "EventTypeCode", event.type_code)
    if record.get("reason"):
        reason = str(record["reason"])
        SubElement(ident, "EventOutcomeDescription").text = \
            reason[:REDUCED_REASON] if reduced else reason
    for p in participants(record, event, source):
        if reduced and p.user_id == source.node_user:  # its host is the AuditSourceID
            p = Participant(p.user_id, p.requestor, p.role, user_name=p.user_name)
        _participant(message, p)
    audit_source = SubElement(message, "AuditSourceIdentification", {
        "AuditEnterpriseSiteID": source.site_id, "AuditSourceID": source.source_id})
    SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": SOURCE_TYPE_APPLICATION_SERVER})
    objects = participant_objects(record, event, source)
    if reduced and objects:  # the object the event is about (the first), details cut short
        first = objects[0]
        objects = [ParticipantObject(first.object_id, first.type_code, first.role,
                                     first.id_type, first.name,
                                     tuple((k, v[:REDUCED_REASON]) for k, v in first.details))]
    for o in objects:
        _object(message, o)
    return message


def to_xml(record: Mapping[str, Any], source: Source, *, reduced: bool = False) -> bytes:
    return bytes(tostring(to_element(record, source, reduced=reduced), encoding="utf-8",
                          xml_declaration=False))
