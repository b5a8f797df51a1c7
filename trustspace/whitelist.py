"""The national whitelist (liste blanche MSSanté): parser and in-memory index.

Format: root ``ListeBlancheMSSante`` in namespace ``https://listeblanche.mssante.fr/schema``
(a document without namespace is accepted too), ``DateDeGeneration``, then
``ListeDomaines/Domaine`` with ``Nom``, ``Description``, ``DNCertificatOperateur``,
``ResponsableContact``, ``SupportContact``, ``DateMAJ``. A domain appears once per operator
certificate DN allowed to send for it.

The document is parsed as a stream: every finished ``Domaine`` is detached from the tree, so
memory holds one entry at a time besides the results. A document that stops early keeps every
complete ``Domaine`` and says so in a warning (the 2025-03-14 publication lacks its closing
tags). DTDs and entity declarations are refused before parsing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from mss.addresses import normalize_domain
from trustspace.dn import CanonicalDN, DNError, parse_dn

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT = "ListeBlancheMSSante"
_CHUNK = 64 * 1024
_MAX_ENTRY_WARNINGS = 20
_MAX_STORED_NAME = 255  # width of whitelist_entries.domain
# Any DTD (internal subset, external reference, entity declarations) is refused.
_FORBIDDEN = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_FIELDS = frozenset({"Nom", "Description", "DNCertificatOperateur", "ResponsableContact",
                     "SupportContact", "DateMAJ"})


class WhitelistFormatError(ValueError):
    """The document is not a usable whitelist; the message is one line."""


def _show(text: str, limit: int = 80) -> str:
    """*text* quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


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


def _split_tag(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


class _Reader:
    """Consumes the pull parser's events; keeps only what the result needs."""

    def __init__(self) -> None:
        self.stack: list[Element] = []
        self.ns: str | None = None
        self.seen_root = False
        self.closed = False
        self.generated_at: str | None = None
        self.entries: list[WhitelistEntry] = []
        self.complete = 0  # complete Domaine elements, usable or not
        self.notes: list[str] = []  # per-entry warnings, capped
        self.note_count = 0
        self.skipped = 0
        self.kept_invalid = 0

    def note(self, text: str) -> None:
        self.note_count += 1
        if self.note_count <= _MAX_ENTRY_WARNINGS:
            self.notes.append(text)

    def handle(self, events: Iterable[tuple[Any, ...]]) -> None:
        for event, element in events:
            if event == "start":
                if not self.stack:
                    self._root(element)
                self.stack.append(element)
                continue
            self.stack.pop()
            if not self.stack:
                self.closed = True
                continue
            depth = len(self.stack)  # ancestors of this element
            parent = self.stack[-1]
            ns, local = _split_tag(element.tag)
            if depth == 1 and local == "DateDeGeneration" and ns == self.ns:
                self.generated_at = (element.text or "").strip() or None
            elif depth == 2 and local == "Domaine" and ns == self.ns \
                    and _split_tag(parent.tag) == (self.ns, "ListeDomaines"):
                self.complete += 1
                self._domaine(element)
            if depth <= 2:  # detach finished children of the root and of ListeDomaines
                element.clear()
                parent.remove(element)

    def _root(self, element: Element) -> None:
        ns, local = _split_tag(element.tag)
        if local != ROOT:
            raise WhitelistFormatError(f"root element is {_show(local)}, expected {ROOT!r}")
        if ns not in (None, NAMESPACE):
            raise WhitelistFormatError(
                f"unexpected namespace {_show(ns or '')} (expected {NAMESPACE})")
        self.ns, self.seen_root = ns, True

    def _domaine(self, element: Element) -> None:
        values: dict[str, str] = {}
        for child in element:
            ns, local = _split_tag(child.tag)
            if ns == self.ns and local in _FIELDS and local not in values:
                values[local] = (child.text or "").strip()
        where = f"Domaine #{self.complete}"
        name, dn = values.get("Nom", ""), values.get("DNCertificatOperateur", "")
        if not name:
            self.skipped += 1
            self.note(f"{where} skipped: no Nom")
            return
        if not dn:
            self.skipped += 1
            self.note(f"{where} skipped: {name}: no DNCertificatOperateur")
            return
        try:
            domain = normalize_domain(name)
        except ValueError as exc:
            domain = name.strip().lower()
            if len(domain) > _MAX_STORED_NAME:
                self.skipped += 1
                self.note(f"{where} skipped: invalid domain name {_show(name)} ({exc})")
                return
            # The national list does publish such names (2025-03-14: one with an '@'). It
            # is kept so the counts match the publication; since every lookup is normalised
            # first, no address can ever match it.
            self.kept_invalid += 1
            self.note(f"{where}: invalid domain name kept as published, it matches no "
                      f"address: {_show(name)} ({exc})")
        self.entries.append(WhitelistEntry(
            domain=domain, dn=dn, description=values.get("Description", ""),
            responsable_contact=values.get("ResponsableContact", ""),
            support_contact=values.get("SupportContact", ""),
            updated_at=values.get("DateMAJ", "")))


def _check_safe(data: bytes) -> None:
    # NUL never occurs in an ASCII-compatible XML document; refusing it rules out UTF-16/32,
    # where the DTD scan below could not see a DOCTYPE.
    if b"\x00" in data:
        raise WhitelistFormatError("not a UTF-8 document (NUL bytes; UTF-16/32 is refused)")
    if _FORBIDDEN.search(data):
        raise WhitelistFormatError("DOCTYPE not allowed (no DTD or entity declarations)")


def parse_whitelist(data: bytes) -> ParsedWhitelist:
    """Parse the national XML; raises :class:`WhitelistFormatError` when unusable."""
    _check_safe(data)
    parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
    reader = _Reader()
    error: ParseError | None = None
    try:
        for start in range(0, len(data), _CHUNK):
            parser.feed(data[start:start + _CHUNK])
            reader.handle(parser.read_events())
        parser.close()
        reader.handle(parser.read_events())
    except ParseError as exc:  # events before the error were handled: entries are complete
        error = exc
    except (LookupError, UnicodeError) as exc:  # e.g. encoding="ATF-8" in the declaration
        raise WhitelistFormatError(f"unusable character encoding: {exc}") from None
    warnings: list[str] = []
    truncated = error is not None or not reader.closed
    if error is not None and not reader.entries:
        if reader.complete:
            raise WhitelistFormatError(
                f"no usable Domaine entry before an XML error: {error}") from None
        raise WhitelistFormatError(f"not well-formed XML: {error}") from None
    if not reader.seen_root:
        raise WhitelistFormatError("empty document")
    if truncated:
        reason = "missing closing tags" if error is None or "no element found" in str(error) \
            else str(error)
        warnings.append(f"document truncated after {reader.complete} complete Domaine "
                        f"entries ({reason})")
    warnings.extend(reader.notes)
    if reader.note_count > _MAX_ENTRY_WARNINGS:
        warnings.append(f"{reader.note_count - _MAX_ENTRY_WARNINGS} more entry warnings "
                        f"({reader.skipped} Domaine entries skipped, {reader.kept_invalid} "
                        "invalid names kept in all)")
    if not reader.entries:
        raise WhitelistFormatError(f"no usable Domaine entry ({reader.complete} found, "
                                   f"{reader.skipped} skipped)")
    return ParsedWhitelist(hashlib.sha256(data).hexdigest(), reader.generated_at,
                           reader.entries, warnings, truncated)


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
        self._parsed: dict[str, frozenset[CanonicalDN]] = {}  # listed domains, on first use

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

    @staticmethod
    def _key(domain: str) -> str | None:
        try:
            return normalize_domain(domain)
        except ValueError:
            return None

    def is_whitelisted(self, domain: str) -> bool:
        """Is *domain* (any case, Unicode or ``xn--``, trailing dot) listed? Never raises."""
        key = self._key(domain)
        return key is not None and key in self._dns

    def dns_for(self, domain: str) -> frozenset[str]:
        """The operator certificate DNs listed for *domain*, as published."""
        key = self._key(domain)
        return self._dns.get(key, frozenset()) if key else frozenset()

    def dn_listed(self, domain: str, dn: CanonicalDN) -> bool:
        """Is *dn* (parsed) one of the operator DNs listed for *domain*? (RFC 4514 values)"""
        key = self._key(domain)
        if key is None or key not in self._dns:
            return False
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = frozenset(c for c in map(_parse_or_none, self._dns[key]) if c)
            self._parsed[key] = parsed
        return bool(dn) and dn in parsed

    def dn_known(self, dn: CanonicalDN) -> bool:
        """Is *dn* listed for any domain (an operator of the trust space)? For senders
        without a domain: the null reverse-path of delivery reports."""
        known = self._parsed.get("")  # "" is never a domain: the union, built once
        if known is None:
            known = frozenset(c for dns in self._dns.values()
                              for c in map(_parse_or_none, dns) if c)
            self._parsed[""] = known
        return bool(dn) and dn in known


def _parse_or_none(text: str) -> CanonicalDN | None:
    try:
        return parse_dn(text)
    except DNError:
        return None  # an unparsable listed DN matches no certificate
