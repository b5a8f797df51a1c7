"""The national whitelist (liste blanche MSSanté): parser and in-memory index.

Format: root ``ListeBlancheMSSante`` in namespace ``https://listeblanche.mssante.fr/schema``,
``DateDeGeneration``, then ``ListeDomaines/Domaine`` with ``Nom``, ``Description``,
``DNCertificatOperateur``, ``ResponsableContact``, ``SupportContact``, ``DateMAJ``. A domain
appears once per operator certificate DN allowed to send for it. The list is parsed as a
stream (bounded memory); a document that stops early keeps every complete ``Domaine`` and
says so in a warning: the 2025-03-14 publication lacks its closing tags.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from trustspace.dn import CanonicalDN, DNError, parse_dn

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT = "ListeBlancheMSSante"
_CHUNK = 64 * 1024
_MAX_ENTRY_WARNINGS = 20
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class WhitelistFormatError(ValueError):
    """The document is not a usable whitelist; the message is one line."""


def normalize_domain(name: str) -> str:
    """Lower-case ASCII (IDNA) form of *name*, without a trailing dot; ValueError if invalid."""
    text = name.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty domain name")
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name ({exc.__class__.__name__})") from None
    if len(ascii_name) > 253:
        raise ValueError("domain name longer than 253 characters")
    labels = ascii_name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(f"invalid label {label!r}")
    return ascii_name


@dataclass(frozen=True)
class WhitelistEntry:
    domain: str
    dn: str
    description: str
    responsable_contact: str
    support_contact: str
    updated_at: str


@dataclass
class ParsedWhitelist:
    sha256: str
    generated_at: str | None
    entries: list[WhitelistEntry]
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def domains(self) -> set[str]:
        return {e.domain for e in self.entries}


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def _text(element: Element, name: str, ns: str | None) -> str:
    child = element.find(f"{{{ns}}}{name}" if ns else name)
    return (child.text or "").strip() if child is not None else ""


def parse_whitelist(data: bytes) -> ParsedWhitelist:
    """Parse the national XML; raises :class:`WhitelistFormatError` when unusable."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise WhitelistFormatError("DOCTYPE and entity declarations are not allowed")
    parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
    entries: list[WhitelistEntry] = []
    warnings: list[str] = []
    invalid_names: list[str] = []
    skipped = 0
    generated_at: str | None = None
    root_ns: str | None = None
    depth = 0
    truncated = False
    seen_root = False
    closed = False

    def skip(reason: str) -> None:
        nonlocal skipped
        skipped += 1
        if skipped <= _MAX_ENTRY_WARNINGS:
            warnings.append(f"Domaine #{len(entries) + skipped} skipped: {reason}")

    def handle(events: Iterable[tuple[Any, ...]]) -> None:
        nonlocal depth, root_ns, seen_root, generated_at, closed
        for event, element in events:
            ns, local = _local(element.tag)
            if event == "start":
                depth += 1
                if depth == 1:
                    if local != ROOT:
                        raise WhitelistFormatError(
                            f"root element is {local!r}, expected {ROOT!r}")
                    if ns not in (None, NAMESPACE):
                        raise WhitelistFormatError(f"unexpected namespace {ns!r}")
                    root_ns, seen_root = ns, True
                continue
            depth -= 1
            if local == "DateDeGeneration" and depth == 1:
                generated_at = (element.text or "").strip() or None
            elif local == "Domaine" and depth == 2:
                name = _text(element, "Nom", root_ns)
                dn = _text(element, "DNCertificatOperateur", root_ns)
                if not name:
                    skip("no Nom")
                elif not dn:
                    skip(f"{name}: no DNCertificatOperateur")
                else:
                    try:
                        domain = normalize_domain(name)
                    except ValueError as exc:
                        # kept as published (the national list holds such names); no
                        # valid address can ever match it
                        domain = name.strip().lower()
                        invalid_names.append(f"{name!r} ({exc})")
                    entries.append(WhitelistEntry(
                        domain=domain, dn=dn,
                        description=_text(element, "Description", root_ns),
                        responsable_contact=_text(element, "ResponsableContact", root_ns),
                        support_contact=_text(element, "SupportContact", root_ns),
                        updated_at=_text(element, "DateMAJ", root_ns)))
                element.clear()
            elif local == "ListeDomaines" and depth == 1:
                element.clear()
            elif depth == 0:
                closed = True

    try:
        for start in range(0, len(data), _CHUNK):
            parser.feed(data[start:start + _CHUNK])
            handle(parser.read_events())
        parser.close()
        handle(parser.read_events())
    except ParseError as exc:
        if not entries:
            raise WhitelistFormatError(f"not well-formed XML: {exc}") from None
        truncated = True
        reason = "missing closing tags" if "no element found" in str(exc) else str(exc)
        warnings.insert(0, f"document truncated after {len(entries)} complete Domaine "
                           f"entries ({reason})")
    if not seen_root:
        raise WhitelistFormatError("empty document")
    if not truncated and not closed:
        truncated = True
        warnings.insert(0, f"document truncated after {len(entries)} complete Domaine entries")
    for text in invalid_names[:_MAX_ENTRY_WARNINGS]:
        warnings.append(f"invalid domain name kept as published, it matches no address: {text}")
    if len(invalid_names) > _MAX_ENTRY_WARNINGS:
        warnings.append(f"{len(invalid_names) - _MAX_ENTRY_WARNINGS} more invalid domain names")
    if skipped > _MAX_ENTRY_WARNINGS:
        warnings.append(f"{skipped - _MAX_ENTRY_WARNINGS} more Domaine entries skipped")
    if not entries:
        raise WhitelistFormatError("no usable Domaine entry")
    return ParsedWhitelist(hashlib.sha256(data).hexdigest(), generated_at, entries, warnings,
                           truncated)


class Whitelist:
    """One whitelist version in memory: domain -> operator certificate DNs, O(1) lookups."""

    def __init__(self, version_id: int, entries: Iterable[WhitelistEntry]) -> None:
        self._version_id = version_id
        index: dict[str, set[str]] = {}
        count = 0
        for entry in entries:
            index.setdefault(entry.domain, set()).add(entry.dn)
            count += 1
        self._dns = {domain: frozenset(dns) for domain, dns in index.items()}
        self._entry_count = count
        self._parsed: dict[str, frozenset[CanonicalDN]] = {}  # filled on first use

    @classmethod
    def empty(cls) -> Whitelist:
        """No list imported: every remote domain is refused (default deny)."""
        return cls(0, ())

    @property
    def version_id(self) -> int:
        return self._version_id

    @property
    def domain_count(self) -> int:
        return len(self._dns)

    @property
    def entry_count(self) -> int:
        return self._entry_count

    def _key(self, domain: str) -> str | None:
        try:
            return normalize_domain(domain)
        except ValueError:
            return None

    def is_whitelisted(self, domain: str) -> bool:
        key = self._key(domain)
        return key is not None and key in self._dns

    def dns_for(self, domain: str) -> frozenset[str]:
        key = self._key(domain)
        return self._dns.get(key, frozenset()) if key else frozenset()

    def dn_listed(self, domain: str, dn: CanonicalDN) -> bool:
        """Is *dn* (parsed) one of the operator DNs listed for *domain*? (RFC 4514 values)"""
        key = self._key(domain)
        if key is None:
            return False
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = frozenset(_parse_or_none(text) for text in self._dns.get(key, ()))
            self._parsed[key] = parsed
        return dn in parsed


def _parse_or_none(text: str) -> CanonicalDN:
    try:
        return parse_dn(text)
    except DNError:
        return frozenset()  # an unparsable listed DN matches no certificate
