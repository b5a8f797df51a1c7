"""Who a message is about, as a keyed pseudonym: never the raw identifier in the trail.

The French national health identifier (INS) travels in the IHE XDM attachment of a message
(ITI-32: a ZIP whose ``METADATA.XML`` is an ebRIM ``SubmitObjectsRequest``), read by
:mod:`mss.xdm` (the node's one XDM reader, bounded in memory and time): the patient id of
the document entries or the submission set, an HL7 CX ``id^^^&oid&ISO`` whose assigning
authority is an INS OID (``1.2.250.1.213.1.4.8`` INS-NIR, ``.9`` INS-NIA, ``.10``/``.11`` the
test ranges); a local patient number is not the INS. The ``X-MSS-INS`` header is a flag
(``O``/``N``, Référentiel #2 ECO.2.4.2: "does the XDM carry a qualified INS"), checked by
:mod:`mss.xmss`, never an identifier.

The audit record keeps ``HMAC-SHA256(key, INS)`` under a node key (``keys/pseudonym.key``,
0600): the same patient gets the same pseudonym, so an investigator can follow one
patient's messages, and nobody without the key can go back to the identifier. Beside it,
when ``audit.ttp_public_key_file`` is set, the identifier sealed to a trusted third party
(:mod:`audit.ttp`): only that party can reveal it, the node cannot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from mss.xdm import INS_OIDS, MAX_METADATA_BYTES, TIME_BUDGET, ins_of, read_packages

__all__ = ["INS_OIDS", "MAX_METADATA_BYTES", "TIME_BUDGET", "ins_of", "patient_pseudonym",
           "pseudonym", "pseudonym_key", "xdm_patient_ids"]


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
    """The INS found in the METADATA.XML of IHE XDM ZIP attachments (first seen first)."""
    found: list[str] = []
    for package in read_packages(message):
        found += [i for i in package.ins if i not in found]
    return found


def patient_pseudonym(key: bytes, message: bytes) -> str | None:
    """The pseudonym of the patient a message is about (its XDM's INS), or None."""
    ids = xdm_patient_ids(message)
    return pseudonym(key, ids[0]) if ids else None
