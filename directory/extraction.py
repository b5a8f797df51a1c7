"""The national bulk extraction "Annuaire Santé – Extraction des BAL MSSanté" as a source.

The agency publishes, daily, a ZIP holding one ``Extraction_Correspondance_MSSante_<YYYYMMDD
hhmm>.txt``: UTF-8, ``|``-delimited, a header row of column names then one line per
mailbox (``Type de BAL``, ``Adresse BAL``, the professional's identifiers, names and
profession, the structure's identifiers, name and postal address lines L2-L6...). Columns
are found by name in the header, compared without case, accents or punctuation, so a
renamed spelling ("Code postal" or "Code postal structure BAL") or a reordered file still
reads. The file has no stable id but the address: a row's ``dn`` is ``extraction:<mail>``,
and a mail on a second line is reported as a duplicate (the first line kept).

Streamed: lines are read one by one from the ZIP member (never the whole file in memory);
an https URL is first downloaded to a 0600 temporary file (a ZIP is read from its end),
TLS verified against ``ca_file`` or the system store, https redirects only, bounded by
``max_bytes``. With ``sha256``, the file (the ZIP as published) must match before a line is
read. Full loads only: the file has no modification dates.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import ssl
import tempfile
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from http.client import HTTPMessage
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from directory.sources import Rejected, Row, SyncError
from mss.config import ExtractionConfig
from mss.files import sha256_of

MEMBER = re.compile(r"Extraction_Correspondance_MSSante_(\d{12})\.txt$")
CHUNK = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def column_key(name: str) -> str:
    """A header name compared without case, accents, spaces or punctuation."""
    text = unicodedata.normalize("NFKD", name)
    return "".join(c for c in text if c.isalnum()).lower()


# what we read -> the header names it may have (as column_key); the first present wins
COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mail": ("adressebal",),
    "type": ("typedebal", "typebal"),
    "id_nat": ("identificationnationalepp", "identifiantnationalpp"),
    "structure_id": ("identificationstructure", "identifiantstructure"),
    "service": ("servicederattachement", "servicerattachement"),
    "surname": ("nomdexercice",),
    "given_name": ("prenomdexercice",),
    "profession": ("libelleprofession",),
    "savoir_faire": ("libellesavoirfaire",),
    "raison_sociale": ("raisonsocialestructurebal", "raisonsociale"),
    "enseigne": ("enseignecommercialestructurebal", "enseignecommerciale"),
    "l6": ("l6ligneacheminement", "l6ligneacheminementstructurebal",
           "ligneacheminementstructurebal"),
    "postal_code": ("codepostalstructurebal", "codepostal"),
})
# the published header, in order (the generator of tests and bench/directory_sync.py)
HEADER = ("Type de BAL", "Adresse BAL", "Type Identifiant PP", "Identifiant PP",
          "Identification nationale PP", "Type identifiant structure",
          "Identification Structure", "Service de rattachement", "Civilité d'exercice",
          "Nom d'exercice", "Prénom d'exercice", "Catégorie profession",
          "Libellé de catégorie profession", "Code Profession", "Libellé Profession",
          "Code savoir-faire", "Libellé savoir-faire", "Dématérialisation",
          "Raison Sociale structure BAL", "Enseigne commerciale structure BAL",
          "L2 Complément localisation structure BAL",
          "L3 Complément distribution structure BAL", "L4 Numéro voie structure BAL",
          "L4 Complément numéro voie structure BAL", "L4 Type voie structure BAL",
          "L4 Libellé voie structure BAL", "L5 Lieu-dit mention structure BAL",
          "L6 Ligne acheminement structure BAL", "Code postal structure BAL",
          "Département structure BAL", "Pays structure BAL")
_POSTAL_PREFIX = re.compile(r"^\d{5}\s+")


def header_positions(names: list[str]) -> dict[str, int]:
    """Where each column of :data:`COLUMNS` is (absent ones left out); SyncError without
    ``Adresse BAL``."""
    keys = [column_key(n) for n in names]
    positions: dict[str, int] = {}
    for role, spellings in COLUMNS.items():
        for spelling in spellings:
            if spelling in keys:
                positions[role] = keys.index(spelling)
                break
    if "mail" not in positions:
        raise SyncError('line 1: no "Adresse BAL" column in the header: not an extraction '
                        "file")
    return positions


def to_row(fields: list[str], at: dict[str, int]) -> Row:
    """One line (split) as a directory row; the mail lower-cased, not yet checked."""
    def get(role: str) -> str | None:
        i = at.get(role)
        return (fields[i].strip() or None) if i is not None else None

    mail = (get("mail") or "").lower()
    kind = (get("type") or "").upper() or None
    given, surname = get("given_name"), get("surname")
    structure = get("raison_sociale") or get("enseigne")
    person = " ".join(p for p in (given, surname) if p) or None
    profession, skill = get("profession"), get("savoir_faire")
    if profession and skill:
        profession = f"{profession} ({skill})"
    city = get("l6")
    if city:
        city = _POSTAL_PREFIX.sub("", city) or None
    return {"dn": f"extraction:{mail}", "mail": mail, "type": kind, "id_nat": get("id_nat"),
            "display_name": person if kind == "PER" and person else structure or person,
            "given_name": given, "surname": surname, "profession": profession or skill,
            "structure_id": get("structure_id"), "service": get("service"), "city": city,
            "liste_rouge": False}  # liste rouge mailboxes are not in the public file


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str
                         ) -> urllib.request.Request | None:
        if not newurl.startswith("https://"):
            raise urllib.error.URLError(f"refused redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def redact(url: str) -> str:
    """*url* without user information or query (an API key never logged)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1],
                                                  query=""))


def download(url: str, into: IO[bytes], *, ca_file: Path | None, timeout: float,
             max_bytes: int) -> str:
    """GET *url* (https, verified) into *into*; the SHA-256 of what was written."""
    if not url.startswith("https://"):
        raise SyncError(f"{redact(url)}: only https URLs are fetched (TLS verified)")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    opener = urllib.request.build_opener(_HttpsOnlyRedirects(),
                                         urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers={"User-Agent": "mss-directory-import/1"})
    sha, size = hashlib.sha256(), 0
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise SyncError(f"{redact(url)}: {declared} bytes, more than max_bytes")
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise SyncError(f"{redact(url)}: larger than {max_bytes} bytes")
                sha.update(chunk)
                into.write(chunk)
    except urllib.error.HTTPError as exc:
        raise SyncError(f"{redact(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SyncError(f"{redact(url)}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, TLS failures, bad URLs
        raise SyncError(f"{redact(url)}: {exc}") from None
    into.flush()
    return sha.hexdigest()


class ExtractionSource:
    """:class:`directory.sources.Source` reading the extraction from *location* (a path,
    ZIP or plain text, or an https URL)."""

    name = "extraction"
    incremental = False

    def __init__(self, location: str | Path, *, sha256: str | None = None,
                 ca_file: Path | None = None, timeout: float = 120.0,
                 max_bytes: int = 1024 * 1024 * 1024, tmp_dir: Path | None = None) -> None:
        if sha256 is not None and not _HEX64.fullmatch(sha256):
            raise SyncError("--sha256: expected 64 hexadecimal digits")
        self.location = str(location)
        self.sha256 = sha256.lower() if sha256 else None
        self.ca_file, self.timeout, self.max_bytes = ca_file, timeout, max_bytes
        self.tmp_dir = tmp_dir
        self._path: Path | None = None
        self._temp: IO[bytes] | None = None
        self._stamp: str | None = None

    @classmethod
    def from_config(cls, config: ExtractionConfig) -> ExtractionSource:
        return cls(str(config.file) if config.file else config.url, ca_file=config.ca_file,
                   timeout=config.timeout, max_bytes=config.max_bytes)

    def open(self) -> str:
        """Fetch (an URL) and check the file; names it with its SHA-256."""
        if self.location.startswith(("https://", "http://")):
            self._temp = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed by close()
                prefix="mss-extraction-", dir=self.tmp_dir)
            digest = download(self.location, self._temp, ca_file=self.ca_file,
                              timeout=self.timeout, max_bytes=self.max_bytes)
            self._path = Path(self._temp.name)
            label = redact(self.location)
        else:
            self._path = Path(self.location)
            try:
                digest = sha256_of(self._path)
            except OSError as exc:
                raise SyncError(f"{self._path}: {exc.strerror}") from None
            label = str(self._path)
        if self.sha256 is not None and digest != self.sha256:
            raise SyncError(f"{label}: SHA-256 {digest} is not the expected {self.sha256}; "
                            "nothing loaded")
        return f"{label} sha256:{digest}"

    def high_water(self, started: float) -> str | None:
        """The file's generation time (from its name): which extraction is in force."""
        return self._stamp

    def close(self) -> None:
        if self._temp is not None:
            self._temp.close()  # deletes it
            self._temp = None

    # ------------------------------------------------------------------ reading
    def _lines(self) -> Iterator[bytes]:
        assert self._path is not None, "open() first"
        with self._path.open("rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # a ZIP's first local header (APPNOTE 4.3.7)
        if not zipped:
            self._stamp = _stamp(self._path.name)
            with self._path.open("rb") as f:
                yield from _bounded(f, self.max_bytes, str(self._path))
            return
        try:
            archive = zipfile.ZipFile(self._path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SyncError(f"{self.location}: not a readable ZIP: {exc}") from None
        with archive:
            member = _member(archive)
            self._stamp = _stamp(member.filename)
            if member.file_size > self.max_bytes:
                raise SyncError(f"{member.filename}: {member.file_size} bytes unpacked, more "
                                "than max_bytes")
            try:
                with archive.open(member) as raw:
                    yield from _bounded(io.BufferedReader(raw, CHUNK), self.max_bytes,
                                        member.filename)
            except (zipfile.BadZipFile, EOFError) as exc:  # CRC or truncated member
                raise SyncError(f"{member.filename}: damaged archive: {exc}") from None

    def rows(self, since: str | None) -> Iterator[Row | Rejected]:
        """Every mailbox of the file (*since* is ignored: full loads only)."""
        lines = self._lines()
        header = next(lines, None)
        if header is None:
            raise SyncError(f"{self.location}: empty file")
        try:
            names = header.decode("utf-8-sig").rstrip("\r\n").split("|")
        except UnicodeDecodeError:
            raise SyncError("line 1: the header is not UTF-8") from None
        trailing = len(names) > 1 and names[-1] == ""  # lines ending with '|'
        if trailing:
            names.pop()
        width = len(names)
        at = header_positions(names)
        seen: set[int] = set()  # hash of each mail loaded: duplicates without the strings
        for number, raw in enumerate(lines, start=2):
            where = f"line {number}"
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield Rejected(where, f"not UTF-8 (byte {exc.start + 1})")
                continue
            if not text.strip():
                continue
            fields = text.split("|")
            if trailing and len(fields) == width + 1 and fields[-1] == "":
                fields.pop()
            if len(fields) != width:
                yield Rejected(where, f"{len(fields)} fields, the header has {width}")
                continue
            row = to_row(fields, at)
            if not row["mail"]:
                yield Rejected(where, "no Adresse BAL")
                continue
            row["where"] = where  # DirectorySync names the line if the address is invalid
            key = hash(row["mail"])
            if key in seen:
                yield Rejected(where, f"{row['mail']} already on an earlier line (first kept)")
                continue
            seen.add(key)
            yield row


def _member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The extraction's text file: the one named as published, else the only .txt."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    named = [i for i in infos if MEMBER.search(i.filename)]
    texts = named or [i for i in infos if i.filename.lower().endswith(".txt")]
    if len(texts) != 1:
        raise SyncError(f"the ZIP holds {len(texts)} extraction text files, expected one "
                        "(Extraction_Correspondance_MSSante_<YYYYMMDDhhmm>.txt)")
    return texts[0]


def _stamp(name: str) -> str | None:
    match = MEMBER.search(os.path.basename(name))
    return match.group(1) if match else None


def _bounded(stream: Any, limit: int, name: str) -> Iterator[bytes]:
    """The lines of *stream*, failing once more than *limit* bytes were read."""
    total = 0
    for line in stream:
        total += len(line)
        if total > limit:
            raise SyncError(f"{name}: more than max_bytes unpacked")
        yield line
