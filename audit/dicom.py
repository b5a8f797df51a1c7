"""Audit records as DICOM PS3.15 Annex A.5 audit messages (the RFC 3881 lineage of IHE ATNA).

Element order is the one the standard's schema fixes:
``AuditMessage = EventIdentification, ActiveParticipant+, AuditSourceIdentification,
ParticipantObjectIdentification*``; inside ``EventIdentification``: ``EventID``,
``EventTypeCode*``, ``EventOutcomeDescription?``; inside ``ParticipantObjectIdentification``:
``ParticipantObjectIDTypeCode``, ``ParticipantObjectName``, ``ParticipantObjectDetail*``.
Coded values carry ``csd-code``, ``codeSystemName`` and ``originalText``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from audit.events import Code, kind
from mss.config import Config

# DCM role codes (PS3.16 CID 402 "Audit Active Participant Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
APPLICATION_ROLE = Code("110150", "DCM", "Application")
# Our participant object id types (code system MSS, listed in docs/audit-events.md)
MESSAGE_ID_TYPE = Code("MSS-MESSAGE-ID", "MSS", "RFC 5322 Message-ID")
MAILBOX_TYPE = Code("MSS-MAILBOX", "MSS", "Mailbox address")
WHITELIST_TYPE = Code("MSS-WHITELIST-VERSION", "MSS", "Whitelist version")
PATIENT_TYPE = Code("MSS-PATIENT-PSEUDONYM", "MSS", "Keyed pseudonym of the patient INS")


@dataclass(frozen=True)
class Source:
    """Who writes the trail: our node (AuditSourceIdentification)."""

    source_id: str  # the node's host name
    site_id: str  # the operator's site (hosted domain)


def audit_source(cfg: Config) -> Source:
    """This node's host name and its operator's site (the host name's parent domain)."""
    host = cfg.smtp.hostname
    return Source(source_id=host, site_id=host.partition(".")[2] or host)


def _coded(parent: Element, tag: str, code: Code) -> Element:
    return SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                    "originalText": code.display})


def _datetime(ts: str) -> str:
    return ts  # journal times are already ISO 8601 UTC ("...Z"), an xs:dateTime


def _detail(parent: Element, name: str, value: Any) -> None:
    raw = str(value).encode("utf-8")
    SubElement(parent, "ParticipantObjectDetail",
               {"type": name, "value": base64.b64encode(raw).decode("ascii")})


def _object(message: Element, object_id: str, type_code: str, role: str, id_type: Code,
            name: str, details: Mapping[str, Any] | None = None) -> None:
    obj = SubElement(message, "ParticipantObjectIdentification", {
        "ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _coded(obj, "ParticipantObjectIDTypeCode", id_type)
    SubElement(obj, "ParticipantObjectName").text = name
    for key, value in (details or {}).items():
        if value is not None:
            _detail(obj, key, value)


def to_element(record: Mapping[str, Any], source: Source) -> Element:
    """One journal row (as from :func:`audit.journal.query`) as an ``AuditMessage``."""
    event = kind(record["event"])
    message = Element("AuditMessage")
    ident = SubElement(message, "EventIdentification", {
        "EventActionCode": event.action, "EventDateTime": _datetime(record["ts"]),
        "EventOutcomeIndicator": str(record["outcome"])})
    _coded(ident, "EventID", event.event_id)
    _coded(ident, "EventTypeCode", event.type_code)
    if record.get("reason"):
        SubElement(ident, "EventOutcomeDescription").text = str(record["reason"])

    actor = record.get("actor") or "unknown"
    remote = record.get("remote_addr")
    requestor = {"UserID": actor, "UserIsRequestor": "true"}
    if remote:
        requestor |= {"NetworkAccessPointID": remote, "NetworkAccessPointTypeCode": "2"}
    # an exchange has a peer (source) and us (destination); admin actions an operator
    participant = SubElement(message, "ActiveParticipant", requestor)
    _coded(participant, "RoleIDCode", SOURCE_ROLE if remote else APPLICATION_ROLE)
    node = SubElement(message, "ActiveParticipant", {
        "UserID": f"mss@{source.source_id}", "UserIsRequestor": "false",
        "NetworkAccessPointID": source.source_id, "NetworkAccessPointTypeCode": "1"})
    _coded(node, "RoleIDCode", DESTINATION_ROLE if remote else APPLICATION_ROLE)

    audit_source = SubElement(message, "AuditSourceIdentification", {
        "AuditEnterpriseSiteID": source.site_id, "AuditSourceID": source.source_id})
    SubElement(audit_source, "AuditSourceTypeCode", {
        "csd-code": "4", "codeSystemName": "DCM",
        "originalText": "Application Server process or thread"})

    if record.get("message_id"):
        _object(message, record["message_id"], "2", "3", MESSAGE_ID_TYPE, "message", {
            "MailFrom": record.get("mail_from"), "RcptTo": record.get("rcpt"),
            "Session": record.get("session"), "Listener": record.get("listener")})
    if record.get("mailbox"):
        _object(message, record["mailbox"], "1", "6", MAILBOX_TYPE, record["mailbox"])
    if record.get("whitelist_version") is not None:
        _object(message, str(record["whitelist_version"]), "2", "5", WHITELIST_TYPE,
                "liste blanche MSSante")
    patient = (record.get("detail") or {}).get("patient")
    if patient:
        _object(message, patient, "1", "1", PATIENT_TYPE, "patient (pseudonym)")
    return message


def to_xml(record: Mapping[str, Any], source: Source) -> bytes:
    return bytes(tostring(to_element(record, source), encoding="utf-8", xml_declaration=False))
