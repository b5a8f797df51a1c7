"""IHE XDM packages (ITI-32) read with a real ZIP and XML reader, bounded in memory and time.

An XDM package is a ZIP attachment (``IHE_XDM.ZIP``, IHE ITI TF-2b §3.32.4.1): at its root
``INDEX.HTM`` and ``README.TXT``, under ``IHE_XDM/<subset>/`` a ``METADATA.XML`` (an ebRIM
``lcm:SubmitObjectsRequest``, ITI TF-3 §4.1) and the documents it describes. This module
reads what the node checks and audits, never what a document says:

- the submission set and each document entry (``rim:ExtrinsicObject``): class, type and
  format codes (``rim:Classification`` nodeRepresentation, ITI TF-3 §4.2.3.2), mime type,
  the ``size``, ``hash`` (SHA-1, hex) and ``URI`` slots, the patient id (HL7 CX
  ``id^^^&oid&ISO``, ExternalIdentifier ``XDSDocumentEntry.patientId`` /
  ``XDSSubmissionSet.patientId``, or the ``sourcePatientId`` slot);
- each document member inflated as a stream, its size and SHA-1 compared with the entry
  (ITI TF-3 Table 4.3.1-3: both required of an XDM package), and for a CDA document the
  ``code`` of its header (``ClinicalDocument/code/@code``, the value ``X-MSS-CODECDA``
  carries: :mod:`mss.xmss`).

What is wrong is returned as problem codes (:data:`PROBLEMS`: a bounded vocabulary, never a
member name, an identifier or content); the listener's policy decides (``[messages] xdm``).

Bounds (a hostile package costs at most this): attachments are the base64 parts of the
node's MIME reader (:mod:`mss.mime`), the first ``MAX_PARTS``; at most ``MAX_ZIPS`` ZIPs of
``MAX_ZIP_BYTES``, ``MAX_MEMBERS`` entries each (counted from the End of Central Directory
record before zipfile reads the directory); a ZIP is decoded only when it is named
IHE_XDM.ZIP or the end of its text (its central directory) names an ``IHE_XDM/`` entry.
Before anything is inflated every entry's name is checked (no absolute path, ``..``,
backslash, drive or control character), no entry may be encrypted, declare more than
``MAX_MEMBER_BYTES`` or a ratio over ``MAX_RATIO``, or use another compression than stored
or deflate (zipfile inflates bzip2 and LZMA in one unbounded call). Inflation never passes
the size an entry declares (zipfile stops there, and the CRC then fails), runs in
``CHUNK`` pieces, ``MAX_INFLATED_BYTES`` over the message (and at most
``INFLATION_FACTOR`` times its size plus ``INFLATION_FLOOR``), within ``CHECK_BUDGET``
seconds. METADATA.XML is parsed by expat as a stream, ``MAX_METADATA_BYTES`` at most, no
DTD (no entity can expand), within ``TIME_BUDGET`` seconds of parsing per message. The SMTP
handler runs this in a worker thread when the message holds a ZIP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import posixpath
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO
from xml.parsers import expat

import pybase64

from mss.mime import MimeMessage, Part, param_text

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(c for c in range(256) if c not in _B64)  # RFC 2045 §6.8: ignored
_PAD_TAIL = re.compile(rb"[= \t\r\n]*\Z")  # what may follow the first "=" of a base64 body
_TAIL_TEXT = 96 * 1024  # base64 text read for the central directory of an unnamed ZIP
_ZIP_START = b"UEsDB"  # base64 of b"PK\x03\x04" (APPNOTE 4.3.7: a local file header)
MAX_ZIP_BYTES = 64 * 1024 * 1024  # a larger attachment is not opened (package_too_large)
MAX_ZIPS = 4  # ZIP attachments looked into per message
MAX_PARTS = 1000  # MIME parts looked at per message (an XDM message has a handful)
MAX_MEMBERS = 1000  # entries of one archive (the central directory is read whole)
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # declared inflated size of one entry
MAX_RATIO = 200  # declared inflated/compressed size, for entries over RATIO_FLOOR
RATIO_FLOOR = 1024 * 1024
MAX_INFLATED_BYTES = 128 * 1024 * 1024  # inflated for the checks, over the whole message
INFLATION_FACTOR = 32  # ... and at most this many times the message's size
INFLATION_FLOOR = 8 * 1024 * 1024  # ... plus this
MAX_METADATA_BYTES = 1024 * 1024  # inflated METADATA.XML, per member
MAX_TOTAL_METADATA = 4 * 1024 * 1024  # inflated METADATA.XML, over the whole message
MAX_CDA_HEADER = 256 * 1024  # bytes of a CDA read for its code (it is in the header)
MAX_VALUE = 4096  # characters kept of one slot value
TIME_BUDGET = 0.25  # seconds of XML parsing per message
CHECK_BUDGET = 5.0  # seconds for every check of one message
CHUNK = 64 * 1024

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
HL7 = "urn:hl7-org:v3"
# IHE ITI TF-3 §4.2.5: ExternalIdentifier schemes of the patient id
PATIENT_ID_SCHEMES = frozenset({
    "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",  # XDSDocumentEntry.patientId
    "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446",  # XDSSubmissionSet.patientId
})
SOURCE_PATIENT_SLOT = "sourcePatientId"  # ITI TF-3 §4.2.3.2.23, on the DocumentEntry
# ITI TF-3 §4.2.5: classification schemes of a DocumentEntry
CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
CODE_SCHEMES = MappingProxyType({CLASS_CODE: "class", TYPE_CODE: "type",
                                 FORMAT_CODE: "format"})
# ANS "Référentiel INS": assigning authorities of the INS (NIR, NIA, test NIR, test NIA)
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9",
                      "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})

# problem code -> public text (the reply of xdm = "refuse"; the code goes to the audit)
PROBLEMS = MappingProxyType({
    "package_too_large": "XDM package too large to check",
    "too_many_members": "XDM package has too many entries",
    "not_a_zip": "XDM attachment is not a readable ZIP archive",
    "unsafe_name": "XDM package has an unsafe entry name",
    "encrypted": "XDM package has an encrypted entry",
    "member_too_large": "XDM package has an oversized entry",
    "compression_ratio": "XDM package has an entry compressed beyond reason",
    "compression_method": "XDM package uses a compression other than stored or deflate",
    "member_corrupt": "XDM package has a corrupt entry",
    "check_budget": "XDM package too costly to check",
    "index_missing": "XDM package lacks INDEX.HTM",
    "readme_missing": "XDM package lacks README.TXT",
    "metadata_missing": "XDM package lacks METADATA.XML",
    "metadata_too_large": "XDM metadata too large",
    "metadata_dtd": "XDM metadata declares a DTD",
    "metadata_malformed": "XDM metadata is not well-formed XML",
    "metadata_not_submit_objects": "XDM metadata is not an ebRIM SubmitObjectsRequest",
    "no_document": "XDM metadata describes no document",
    "document_missing": "XDM document missing from the package",
    "size_missing": "XDM document entry lacks its size",
    "hash_missing": "XDM document entry lacks its hash",
    "size_mismatch": "XDM document size differs from its metadata",
    "hash_mismatch": "XDM document hash differs from its metadata",
    "code_missing": "XDM document entry lacks its class or type code",
    "type_code_mismatch": "XDM document type code differs from its CDA code",
    "no_patient_id": "XDM metadata names no patient",
    "patient_mismatch": "XDM metadata names several patients",
})


class _Stop(Exception):
    """Stop reading a package: *code* is the problem."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def ins_of(cx: str) -> str | None:
    """The identifier of an HL7 CX value whose assigning authority (CX.4, ``&oid&ISO``) is an
    INS OID, else None."""
    ident, oid = cx_parts(cx)
    return ident if ident and oid in INS_OIDS else None


def cx_parts(cx: str) -> tuple[str, str]:
    """(identifier, assigning authority OID) of an HL7 CX value (either may be "")."""
    parts = cx.strip().split("^")
    if len(parts) < 4:
        return parts[0].strip(), ""
    authority = parts[3].split("&")
    oid = authority[1].strip() if len(authority) > 1 else authority[0].strip()
    return parts[0].strip(), oid


@dataclass(frozen=True)
class Document:
    """One document entry of the metadata, with what the ZIP member showed."""

    entry: str  # the ExtrinsicObject's id
    mime_type: str = ""
    class_code: str | None = None
    type_code: str | None = None
    format_code: str | None = None
    uri: str | None = None
    size: int | None = None  # the size slot
    hash: str | None = None  # the hash slot (SHA-1, hex, lower case)
    patient: str | None = None  # CX
    cda_code: str | None = None  # ClinicalDocument/code/@code of the member, a CDA

    @property
    def kind(self) -> dict[str, str]:
        """What the audit keeps of it: its codes and mime type (no content)."""
        shown = {"class": self.class_code, "type": self.type_code,
                 "format": self.format_code, "mime": self.mime_type, "cda": self.cda_code}
        return {k: v[:64] for k, v in shown.items() if v}


@dataclass(frozen=True)
class Package:
    """One XDM package: its documents, its patient ids (CX, distinct, first seen first) and
    the problem codes found, in order."""

    documents: tuple[Document, ...] = ()
    patient_ids: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ins(self) -> list[str]:
        """The patient ids that are an INS (an INS OID as assigning authority)."""
        return [i for i in (ins_of(cx) for cx in self.patient_ids) if i]

    @property
    def cda_codes(self) -> list[str]:
        return [d.cda_code for d in self.documents if d.cda_code]


@dataclass
class Budget:
    """What one message's checks may still spend."""

    deadline: float = field(default_factory=lambda: time.monotonic() + CHECK_BUDGET)
    parse_deadline: float = field(default_factory=lambda: time.monotonic() + TIME_BUDGET)
    inflated: int = MAX_INFLATED_BYTES
    metadata: int = MAX_TOTAL_METADATA

    def spend(self, n: int) -> None:
        self.inflated -= n
        if self.inflated < 0 or time.monotonic() > self.deadline:
            raise _Stop("check_budget")


# ----------------------------------------------------------------------------- metadata


def _local(name: str) -> tuple[str, str]:
    ns, _, local = name.rpartition(" ")  # expat namespace_separator " ": "uri local"
    return ns, local


def _safe_parser(start: Callable[[str, dict[str, str]], None],
                 end: Callable[[str], None] | None = None,
                 text: Callable[[str], None] | None = None) -> expat.XMLParserType:
    p = expat.ParserCreate(namespace_separator=" ")

    def no_dtd(*_: object) -> None:
        raise _Stop("metadata_dtd")

    def no_entity(*_: object) -> int:
        raise _Stop("metadata_dtd")

    p.StartDoctypeDeclHandler = no_dtd  # no DTD: no entity, internal or external
    p.EntityDeclHandler = no_dtd
    p.ExternalEntityRefHandler = no_entity
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartElementHandler = start
    if end is not None:
        p.EndElementHandler = end
    if text is not None:
        p.CharacterDataHandler = text
    p.buffer_text = True
    return p


@dataclass
class _Entry:
    id: str
    mime_type: str
    slots: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    patient: str | None = None


class _Metadata:
    """Streaming reader of ebRIM metadata (no tree kept): the root, entries, patient ids."""

    def __init__(self) -> None:
        self.root: tuple[str, str] | None = None
        self.entries: list[_Entry] = []
        self.patients: list[str] = []
        self._entry: _Entry | None = None
        self._classification: str | None = None  # its kind while inside one
        self._slot: str | None = None  # the slot being read (name), outside classifications
        self._value: list[str] | None = None
        self._values: list[str] = []

    def parser(self) -> expat.XMLParserType:
        return _safe_parser(self._start, self._end, self._text)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        ns, tag = _local(name)
        if self.root is None:
            self.root = (ns, tag)
        if tag == "ExtrinsicObject":
            if len(self.entries) >= MAX_MEMBERS:
                raise _Stop("too_many_members")
            self._entry = _Entry(attrs.get("id", "")[:MAX_VALUE],
                                 attrs.get("mimeType", "")[:MAX_VALUE])
            self.entries.append(self._entry)
        elif tag == "ExternalIdentifier" and attrs.get("identificationScheme") \
                in PATIENT_ID_SCHEMES:
            self._patient(attrs.get("value", "")[:MAX_VALUE])
        elif tag == "Classification" and self._entry is not None:
            kind = CODE_SCHEMES.get(attrs.get("classificationScheme", ""))
            self._classification = kind
            if kind is not None:
                self._entry.codes.setdefault(kind, attrs.get("nodeRepresentation",
                                                             "")[:MAX_VALUE])
        elif tag == "Slot":
            self._slot = attrs.get("name", "")
            self._values = []
        elif tag == "Value" and self._slot is not None:
            self._value = []

    def _end(self, name: str) -> None:
        _, tag = _local(name)
        if tag == "Value" and self._value is not None:
            self._values.append("".join(self._value)[:MAX_VALUE].strip())
            self._value = None
        elif tag == "Slot" and self._slot is not None:
            if self._slot == SOURCE_PATIENT_SLOT and self._values:
                self._patient(self._values[0])
            elif self._entry is not None and self._classification is None and self._values:
                self._entry.slots.setdefault(self._slot, self._values[0])
            self._slot = None
        elif tag == "Classification":
            self._classification = None
        elif tag == "ExtrinsicObject":
            self._entry = None

    def _text(self, data: str) -> None:
        if self._value is not None and sum(map(len, self._value)) < MAX_VALUE:
            self._value.append(data)

    def _patient(self, cx: str) -> None:
        cx = cx.strip()
        if not cx:
            return
        if self._entry is not None and self._entry.patient is None:
            self._entry.patient = cx
        if cx not in self.patients:
            self.patients.append(cx)

    def feed(self, stream: IO[bytes], budget: Budget) -> None:
        """Inflate and parse one member in chunks, within the byte and time budgets."""
        parser = self.parser()
        read = 0
        while chunk := stream.read(CHUNK):
            read += len(chunk)
            budget.metadata -= len(chunk)
            if read > MAX_METADATA_BYTES or budget.metadata < 0:
                raise _Stop("metadata_too_large")
            budget.spend(len(chunk))
            parser.Parse(chunk, False)
            if time.monotonic() > budget.parse_deadline:
                raise _Stop("check_budget")
        parser.Parse(b"", True)


class _CdaCode:
    """The ``code`` of a CDA header (HL7 CDA R2: ClinicalDocument/code), fed in chunks
    until found; not a CDA (another root, not XML): None, without an error."""

    def __init__(self) -> None:
        self.code: str | None = None
        self.done = False
        self._depth = 0
        self._read = 0
        self._parser = _safe_parser(self._start, self._end)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        ns, tag = _local(name)
        self._depth += 1
        if self._depth == 1 and (ns, tag) != (HL7, "ClinicalDocument"):
            self.done = True
        elif self._depth == 2 and (ns, tag) == (HL7, "code"):
            self.code = attrs.get("code", "")[:MAX_VALUE] or None
            self.done = True
        elif self._depth == 2 and tag == "component":
            self.done = True  # past the header

    def _end(self, name: str) -> None:
        self._depth -= 1

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        self._read += len(chunk)
        try:
            self._parser.Parse(chunk, False)
        except (expat.ExpatError, _Stop):
            self.done = True
        if self._read > MAX_CDA_HEADER:
            self.done = True


# ----------------------------------------------------------------------------- the ZIP


def _unsafe(name: str) -> bool:
    """An entry name an extractor could write outside its directory (APPNOTE 4.4.17: a
    relative path with forward slashes, no drive or device letter)."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return True
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return True
    first = name.split("/", 1)[0]
    return ":" in first or any(p == ".." for p in name.split("/"))


def _member_count(payload: bytes) -> int | None:
    """Entries announced by the End of Central Directory record (APPNOTE 4.3.16), read
    before zipfile parses the directory; None when there is no plain EOCD (or ZIP64)."""
    at = payload.rfind(b"PK\x05\x06", max(0, len(payload) - 65557))
    if at < 0 or at + 22 > len(payload):
        return None
    count = int.from_bytes(payload[at + 10:at + 12], "little")
    return None if count == 0xFFFF else count


def _screen(members: list[zipfile.ZipInfo]) -> None:
    """Refuse the package before inflating anything (names, encryption, declared sizes)."""
    for info in members:
        if _unsafe(info.filename):
            raise _Stop("unsafe_name")
    for info in members:
        if info.flag_bits & 0x1:
            raise _Stop("encrypted")
        if info.file_size > MAX_MEMBER_BYTES:
            raise _Stop("member_too_large")
        if info.file_size > RATIO_FLOOR and \
                info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise _Stop("compression_ratio")
        # APPNOTE 4.4.5: zipfile inflates bzip2 and LZMA without an output bound (one call
        # returns the whole member, whatever its header says): only stored and deflate
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Stop("compression_method")


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget,
            sink: Callable[[bytes], None]) -> None:
    """Inflate *info* in chunks into *sink*; a CRC or format error: member_corrupt."""
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK):
                budget.spend(len(chunk))
                sink(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError,
            EOFError, ValueError, RuntimeError) as exc:
        raise _Stop("member_corrupt") from exc


def _find(names: dict[str, zipfile.ZipInfo], path: str) -> zipfile.ZipInfo | None:
    return names.get(path) or names.get(path.upper()) or next(
        (i for n, i in names.items() if n.upper() == path.upper()), None)


def _metadata_members(members: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """IHE_XDM/<subset>/METADATA.XML (ITI TF-2b §3.32.4.1.3), any case; else any entry
    named METADATA.XML (a package that strays from the layout is still read)."""
    exact = [i for i in members if re.fullmatch(r"IHE_XDM/[^/]+/METADATA\.XML", i.filename,
                                                re.IGNORECASE)]
    return exact or [i for i in members if i.filename.upper().endswith("METADATA.XML")]


def read_package(payload: bytes, budget: Budget | None = None, *,
                 named: bool = True) -> Package | None:
    """Read one XDM ZIP (see the module docstring); never raises on arbitrary bytes.
    *named*: the attachment is called IHE_XDM.ZIP; else a ZIP is an XDM package only when
    it opens and holds an ``IHE_XDM/`` directory (ITI TF-2b §3.32.4.1.2), and None is
    returned for any other ZIP."""
    budget = budget or Budget()
    problems: list[str] = []
    meta = _Metadata()
    documents: list[Document] = []
    try:
        if len(payload) > MAX_ZIP_BYTES:
            raise _Stop("package_too_large")
        count = _member_count(payload)
        if count is not None and count > MAX_MEMBERS:
            raise _Stop("too_many_members")
        try:
            archive = zipfile.ZipFile(io.BytesIO(payload))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                NotImplementedError) as exc:
            raise _Stop("not_a_zip") from exc
        with archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise _Stop("too_many_members")
            if not named and not any(i.filename.upper().startswith("IHE_XDM/")
                                     for i in members):
                return None
            _screen(members)
            files = {i.filename: i for i in members if not i.is_dir()}
            upper = {n.upper() for n in files}
            if "INDEX.HTM" not in upper:
                problems.append("index_missing")
            if "README.TXT" not in upper:
                problems.append("readme_missing")
            metadata = _metadata_members(members)
            if not metadata:
                raise _Stop("metadata_missing")
            for info in metadata:
                subset = posixpath.dirname(info.filename)
                before = len(meta.entries)
                try:
                    with archive.open(info) as stream:
                        meta.feed(stream, budget)
                except expat.ExpatError as exc:
                    raise _Stop("metadata_malformed") from exc
                except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError,
                        NotImplementedError) as exc:
                    raise _Stop("member_corrupt") from exc
                if meta.root != (LCM, "SubmitObjectsRequest"):
                    problems.append("metadata_not_submit_objects")
                for entry in meta.entries[before:]:
                    documents.append(_check_document(archive, files, subset, entry, budget,
                                                     problems))
    except _Stop as stop:
        if not named and stop.code in ("not_a_zip", "too_many_members", "package_too_large"):
            return None  # not known to be an XDM package
        problems.append(stop.code)
    else:
        if not documents:
            problems.append("no_document")
        if not meta.patients:
            problems.append("no_patient_id")
        elif len({cx_parts(p) for p in meta.patients}) > 1:
            problems.append("patient_mismatch")
    return Package(tuple(documents), tuple(meta.patients), tuple(dict.fromkeys(problems)))


def _check_document(archive: zipfile.ZipFile, files: dict[str, zipfile.ZipInfo], subset: str,
                    entry: _Entry, budget: Budget, problems: list[str]) -> Document:
    """One entry against its member: size, SHA-1 and (a CDA) its code."""
    size_slot, hash_slot = entry.slots.get("size"), entry.slots.get("hash")
    size = int(size_slot) if size_slot and size_slot.isdigit() else None
    digest = hash_slot.lower() if hash_slot else None
    uri = entry.slots.get("URI")
    if "type" not in entry.codes or "class" not in entry.codes:
        problems.append("code_missing")
    if size is None:
        problems.append("size_missing")
    if digest is None:
        problems.append("hash_missing")
    cda_code = None
    target = posixpath.normpath(posixpath.join(subset, uri)) if uri else None
    if target is not None and _unsafe(target):
        raise _Stop("unsafe_name")
    member = _find(files, target) if target else None
    if member is None:
        problems.append("document_missing")
    else:
        sha1, total, cda = hashlib.sha1(usedforsecurity=False), [0], _CdaCode()

        def sink(chunk: bytes) -> None:
            sha1.update(chunk)
            total[0] += len(chunk)
            cda.feed(chunk)

        _stream(archive, member, budget, sink)
        if size is not None and total[0] != size:
            problems.append("size_mismatch")
        if digest is not None and sha1.hexdigest() != digest:
            problems.append("hash_mismatch")
        cda_code = cda.code
        if cda_code is not None and entry.codes.get("type") not in (None, cda_code):
            problems.append("type_code_mismatch")
    return Document(entry=entry.id, mime_type=entry.mime_type,
                    class_code=entry.codes.get("class") or None,
                    type_code=entry.codes.get("type") or None,
                    format_code=entry.codes.get("format") or None, uri=uri, size=size,
                    hash=digest, patient=entry.patient, cda_code=cda_code)


# ----------------------------------------------------------------------------- the message


def _first_non_space(data: bytes, start: int, end: int) -> int:
    while start < end and data[start] in b" \t\r\n":
        start += 1
    return start


def _filename(part: Part) -> str:
    info = part.info
    return (param_text(info.disposition_params, b"filename")
            or param_text(info.params, b"name") or "")


def zip_attachments(message: bytes) -> Iterator[tuple[str, int, Part]]:
    """The ZIP attachments of *message*: its base64 parts (RFC 2045 §6.8) whose content
    begins with "PK\\x03\\x04" (their text with "UEsDB"): (file name, decoded size
    estimate, part), at most ``MAX_ZIPS``."""
    found = 0
    for part in MimeMessage(message, max_parts=MAX_PARTS).leaves():
        if (part.info.encoding or b"").lower() != b"base64":
            continue
        if not message.startswith(_ZIP_START, _first_non_space(message, part.body, part.end)):
            continue
        yield _filename(part), (part.end - part.body) * 3 // 4, part
        found += 1
        if found >= MAX_ZIPS:
            return


def _names_xdm(part: Part) -> bool:
    """An attachment not named IHE_XDM.ZIP: whether its ZIP's central directory (at the end,
    APPNOTE 4.3.12) names an ``IHE_XDM/`` entry, from its last base64 text only. The text's
    alignment on base64 quanta is not known without the whole of it: each of the four is
    tried (a wrong one decodes to noise)."""
    tail = part.raw[max(part.body, part.end - _TAIL_TEXT):part.end].translate(None, _NOT_B64)
    for skip in range(4):
        usable = len(tail) - skip
        chunk = tail[skip:skip + usable - usable % 4]
        try:
            if b"ihe_xdm/" in binascii.a2b_base64(chunk).lower():
                return True
        except binascii.Error:
            continue
    return False


def _decoded(part: Part) -> bytes:
    """A base64 body decoded as :meth:`mss.mime.Part.decoded_body` does (every character
    outside the alphabet ignored, padding lenient), without its regex (25 ms a MiB there).
    When "=" appears only at the end (any well-formed body), pybase64 (SIMD, 0.3 ms a MiB)
    decodes it: there it gives what binascii gives, errors included; binascii (1.5 ms a
    MiB) skips line ends itself (non-strict mode) but stops at the first complete padding,
    where pybase64 goes on: a body with "=" inside is its. Only a body both refuse (stray
    padding) is filtered first."""
    raw = part.raw
    data = memoryview(raw)[part.body:part.end]
    pad = raw.find(b"=", part.body, part.end)
    if pad < 0 or _PAD_TAIL.match(raw, pad, part.end):
        try:
            return pybase64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            pass
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    try:
        return base64.b64decode(bytes(data).translate(None, _NOT_B64) + b"===")
    except (binascii.Error, ValueError):
        return b""


def read_packages(message: bytes) -> list[Package]:
    """Every XDM package attached to *message*, read and checked."""
    # inflation in proportion to what was sent: a small message cannot buy seconds of work
    budget = Budget(inflated=min(MAX_INFLATED_BYTES, INFLATION_FACTOR * len(message)
                                 + INFLATION_FLOOR))
    packages: list[Package] = []
    for name, size, part in zip_attachments(message):
        named = name.upper().endswith("IHE_XDM.ZIP")
        if not named and not _names_xdm(part):
            continue  # a ZIP, not an XDM package: not decoded
        if size > MAX_ZIP_BYTES:  # not decoded
            if named:
                packages.append(Package(problems=("package_too_large",)))
            continue
        package = read_package(_decoded(part), budget, named=named)
        if package is None:
            continue
        packages.append(package)
        if "check_budget" in package.problems:
            break
    return packages
