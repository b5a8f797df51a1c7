"""Audit records as FHIR R4 ``AuditEvent`` resources, following IHE BALP (Basic Audit Log
Patterns) where its patterns fit.

The same journal rows as the DICOM export, from the same participants and objects
(:mod:`audit.dicom`), so the two never disagree:

* ``meta.profile``: a message about a patient received (Import) or sent on (Export) is a
  BALP Privacy Disclosure, at the recipient or at the source; another create, read, update
  or delete is the BALP Create/Read/Update/Delete pattern, its Patient variant when the
  patient is known. Execute events (logins, alerts, start and stop) claim no BALP profile.
* ``type``/``subtype``: the DICOM EventID and EventTypeCode (the ATNA mapping), plus the FHIR
  restful-interaction code of a create, read, update or delete.
* ``agent``: the user (requestor) and the server as separate agents, each with its network
  address; the client that sends or asks is DCM 110153 Source Role ID, the server that
  receives or answers 110152 Destination Role ID (BALP: for a read too, the client is the
  source). For a delivery to a peer the node is the source and the peer server, named by
  its certificate DN, the destination.
* ``entity``: the patient as a ``Reference(Patient)`` whose identifier is the pseudonym
  (entity type 1 Person, role 1 Patient), then the message, mailbox, whitelist version, audit
  log or alert subject.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from audit.dicom import (
    PATIENT_TYPE,
    Participant,
    ParticipantObject,
    Source,
    participant_objects,
    participants,
)
from audit.events import EXPORT, IMPORT, Code, kind

SYSTEMS = MappingProxyType({"DCM": "http://dicom.nema.org/resources/ontology/DCM",
                            "MSS": "urn:mss:audit", "RFC-3881": "urn:ietf:rfc:3881"})
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
PSEUDONYM_SYSTEM = "urn:mss:patient-pseudonym"  # HMAC of the INS under the node's key
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
_REST = MappingProxyType({"C": "create", "R": "read", "U": "update", "D": "delete"})
_ENTITY_TYPES = MappingProxyType({"1": "Person", "2": "System Object", "3": "Organization",
                                  "4": "Other"})
_ROLES = MappingProxyType({"1": "Patient", "3": "Report", "5": "Master file", "6": "User",
                           "13": "Security Resource"})


def coding(code: Code) -> dict[str, str]:
    return {"system": SYSTEMS[code.system], "code": code.code, "display": code.display}


def profile(event_name: str, has_patient: bool) -> str | None:
    """The BALP profile a record follows, or None."""
    event = kind(event_name)
    if has_patient and event.event_id == IMPORT:
        return BALP + "PrivacyDisclosure.Recipient"
    if has_patient and event.event_id == EXPORT:
        return BALP + "PrivacyDisclosure.Source"
    rest = _REST.get(event.action)
    if rest is None:
        return None
    return BALP + ("Patient" if has_patient else "") + rest.capitalize()


def _agent(p: Participant) -> dict[str, Any]:
    agent: dict[str, Any] = {"who": {"identifier": {"value": p.user_id}},
                             "requestor": p.requestor}
    if p.user_name:
        agent["name"] = p.user_name
    if p.role is not None:
        agent["type"] = {"coding": [coding(p.role)]}
    if p.address:
        agent["network"] = {"address": p.address, "type": p.address_type or "1"}
    return agent


def _entity(o: ParticipantObject) -> dict[str, Any]:
    if o.id_type == PATIENT_TYPE:  # BALP: what = Reference(Patient), by its identifier
        what: dict[str, Any] = {"type": "Patient", "identifier": {
            "system": PSEUDONYM_SYSTEM, "value": o.object_id}}
    else:
        what = {"identifier": {"type": {"coding": [coding(o.id_type)]}, "value": o.object_id}}
    entity: dict[str, Any] = {
        "what": what,
        "type": {"system": ENTITY_TYPE, "code": o.type_code,
                 "display": _ENTITY_TYPES[o.type_code]},
        "role": {"system": OBJECT_ROLE, "code": o.role, "display": _ROLES[o.role]},
        "name": o.name,
    }
    if o.details:
        entity["detail"] = [{"type": k, "valueString": v} for k, v in o.details]
    return entity


def to_audit_event(record: Mapping[str, Any], source: Source) -> dict[str, Any]:
    event = kind(record["event"])
    objects = participant_objects(record, event, source)
    patients = [o for o in objects if o.id_type == PATIENT_TYPE]
    others = [o for o in objects if o.id_type != PATIENT_TYPE]
    subtype = [coding(event.type_code)]
    if event.action in _REST:
        subtype.append({"system": RESTFUL, "code": _REST[event.action]})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record["id"]),
        "type": coding(event.event_id),
        "subtype": subtype,
        "action": event.action,
        "recorded": record["ts"],
        "outcome": str(record["outcome"]),
        "agent": [_agent(p) for p in participants(record, event, source)],
        "source": {"site": source.site_id,
                   "observer": {"identifier": {"value": source.source_id},
                                "display": source.source_id},
                   "type": [{"system": SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
    }
    claimed = profile(record["event"], bool(patients))
    if claimed:
        resource["meta"] = {"profile": [claimed]}
    if record.get("reason"):
        resource["outcomeDesc"] = str(record["reason"])
    entities = [_entity(o) for o in [*patients, *others]]
    if entities:
        resource["entity"] = entities
    return resource
