"""Extraction files in the agency's published format ("Extraction des BAL MSSanté"), for
tests and bench/directory_sync.py: a ZIP of one ``Extraction_Correspondance_MSSante_<stamp>
.txt``, UTF-8, ``|``-delimited, the published header, lines ending with ``|``."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from directory.extraction import HEADER

STAMP = "202612030600"
PROFESSIONS = ("Médecin", "Pharmacien", "Infirmier", "Masseur-Kinésithérapeute",
               "Chirurgien-Dentiste", "Sage-Femme")
SKILLS = ("Médecine Générale", "Cardiologie et maladies vasculaires", "Pédiatrie", "")
CITIES = (("75012", "PARIS"), ("69003", "LYON"), ("13005", "MARSEILLE"),
          ("33000", "BORDEAUX"), ("59000", "LILLE"))


def mail_of(i: int) -> str:
    return f"praticien.{i}@medecin.mssante.fr" if i % 5 else f"secretariat.{i}@ch-test.mssante.fr"


def fields(i: int, mail: str | None = None) -> list[str]:
    """The 31 columns of mailbox *i* (PER, or ORG one time in five)."""
    per = i % 5 != 0
    postal, city = CITIES[i % len(CITIES)]
    rpps = f"{10000000000 + i}"
    return ["PER" if per else "ORG", mail if mail is not None else mail_of(i),
            "8" if per else "", rpps if per else "", f"8{rpps}" if per else "",
            "1", f"1{750000000 + i % 9000}", "" if per else "Secrétariat de cardiologie",
            "DR" if per else "", f"NOM{i}" if per else "", f"Prénom{i}" if per else "",
            "C" if per else "", "Civil" if per else "", "10" if per else "",
            PROFESSIONS[i % len(PROFESSIONS)] if per else "", "SM54" if per else "",
            SKILLS[i % len(SKILLS)] if per else "", "O",
            f"CABINET {i % 9000}" if per else "CENTRE HOSPITALIER TEST", "", "", "",
            str(i % 200 + 1), "", "R", "DE LA SANTE", "", f"{postal} {city}", postal,
            postal[:2], "FRANCE"]


def line(values: Iterable[str]) -> bytes:
    return ("|".join(values) + "|\n").encode("utf-8")


def lines(count: int, extra: Iterable[bytes] = ()) -> Iterator[bytes]:
    yield line(HEADER)
    for i in range(count):
        yield line(fields(i))
    yield from extra


def write_zip(path: Path, body: Iterable[bytes], stamp: str = STAMP) -> Path:
    """*body* (lines, header included) as the published ZIP at *path*, streamed."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open(f"Extraction_Correspondance_MSSante_{stamp}.txt", "w",
                         force_zip64=True) as member:
        chunk: list[bytes] = []
        for item in body:
            chunk.append(item)
            if len(chunk) >= 5000:
                member.write(b"".join(chunk))
                chunk = []
        member.write(b"".join(chunk))
    return path
