"""Mail addresses and domain names in the one form the node stores and compares (core).

Domains: lower-case ASCII, IDNA-encoded (RFC 5890), without the trailing dot; addresses:
``local@domain`` with such a domain and a lower-cased dot-atom local part (RFC 5322 §3.4.1).
The whitelist, the store, the configuration, the directory and the SMTP listener all use
these two functions, so a name means the same thing everywhere.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from types import MappingProxyType

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IDNA_DOTS = MappingProxyType(  # RFC 3490 §3.1
    str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."}))
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


class AddressError(ValueError):
    """An invalid address; the message is one line naming what is wrong."""


def _show(text: str, limit: int = 80) -> str:
    """*text* quoted for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_a_label(label: str) -> None:
    """RFC 5890 §2.3.2.1: an ``xn--`` label must be the Punycode (RFC 3492) of a U-label:
    it decodes, to non-ASCII letters, marks, digits and hyphens, and encodes back to itself."""
    try:
        u_label = label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        u_label = ""
    valid = (u_label and not u_label.isascii()
             and u_label.encode("punycode").decode("ascii") == label[4:]
             and all(c == "-" or unicodedata.category(c)[0] in "LMN" for c in u_label))
    if not valid:
        raise ValueError(f"label {_show(label)} is not a valid A-label (RFC 5890: Punycode "
                         "of a Unicode label)")


def normalize_domain(name: str) -> str:
    """Lower-case ASCII (IDNA) form of *name* without its trailing dot; ValueError if invalid.

    Labels that are already ASCII (including ``xn--`` ones) are kept as they are, others are
    IDNA-encoded; every resulting label must be a letter-digit-hyphen host label.
    """
    if not isinstance(name, str):
        raise ValueError("domain name must be a string")
    return _normalized_domain(name)


@functools.lru_cache(maxsize=4096)  # few domains, many addresses (a directory of a million)
def _normalized_domain(name: str) -> str:
    text = name.strip().translate(_IDNA_DOTS)
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("empty domain name")
    labels: list[str] = []
    for label in text.lower().split("."):
        if not label:
            raise ValueError(f"empty label in domain name {_show(name)}")
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise ValueError(f"label {_show(label)} is not valid IDNA ({exc})") from None
        if len(label) > 63:
            raise ValueError(f"label {_show(label)} is longer than 63 characters")
        if not _LABEL.fullmatch(label):
            raise ValueError(f"invalid label {_show(label)} (letters, digits and inner "
                             "hyphens only)")
        if label.startswith("xn--"):
            _check_a_label(label)
        labels.append(label)
    result = ".".join(labels)
    if len(result) > 253:
        raise ValueError(f"domain name longer than 253 characters ({len(result)})")
    return result


def normalize_address(address: str) -> str:
    """Lower-case ``local@domain`` with an IDNA domain; raises AddressError when invalid."""
    address = address.strip()
    if address.count("@") != 1:
        raise AddressError(f"invalid address {address!r}: need exactly one '@'")
    local, domain = address.rsplit("@", 1)
    if not _LOCAL_PART.match(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        raise AddressError(f"invalid address {address!r}: bad local part")
    try:
        domain = normalize_domain(domain)
    except ValueError as exc:
        raise AddressError(f"invalid address {address!r}: {exc}") from None
    return f"{local.lower()}@{domain}"
