"""Who a message is about, as a keyed pseudonym: never the raw identifier in the trail.

The French national health identifier (INS) arrives in an ``X-MSS-INS`` header or in an IHE
XDM attachment (ITI-32: a ZIP whose ``METADATA.XML`` is an ebRIM ``SubmitObjectsRequest``).
There the patient is an ``ExternalIdentifier`` (identificationScheme
``XDSDocumentEntry.patientId`` or ``XDSSubmissionSet.patientId``) or a ``sourcePatientId``
``Slot``, as an HL7 CX ``id^^^&oid&ISO``; only an identifier whose assigning authority is an
INS OID counts (``1.2.250.1.213.1.4.8`` INS-NIR, ``.9`` INS-NIA, ``.10``/``.11`` the test
ranges), a local patient number is not the INS. The audit record keeps
``HMAC-SHA256(key, INS)`` under a node key (``keys/pseudonym.key``, 0600): the same patient gets
the same pseudonym, so an investigator can follow one patient's messages, and nobody without
the key can go back to the identifier.

This runs on the SMTP path, on the event loop for small messages: every step is linear in
the input and bounded. The ZIP is opened only when the message mentions IHE_XDM; the
attachments are the base64 parts of the node's MIME reader (:mod:`mss.mime`, linear and
bounded in depth: the parts an IMAP client is shown), the first ``MAX_PARTS`` of them; at
most ``MAX_ZIPS`` attachments and ``MAX_MEMBERS`` entries each; a METADATA.XML is inflated in
chunks up to ``MAX_METADATA_BYTES`` (never trusting the size the archive announces, so a
zip bomb costs that much and no more, ``MAX_TOTAL_BYTES`` over the message), and parsed by
expat as a stream with no DTD allowed (no entity can expand) and a time budget.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.parsers import expat

from mss.message import find_header
from mss.mime import MimeMessage

_XDM_MARK = re.compile(rb"ihe_xdm", re.IGNORECASE)
_ZIP_START = b"UEsDB"  # base64 of b"PK\x03\x04" (APPNOTE 4.3.7: a local file header)
MAX_ZIP_BYTES = 20 * 1024 * 1024  # an attachment larger than this is not opened
MAX_ZIPS = 4  # ZIP attachments looked into per message
MAX_PARTS = 1000  # MIME parts looked at per message (an XDM message has a handful)
MAX_MEMBERS = 1000  # entries of one archive (the central directory is read whole)
MAX_METADATA_BYTES = 1024 * 1024  # inflated METADATA.XML, per member
MAX_TOTAL_BYTES = 4 * 1024 * 1024  # inflated METADATA.XML, over the whole message
TIME_BUDGET = 0.25  # seconds of XML parsing per message
_CHUNK = 64 * 1024

# IHE ITI TF-3 §4.2.5: ExternalIdentifier schemes of the patient id
PATIENT_ID_SCHEMES = frozenset({
    "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",  # XDSDocumentEntry.patientId
    "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446",  # XDSSubmissionSet.patientId
})
SOURCE_PATIENT_SLOT = "sourcePatientId"  # ITI TF-3 §4.2.3.2.23, on the DocumentEntry
# ANS "Référentiel INS": assigning authorities of the INS (NIR, NIA, test NIR, test NIA)
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9",
                      "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})


class _Refused(Exception):
    """The metadata is hostile or over a bound: stop reading it (no pseudonym from it)."""


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


def ins_of(cx: str) -> str | None:
    """The identifier of an HL7 CX value whose assigning authority (CX.4, ``&oid&ISO``) is an
    INS OID, else None."""
    parts = cx.strip().split("^")
    if len(parts) < 4 or not parts[0].strip():
        return None
    authority = parts[3].split("&")
    oid = authority[1].strip() if len(authority) > 1 else authority[0].strip()
    return parts[0].strip() if oid in INS_OIDS else None


def _local(name: str) -> str:
    return name.rsplit(" ", 1)[-1]  # expat namespace_separator " ": "uri local"


@dataclass
class _Metadata:
    """Streaming reader of ebRIM metadata: collects candidate patient ids, no tree kept."""

    deadline: float
    found: list[str] = field(default_factory=list)
    _slot: bool = False  # inside <Slot name="sourcePatientId">
    _value: list[str] | None = None  # text of the <Value> being read, in that slot

    def parser(self) -> expat.XMLParserType:
        p = expat.ParserCreate(namespace_separator=" ")
        p.StartDoctypeDeclHandler = self._doctype  # no DTD: no entity, internal or external
        p.EntityDeclHandler = self._doctype
        p.ExternalEntityRefHandler = self._entity
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.buffer_text = True
        return p

    def _doctype(self, *_: object) -> None:
        raise _Refused("DTD in XDM metadata")

    def _entity(self, *_: object) -> int:
        raise _Refused("external entity in XDM metadata")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        tag = _local(name)
        if tag == "ExternalIdentifier" and attrs.get("identificationScheme") \
                in PATIENT_ID_SCHEMES:
            self._add(attrs.get("value", ""))
        elif tag == "Slot":
            self._slot = attrs.get("name") == SOURCE_PATIENT_SLOT
        elif tag == "Value" and self._slot:
            self._value = []

    def _end(self, name: str) -> None:
        tag = _local(name)
        if tag == "Value" and self._value is not None:
            self._add("".join(self._value))
            self._value = None
        elif tag == "Slot":
            self._slot = False

    def _text(self, data: str) -> None:
        if self._value is not None:
            self._value.append(data)

    def _add(self, cx: str) -> None:
        ins = ins_of(cx)
        if ins is not None and ins not in self.found:
            self.found.append(ins)

    def feed(self, stream: IO[bytes], budget: list[int]) -> None:
        """Inflate and parse one member in chunks, within the byte and time budgets."""
        parser = self.parser()
        read = 0
        while chunk := stream.read(_CHUNK):
            read += len(chunk)
            budget[0] -= len(chunk)
            if read > MAX_METADATA_BYTES or budget[0] < 0:
                raise _Refused("XDM metadata over its size bound")
            parser.Parse(chunk, False)
            if time.monotonic() > self.deadline:
                raise _Refused("XDM metadata over its time budget")
        parser.Parse(b"", True)


def _zip_payloads(message: bytes) -> list[bytes]:
    """The ZIP attachments of *message*: its base64 parts (RFC 2045 §6.8) whose content
    begins with "PK\\x03\\x04" (their text with "UEsDB"), decoded; a part larger than
    ``MAX_ZIP_BYTES`` is not decoded."""
    payloads: list[bytes] = []
    for part in MimeMessage(message, max_parts=MAX_PARTS).leaves():
        if (part.info.encoding or b"").lower() != b"base64":
            continue
        if not message.startswith(_ZIP_START, _first_non_space(message, part.body, part.end)):
            continue
        if (part.end - part.body) * 3 // 4 > MAX_ZIP_BYTES:
            continue
        payloads.append(part.decoded_body())
        if len(payloads) >= MAX_ZIPS:
            break
    return payloads


def _first_non_space(data: bytes, start: int, end: int) -> int:
    while start < end and data[start] in b" \t\r\n":
        start += 1
    return start


def _member_count(payload: bytes) -> int | None:
    """Entries announced by the End of Central Directory record (APPNOTE 4.3.16), read
    before zipfile parses the directory; None when there is no plain EOCD (or ZIP64)."""
    at = payload.rfind(b"PK\x05\x06", max(0, len(payload) - 65557))
    if at < 0 or at + 22 > len(payload):
        return None
    count = int.from_bytes(payload[at + 10:at + 12], "little")
    return None if count == 0xFFFF else count


def xdm_patient_ids(message: bytes) -> list[str]:
    """The INS found in the METADATA.XML of IHE XDM ZIP attachments (first seen first)."""
    reader = _Metadata(deadline=time.monotonic() + TIME_BUDGET)
    budget = [MAX_TOTAL_BYTES]
    for payload in _zip_payloads(message):
        count = _member_count(payload)
        if count is None or count > MAX_MEMBERS:
            continue
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                members = archive.infolist()
                if len(members) > MAX_MEMBERS:
                    continue
                for info in members:
                    if info.filename.upper().endswith("METADATA.XML"):
                        with archive.open(info) as stream:
                            reader.feed(stream, budget)
        except _Refused:
            break
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError,
                ValueError, EOFError, RuntimeError, expat.ExpatError):
            continue  # not a ZIP, encrypted, truncated, or not XML: no id from it
    return reader.found


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
