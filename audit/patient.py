"""Who a message is about, as a keyed pseudonym: never the raw identifier in the trail.

The French national health identifier (INS) arrives in an ``X-MSS-INS`` header or in an IHE
XDM attachment (ITI-32: a ZIP whose ``METADATA.XML`` carries ``XDSDocumentEntry.patientId``
or ``XDSSubmissionSet.patientId``). The audit record keeps ``HMAC-SHA256(key, INS)`` under a
node key (``keys/pseudonym.key``, 0600): the same patient gets the same pseudonym, so an
investigator can follow one patient's messages, and nobody without the key can go back to the
identifier. Cheap on the SMTP path: the header is looked up in the header block, the ZIP is
opened only when the message mentions IHE_XDM.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import io
import os
import re
import zipfile
from pathlib import Path

from mss.message import find_header

_XDM_MARK = re.compile(rb"ihe_xdm", re.IGNORECASE)
_PATIENT_ID = re.compile(
    rb'identificationScheme="urn:uuid:(?:58a6f841-87b3-4a3e-92fd-a8ffeff98427|'
    rb'6b5aea1a-874d-4603-a4bc-96a0a7b38446)"[^>]*?value="([^"]+)"'
    rb'|value="([^"]+)"[^>]*?identificationScheme="urn:uuid:(?:58a6f841-87b3-4a3e-92fd-'
    rb'a8ffeff98427|6b5aea1a-874d-4603-a4bc-96a0a7b38446)"')
_MAX_XDM_BYTES = 20 * 1024 * 1024


def pseudonym_key(path: Path) -> bytes:
    """The HMAC key, created (32 random bytes, 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64encode(os.urandom(32)) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    return base64.b64decode(path.read_bytes().strip())


def pseudonym(key: bytes, identifier: str) -> str:
    # HL7 CX "id^^^&oid&ISO": the identifier is the first component, case as given
    ident = identifier.strip().split("^", 1)[0].strip()
    return "pp-" + hmac.new(key, ident.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def xdm_patient_ids(message: bytes) -> list[str]:
    """Patient ids found in the METADATA.XML of IHE XDM ZIP attachments."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    found: list[str] = []
    for part in parsed.walk():
        if part.get_content_maintype() == "multipart":
            continue
        name = (part.get_filename() or "").lower()
        if part.get_content_type() not in ("application/zip", "application/x-zip-compressed",
                                           "application/octet-stream") \
                and not name.endswith(".zip"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or len(payload) > _MAX_XDM_BYTES:
            continue
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                for info in archive.infolist():
                    if info.filename.upper().endswith("METADATA.XML") \
                            and info.file_size <= _MAX_XDM_BYTES:
                        for m in _PATIENT_ID.finditer(archive.read(info)):
                            value = (m.group(1) or m.group(2)).decode("utf-8", "replace")
                            if value not in found:
                                found.append(value)
        except (zipfile.BadZipFile, OSError, ValueError):
            continue
    return found


def patient_pseudonym(key: bytes, message: bytes) -> str | None:
    """The pseudonym of the patient a message is about, or None."""
    ins = find_header(message, "X-MSS-INS")
    if ins:
        return pseudonym(key, ins)
    if _XDM_MARK.search(message):
        ids = xdm_patient_ids(message)
        if ids:
            return pseudonym(key, ids[0])
    return None
