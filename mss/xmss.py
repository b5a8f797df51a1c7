"""The MSSanté message headers, checked against the message's XDM packages.

Référentiel socle MSSanté #2 (Clients de messageries sécurisées de santé, v1.0, §3.8,
requirements ECO.2.4.x) asks the sending software for these header fields, which every
node carries unchanged (docs/mssante-messages.md gives each rule with its source):

- ``X-MSS-CODECDA`` (ECO.2.4.1): present when the message carries CDA documents in an
  IHE_XDM archive, equal to the ``code`` of each CDA header (comma-separated when there
  are several), absent otherwise;
- ``X-MSS-INS`` (ECO.2.4.2): present with such a CDA document, a flag: ``O`` when the XDM
  carries a qualified INS (a patient id whose assigning authority is an INS OID, see
  :data:`mss.xdm.INS_OIDS`), ``N`` when it does not. It is *not* the INS;
- ``X-MSS-NIL``: the sending product's reference (required on submission when
  ``[messages] require_nil``);
- ``X-MSS-MES``: ``FIN`` when no reply is expected (mail to patients).

:func:`examine` reads the packages (:mod:`mss.xdm`) and these fields once and returns the
problem codes; the listener's ``xdm`` policy decides what they mean (accept and audit, or
refuse ``554 5.6.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mss.mime import MimeMessage, decode_header_value
from mss.xdm import PROBLEMS, Package, cx_parts, ins_of, read_packages

INS_FLAG = "x-mss-ins"
CODECDA = "x-mss-codecda"
NIL = "x-mss-nil"
MES = "x-mss-mes"
FIELDS = (INS_FLAG, CODECDA, NIL, MES)
MAX_FIELD = 256  # characters kept of a field's value (the NIL goes to the audit)

HEADER_PROBLEMS = MappingProxyType({
    "ins_flag_invalid": "X-MSS-INS must be O or N",
    "ins_flag_missing": "X-MSS-INS is required with a CDA document in IHE_XDM",
    "ins_flag_mismatch": "X-MSS-INS does not match the XDM patient identifier",
    "codecda_missing": "X-MSS-CODECDA is required with a CDA document in IHE_XDM",
    "codecda_unexpected": "X-MSS-CODECDA without a CDA document in IHE_XDM",
    "codecda_mismatch": "X-MSS-CODECDA differs from the CDA document codes",
    "mes_invalid": "X-MSS-MES must be FIN",
})
ALL_PROBLEMS = MappingProxyType({**PROBLEMS, **HEADER_PROBLEMS})


def mss_fields(message: bytes) -> dict[str, str]:
    """The X-MSS fields of the top header block (first of each, unfolded, decoded),
    by lower-case name."""
    found: dict[str, str] = {}
    for f in MimeMessage(message).fields():
        name = f.name.decode("ascii", "replace")
        if name in FIELDS and name not in found:
            found[name] = decode_header_value(f.value).strip()[:MAX_FIELD]
    return found


def header_problems(fields: dict[str, str], packages: list[Package]) -> list[str]:
    """The ECO.2.4 rules, given the X-MSS fields and the packages read."""
    problems: list[str] = []
    cda = [code for p in packages for code in p.cda_codes]
    qualified = any(p.ins for p in packages)
    # a package that could not be read (no document entry came out of it, its own problem
    # says why) cannot be compared with: only the fields' syntax is checked then
    compare = not any(p.problems and not p.documents for p in packages)
    flag = fields.get(INS_FLAG)
    if flag is not None and flag not in ("O", "N"):
        problems.append("ins_flag_invalid")
    elif not compare:
        pass
    elif flag is None:
        if cda:
            problems.append("ins_flag_missing")
    elif (flag == "O") != qualified:
        problems.append("ins_flag_mismatch")
    codes = fields.get(CODECDA)
    if not compare:
        pass
    elif codes is None:
        if cda:
            problems.append("codecda_missing")
    elif not cda:
        problems.append("codecda_unexpected")
    elif {c.strip() for c in codes.split(",") if c.strip()} != set(cda):
        problems.append("codecda_mismatch")
    mes = fields.get(MES)
    if mes is not None and mes.upper() != "FIN":
        problems.append("mes_invalid")
    return problems


@dataclass(frozen=True)
class Examination:
    """What was read of a message: its packages, its X-MSS fields, every problem."""

    packages: tuple[Package, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def patient(self) -> str | None:
        """The first INS of the packages (the patient the message is about), or None."""
        return next((i for p in self.packages for i in p.ins), None)

    @property
    def patient_oid(self) -> str | None:
        for package in self.packages:
            for cx in package.patient_ids:
                if ins_of(cx):
                    return cx_parts(cx)[1]
        return None

    def reason(self) -> str:
        """The public text of the first problem."""
        return ALL_PROBLEMS.get(self.problems[0], "XDM check failed") if self.problems \
            else ""

    def audit_detail(self) -> dict[str, Any]:
        """What the audit keeps: document codes and problem codes, the flags; never an
        identifier, a name or content."""
        detail: dict[str, Any] = {}
        if self.packages:
            detail["xdm"] = {"packages": len(self.packages),
                             "documents": [d.kind for p in self.packages
                                           for d in p.documents][:20]}
        if self.problems:
            detail["xdm_problems"] = list(self.problems)
        shown = {k[len("x-mss-"):]: _shown(k, v) for k, v in self.fields}
        if shown:
            detail["x_mss"] = shown
        return detail


_CODE = re.compile(r"[A-Za-z0-9._-]{1,32}")  # a LOINC or CI-SIS code
_NIL = re.compile(r"[ -~]{1,64}")  # a product reference: printable ASCII


def _shown(name: str, value: str) -> str:
    """What the audit keeps of an X-MSS field: its value when it has the rule's form, else
    "invalid" (a legacy X-MSS-INS holding the INS itself must not reach the trail)."""
    if name == INS_FLAG:
        ok = value in ("O", "N")
    elif name == MES:
        ok = value.upper() == "FIN"
    elif name == CODECDA:
        ok = all(_CODE.fullmatch(c.strip()) for c in value.split(",")) and len(value) <= 128
    else:
        ok = bool(_NIL.fullmatch(value))
    return value if ok else "invalid"


def examine(message: bytes) -> Examination:
    """Read the XDM packages of *message* and its X-MSS fields; the problems of both."""
    packages = read_packages(message)
    fields = mss_fields(message)
    problems = [code for p in packages for code in p.problems]
    problems += header_problems(fields, packages)
    return Examination(tuple(packages), tuple(fields.items()),
                       tuple(dict.fromkeys(problems)))
