"""Citizen messaging (Mon espace santé): the addresses of patients, ``<INS>@<domain>``.

A patient's address has the patient's INS as its local part (Référentiel #2, MSSanté
"messagerie citoyenne"): the 13 characters of the NIR (or of a NIA, the waiting number of
someone without a NIR, same layout), then its 2-digit control key. Pure checks, no I/O.

Layout of the 13 characters (INSEE): sex (1, 2; 3, 4 provisional; 7, 8 a NIA), year of
birth (2 digits), month (2 digits), department (2 digits, or ``2A`` / ``2B`` for Corsica),
commune (3 digits), order (3 digits). Key = 97 - (the 13 characters as a number, mod 97),
Corsica's ``2A`` read as ``19`` and ``2B`` as ``18`` (INSEE's rule for the key).
"""

from __future__ import annotations

FIRST = "123478"  # sex digit of a NIR (1, 2; 3, 4 provisional) or of a NIA (7, 8)
INS_LENGTH = 15  # 13 characters and the 2-digit key


def ins_key(nir13: str) -> int:
    """The control key of 13 NIR characters (upper case, Corsica's 2A/2B allowed)."""
    number = nir13.replace("2A", "19", 1) if nir13[5:7] == "2A" else nir13
    number = number.replace("2B", "18", 1) if nir13[5:7] == "2B" else number
    return 97 - int(number) % 97


def ins_problem(local: str) -> str | None:
    """Why *local* (an address's local part) is not a well-formed INS, or None."""
    value = local.upper()
    if len(value) != INS_LENGTH:
        return f"{len(value)} characters, an INS has {INS_LENGTH} (13 and a 2-digit key)"
    nir, key = value[:13], value[13:]
    if nir[0] not in FIRST:
        return f"first character {nir[0]!r} is not a sex digit (1-4) nor a NIA's (7, 8)"
    department = nir[5:7]
    digits = nir[:5] + nir[7:]
    if not (digits.isascii() and digits.isdigit()) or not (
            department in ("2A", "2B") or (department.isascii() and department.isdigit())):
        return "not digits (only the department may be 2A or 2B)"
    if not (key.isascii() and key.isdigit()):
        return "the key is not 2 digits"
    expected = ins_key(nir)
    if int(key) != expected:
        return f"control key {key} does not match (97 - NIR mod 97)"
    return None
