"""Whitelist documents in the national format, for tests and benchmarks."""

from __future__ import annotations

from xml.sax.saxutils import escape

NAMESPACE = "https://listeblanche.mssante.fr/schema"


def make_whitelist_xml(domains: list[tuple[str, str]],
                       generated: str = "2025-03-13T14:54:10Z",
                       truncated: bool = False, namespace: str | None = NAMESPACE) -> bytes:
    """One ``Domaine`` per (domain, operator certificate DN) pair; *truncated* leaves out the
    closing tags (like the 2025-03-14 publication), *namespace* None writes no xmlns."""
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante{xmlns}>',
             f"\n    <DateDeGeneration>{generated}</DateDeGeneration>\n    <ListeDomaines>"]
    for name, dn in domains:
        parts.append(
            f"\n        <Domaine>\n            <Nom>{escape(name)}</Nom>\n"
            f"            <Description>Test {escape(name)}</Description>\n"
            f"            <DNCertificatOperateur>{escape(dn)}</DNCertificatOperateur>\n"
            "            <ResponsableContact>01 02 03 04 05, resp@example.fr</ResponsableContact>\n"
            "            <SupportContact>01 02 03 04 06, support@example.fr</SupportContact>\n"
            f"            <DateMAJ>{generated}</DateMAJ>\n        </Domaine>")
    if not truncated:
        parts.append("\n    </ListeDomaines>\n</ListeBlancheMSSante>\n")
    return "".join(parts).encode("utf-8")
