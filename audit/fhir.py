"""Audit records as FHIR R4 ``AuditEvent`` resources, in the shape of IHE BALP.

The same journal rows as the DICOM export: ``type``/``subtype`` carry the DICOM EventID and
EventTypeCode, ``agent`` the requestor and this node, ``source`` the node, ``entity`` the
message, mailbox, whitelist version and patient pseudonym.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.dicom import (
    APPLICATION_ROLE,
    DESTINATION_ROLE,
    MAILBOX_TYPE,
    MESSAGE_ID_TYPE,
    PATIENT_TYPE,
    SOURCE_ROLE,
    WHITELIST_TYPE,
    Source,
)
from audit.events import Code, kind

SYSTEMS = {"DCM": "http://dicom.nema.org/resources/ontology/DCM", "MSS": "urn:mss:audit"}
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"


def coding(code: Code) -> dict[str, str]:
    return {"system": SYSTEMS[code.system], "code": code.code, "display": code.display}


def _entity(value: str, id_type: Code, entity_type: str, role: str,
            details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "what": {"identifier": {"type": {"coding": [coding(id_type)]}, "value": value}},
        "type": {"system": ENTITY_TYPE, "code": entity_type},
        "role": {"system": OBJECT_ROLE, "code": role},
    }
    extra = [{"type": k, "valueString": str(v)} for k, v in (details or {}).items()
             if v is not None]
    if extra:
        entity["detail"] = extra
    return entity


def to_audit_event(record: Mapping[str, Any], source: Source) -> dict[str, Any]:
    event = kind(record["event"])
    remote = record.get("remote_addr")
    requestor: dict[str, Any] = {
        "type": {"coding": [coding(SOURCE_ROLE if remote else APPLICATION_ROLE)]},
        "who": {"identifier": {"value": record.get("actor") or "unknown"}},
        "requestor": True,
    }
    if remote:
        requestor["network"] = {"address": remote, "type": "2"}
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record["id"]),
        "type": coding(event.event_id),
        "subtype": [coding(event.type_code)],
        "action": event.action,
        "recorded": record["ts"],
        "outcome": str(record["outcome"]),
        "agent": [requestor, {
            "type": {"coding": [coding(DESTINATION_ROLE if remote else APPLICATION_ROLE)]},
            "who": {"display": f"mss@{source.source_id}"},
            "requestor": False,
            "network": {"address": source.source_id, "type": "1"},
        }],
        "source": {"site": source.site_id, "observer": {"display": source.source_id},
                   "type": [{"system": SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
    }
    if record.get("reason"):
        resource["outcomeDesc"] = str(record["reason"])
    entities = []
    if record.get("message_id"):
        entities.append(_entity(record["message_id"], MESSAGE_ID_TYPE, "2", "3", {
            "MailFrom": record.get("mail_from"), "RcptTo": record.get("rcpt"),
            "Session": record.get("session"), "Listener": record.get("listener")}))
    if record.get("mailbox"):
        entities.append(_entity(record["mailbox"], MAILBOX_TYPE, "1", "6"))
    if record.get("whitelist_version") is not None:
        entities.append(_entity(str(record["whitelist_version"]), WHITELIST_TYPE, "2", "5"))
    patient = (record.get("detail") or {}).get("patient")
    if patient:
        entities.append(_entity(patient, PATIENT_TYPE, "1", "1"))
    if entities:
        resource["entity"] = entities
    return resource
