"""Distinguished names compared as parsed values, never as strings (RFC 4514, RFC 4518).

The whitelist writes operator DNs as RFC 4514 strings, with variations in attribute order,
spacing and case for the same certificate. A DN is reduced to the sequence of its RDNs
(RFC 4514 §2.1; X.501: two DNs match when their RDN sequences match in order); each RDN is
the *set* of its (attribute, value) pairs, so only the AVAs of one multi-valued RDN
("CN=x+OU=y") compare as a set: "CN=x+OU=y,O=z" is not "CN=x,OU=y,O=z". Attribute types are
mapped to one name (OIDs and aliases such as S for ST), values unescaped (RFC 4514 §3),
Unicode-normalised (NFKC), case-folded and with inner spaces collapsed (the spirit of RFC
4518's caseIgnoreMatch preparation). A sequence and its reverse are one DN: RFC 4514 strings
list the RDNs last-first, some publishers write them in X.500 (first-first) order.
"""

from __future__ import annotations

import json
import re
import unicodedata
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the whitelist and the CLI parse DNs without it
    from cryptography import x509

RDN = tuple[tuple[str, str], ...]  # the AVAs of one RDN, sorted: compared as a set
CanonicalDN = tuple[RDN, ...]  # the RDN sequence, oriented one fixed way (see _oriented)

_TYPES = MappingProxyType({
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "S": "ST",
    "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.9": "STREET", "2.5.4.5": "SERIALNUMBER",
    "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "EMAIL", "E": "EMAIL", "EMAILADDRESS": "EMAIL",
    "2.5.4.97": "ORGANIZATIONIDENTIFIER",
})
_HEX_PAIR = re.compile(r"\\([0-9A-Fa-f]{2})")
_SPACES = re.compile(r"\s+")


class DNError(ValueError):
    """Not a parsable RFC 4514 distinguished name."""


def _split(text: str, separator: str) -> list[str]:
    """Split on *separator* where it is not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise DNError("DN ends with a lone backslash")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    # RFC 4514 §3: \HH pairs are UTF-8 octets; \<char> is the char itself
    raw = _HEX_PAIR.sub(lambda m: f"\\x{m.group(1)}", value)
    if "\\x" in raw:
        out = bytearray()
        i = 0
        while i < len(raw):
            if raw.startswith("\\x", i):
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
            elif raw[i] == "\\" and i + 1 < len(raw):
                out += raw[i + 1].encode()
                i += 2
            else:
                out += raw[i].encode()
                i += 1
        return out.decode("utf-8", "replace")
    return re.sub(r"\\(.)", r"\1", raw)


def _attribute_type(name: str) -> str:
    key = name.strip().upper()
    if key.startswith("OID."):
        key = key[4:]
    return _TYPES.get(key, key)


def _value(text: str) -> str:
    value = unicodedata.normalize("NFKC", text)
    return _SPACES.sub(" ", value).strip().casefold()


def _oriented(rdns: list[RDN]) -> CanonicalDN:
    """One of the two orientations, the same for a sequence and its reverse."""
    forward, backward = tuple(rdns), tuple(reversed(rdns))
    return min(forward, backward)


def parse_dn(text: str) -> CanonicalDN:
    rdns: list[RDN] = []
    for rdn in _split(text.strip(), ","):
        if not rdn.strip():
            raise DNError(f"empty RDN in {text!r}")
        avas = set()
        for ava in _split(rdn, "+"):
            name, sep, value = ava.partition("=")
            if not sep or not name.strip():
                raise DNError(f"not type=value: {ava.strip()!r}")
            avas.add((_attribute_type(name), _value(_unescape(value.strip()))))
        rdns.append(tuple(sorted(avas)))
    return _oriented(rdns)


def canonical_name(name: x509.Name) -> CanonicalDN:
    """A certificate subject (its RDNs in ASN.1 order) in the same canonical form."""
    rdns: list[RDN] = []
    for rdn in name.rdns:
        avas = set()
        for attribute in rdn:
            oid = attribute.oid.dotted_string
            value = attribute.value if isinstance(attribute.value, str) else \
                attribute.value.decode("utf-8", "replace")
            avas.add((_TYPES.get(oid, oid), _value(value)))
        rdns.append(tuple(sorted(avas)))
    return _oriented(rdns)


def dn_key(dn: CanonicalDN) -> str:
    """A canonical DN as one string, equal for equal DNs: the key a DN is stored and looked
    up by (mailbox certificate bindings, mss/mailstore/identities.py)."""
    return json.dumps(dn, ensure_ascii=False, separators=(",", ":"))
