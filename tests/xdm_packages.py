"""IHE XDM packages built by the tests in the ITI-32 layout (ITI TF-2b §3.32.4.1), and broken
ones: the package a French LPS attaches (IHE_XDM.ZIP holding INDEX.HTM, README.TXT and
IHE_XDM/SUBSET01/ with METADATA.XML, one CDA and one PDF), messages carrying it, and a
hand-written ZIP writer for what zipfile will not write (a precompressed 1 GiB member)."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from xml.sax.saxutils import quoteattr

INS = "1850575123456"  # a test NIR (13 characters + the key, not checked here)
INS_OID = "1.2.250.1.213.1.4.10"  # test INS-NIR range
LOCAL_OID = "1.2.250.1.71.4.2.1"  # a hospital's local patient numbers: not an INS
CDA_CODE = "11488-4"  # LOINC "Consult note"
PDF_TYPE = "34133-9"  # LOINC "Summary of episode note"
LOINC = "2.16.840.1.113883.6.1"

_EXTRINSIC = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"  # stable DocumentEntry
_SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
_SCHEMES = {"class": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
            "type": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
            "format": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"}
_DOC_PATIENT = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
_SET_PATIENT = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"


def cda(code: str = CDA_CODE, filler: int = 0) -> bytes:
    """A CDA R2 document whose header code is *code* (*filler* bytes of narrative)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">'
            '<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
            f'<id root="1.2.250.1.999.1" extension="42"/><code code="{code}" '
            f'codeSystem="{LOINC}" displayName="Compte rendu"/><title>CR</title>'
            '<component><structuredBody><component><section><text>'
            + "Examen clinique normal. " * (filler // 24 + 1)
            + "</text></section></component></structuredBody></component>"
            "</ClinicalDocument>").encode()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@dataclass
class Doc:
    """One document of a package: its member name, content and metadata."""

    name: str
    data: bytes
    mime: str
    type_code: str
    class_code: str = "11369-6"
    format_code: str = "urn:ihe:iti:xds-sd:pdf:2008"
    size: int | None = None  # None: the real size
    hash: str | None = None  # None: the real SHA-1
    slots: bool = True  # size and hash slots present
    patient: str | None = None  # its patient id, when not the package's


@dataclass
class Xdm:
    """An XDM package under construction: change a field to break it."""

    docs: list[Doc] = field(default_factory=lambda: [
        Doc("DOC0001.XML", cda(), "text/xml", CDA_CODE,
            format_code="urn:asip:ci-sis:cr-bio:2011"),
        Doc("DOC0002.PDF", PDF, "application/pdf", PDF_TYPE)])
    patient: str = f"{INS}^^^&{INS_OID}&ISO"
    root: str = "lcm:SubmitObjectsRequest"
    metadata: bytes | None = None  # None: built from the fields above
    index: bool = True
    readme: bool = True
    with_metadata: bool = True
    extra: dict[str, bytes] = field(default_factory=dict)  # more members, as named

    def metadata_xml(self) -> bytes:
        if self.metadata is not None:
            return self.metadata
        entries = []
        for i, d in enumerate(self.docs, 1):
            size = len(d.data) if d.size is None else d.size
            digest = hashlib.sha1(d.data).hexdigest() if d.hash is None else d.hash
            slots = (_slot("size", str(size)) + _slot("hash", digest)) if d.slots else ""
            codes = "".join(
                f'<rim:Classification id="cl{i}{kind}" classificationScheme="{scheme}" '
                f'classifiedObject="doc{i}" nodeRepresentation={quoteattr(code)}>'
                f'{_slot("codingScheme", LOINC)}</rim:Classification>'
                for kind, scheme, code in (("class", _SCHEMES["class"], d.class_code),
                                           ("type", _SCHEMES["type"], d.type_code),
                                           ("format", _SCHEMES["format"], d.format_code)))
            entries.append(
                f'<rim:ExtrinsicObject id="doc{i}" mimeType="{d.mime}" '
                f'objectType="{_EXTRINSIC}">{slots}{_slot("URI", d.name)}'
                f'{_slot("creationTime", "20261203080000")}{codes}'
                f'<rim:ExternalIdentifier id="pid{i}" registryObject="doc{i}" '
                f'identificationScheme="{_DOC_PATIENT}" '
                f'value={quoteattr(d.patient or self.patient)}/>'
                "</rim:ExtrinsicObject>")
        ns = ('xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
              'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"')
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{self.root} {ns}>'
                "<rim:RegistryObjectList>"
                '<rim:RegistryPackage id="ss1">'
                f'<rim:Classification id="cls" classifiedObject="ss1" '
                f'classificationNode="{_SUBMISSION_SET}"/>'
                f'<rim:ExternalIdentifier id="sspid" registryObject="ss1" '
                f'identificationScheme="{_SET_PATIENT}" value={quoteattr(self.patient)}/>'
                "</rim:RegistryPackage>" + "".join(entries)
                + f"</rim:RegistryObjectList></{self.root}>").encode()

    def members(self) -> list[tuple[str, bytes]]:
        out = []
        if self.index:
            out.append(("INDEX.HTM", b"<html><body>Documents: IHE_XDM/SUBSET01</body></html>"))
        if self.readme:
            out.append(("README.TXT", b"Package produced by the mss tests (ITI-32)."))
        if self.with_metadata:
            out.append(("IHE_XDM/SUBSET01/METADATA.XML", self.metadata_xml()))
        out += [(f"IHE_XDM/SUBSET01/{d.name}", d.data) for d in self.docs]
        out += list(self.extra.items())
        return out

    def zip(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in self.members():
                archive.writestr(name, data)
        return buf.getvalue()


def _slot(name: str, value: str) -> str:
    return (f'<rim:Slot name="{name}"><rim:ValueList><rim:Value>{value}</rim:Value>'
            "</rim:ValueList></rim:Slot>")


def message(package: bytes | None, *, sender: str = "alice@demo.mssante.fr",
            rcpt: str = "bob@demo.mssante.fr", headers: dict[str, str] | None = None,
            filename: str = "IHE_XDM.ZIP", body: str = "Compte rendu en piece jointe.",
            msgid: str = "<xdm@test.example>") -> bytes:
    """A message (CRLF) carrying *package* as an attachment, with X-MSS *headers*."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = "Compte rendu"
    msg["Message-ID"] = msgid
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if package is not None:
        msg.add_attachment(package, maintype="application", subtype="zip", filename=filename)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


GOOD_HEADERS = {"X-MSS-INS": "O", "X-MSS-CODECDA": CDA_CODE, "X-MSS-NIL": "MSS-TESTS-1"}


# ----------------------------------------------------------------------------- raw ZIPs


def raw_zip(entries: list[tuple[str, int, int, bytes, int, int]]) -> bytes:
    """A ZIP written by hand: (name, method, crc, compressed data, declared compressed
    size, declared size) per entry (APPNOTE 4.3.7, 4.3.12, 4.3.16)."""
    out = io.BytesIO()
    central = io.BytesIO()
    for name, method, crc, data, csize, size in entries:
        raw = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 46, 0, method, 0, 0x21, crc,
                              csize, size, len(raw), 0) + raw + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 46, 46, 0, method, 0,
                                  0x21, crc, csize, size, len(raw), 0, 0, 0, 0, 0, offset)
                      + raw)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd),
                          start, 0))
    return out.getvalue()


# bz2.compress(bytes(1 << 30), 9): one GiB of zeros in 785 bytes (ZIP method 12, APPNOTE
# 4.4.5), precomputed (compressing it takes seconds), and its CRC-32
BOMB_SIZE = 1 << 30
BOMB_CRC = 0x5B64C2B0
BOMB_BZ2 = base64.b64decode(
    "QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKg"
    "JakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZC"
    "oCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1G"
    "QqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBN"
    "RkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCA"
    "TUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAw"
    "gE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAA"
    "MIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAgg"
    "ADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAI"
    "IAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAA"
    "CCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAA"
    "AAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1lIfF/JAIpSyADA"
    "AAAEAAggADDMBSmmkSJDYUSJDxdyRThQkPaI5AI="
)


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def with_members(xdm: Xdm, extra: list[tuple[str, int, int, bytes, int, int]]) -> bytes:
    """The package *xdm* rewritten by hand (deflated members) with *extra* raw entries."""
    entries = [(name, 8, zlib.crc32(data), deflate(data), len(deflate(data)), len(data))
               for name, data in xdm.members()]
    return raw_zip(entries + extra)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
