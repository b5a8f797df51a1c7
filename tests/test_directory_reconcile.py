"""``mss directory reconcile``: mailboxes in the extraction and not in the API, and back,
with planted differences. The API side is a stand-in source implementing the
:class:`directory.sources.Source` protocol (a full run, then an incremental one), as the
FHIR source will; the extraction is the real file read by the real source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from directory import reconcile
from directory.extraction import ExtractionSource, to_row
from directory.sources import Rejected, Row
from directory.sync import DirectorySync
from mss import db
from mss.config import DirectoryConfig, load_config
from tests import extraction_data as data
from tests.node import Node, make_node

SIZE = 3000
ONLY_EXTRACTION = (5, 77, 2999)  # mailboxes the API lacks
API_EXTRA = ("nouveau.1@medecin.mssante.fr", "nouveau.2@medecin.mssante.fr")


class ApiStandIn:
    """An incremental source (as the FHIR one): every mailbox but ONLY_EXTRACTION, plus
    API_EXTRA; since a mark, only what *changes* lists."""

    name = "fhir"
    incremental = True

    def __init__(self, changes: list[str] | None = None) -> None:
        self.changes = changes or []

    def open(self) -> str:
        return "https://api.test/fhir/v2"

    def rows(self, since: str | None) -> Iterator[Row | Rejected]:
        if since is not None:
            mails = self.changes
        else:
            mails = [data.mail_of(i) for i in range(SIZE) if i not in ONLY_EXTRACTION]
            mails += API_EXTRA
        for mail in mails:
            row = to_row(data.fields(0, mail=mail), {"mail": 1, "type": 0})
            row["dn"] = f"fhir:PractitionerRole/{mail}#{mail}"
            yield row
        yield Rejected("PractitionerRole/42", "telecom without MSSANTE extension")

    def high_water(self, started: float) -> str | None:
        return "2026-12-03T06:00:00Z"

    def close(self) -> None:
        pass


def test_differences_of_two_row_sets() -> None:
    found = reconcile.differences(["A@x.fr", "b@x.fr", "c@x.fr"], ["a@x.fr", "d@x.fr"],
                                  names=("extraction", "fhir"))
    assert (found.only_left, found.only_right, found.common) == (2, 1, 1)
    assert (found.in_left_only, found.in_right_only) == (["b@x.fr", "c@x.fr"], ["d@x.fr"])
    assert reconcile.differences(["a@x.fr"] * 3, ["a@x.fr"]).only_left == 0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node whose database holds an extraction load, then a full and an incremental run
    of the API stand-in: its directory in force is the extraction, updated by the API."""
    base = tmp_path_factory.mktemp("reconcile")
    node = make_node(base)
    zipped = data.write_zip(base / "extraction.zip", data.lines(SIZE))
    engine = db.make_engine(load_config(node.config).database_url)
    config = DirectoryConfig(source="extraction")
    DirectorySync(engine, config, source=ApiStandIn()).full()
    DirectorySync(engine, config, source=ExtractionSource(zipped)).full()
    # the API's updates on the extraction's load: a new mailbox, and one the extraction
    # holds (the API's newer entry takes its place: no "held by two entries" refusal)
    api = DirectorySync(engine, config, source=ApiStandIn(["nouveau.3@medecin.mssante.fr",
                                                           data.mail_of(10)]))
    report = api.incremental()
    assert (report.kind, report.added, report.changed, report.rejected) == (
        "incremental", 1, 1, 1)
    with engine.connect() as conn:
        assert conn.execute(select(db.directory_entries.c.dn).where(
            db.directory_entries.c.mail == data.mail_of(10))).scalar() == \
            f"fhir:PractitionerRole/{data.mail_of(10)}#{data.mail_of(10)}"
    engine.dispose()
    yield node


def test_reconcile_lists_what_one_source_has_and_not_the_other(node: Node) -> None:
    out = node.cli("directory", "reconcile").stdout.splitlines()
    assert out[0] == (f"in both extraction and fhir: {SIZE - 3}; only in extraction: 3; "
                      "only in fhir: 3")
    assert out[1:] == ["only in extraction:", *(f"  {data.mail_of(i)}" for i in sorted(
        ONLY_EXTRACTION, key=data.mail_of)), "only in fhir:",
        *(f"  {m}" for m in (*API_EXTRA, "nouveau.3@medecin.mssante.fr"))]
    found = node.cli_json("directory", "reconcile", "fhir", "extraction", "--limit", "1")
    assert (found["left"], found["only_left"], found["in_left_only"]) == (
        "fhir", 3, [API_EXTRA[0]])
    assert found["only_right"] == 3 and len(found["in_right_only"]) == 1
    # the directory in force answers the same whatever source wrote the entry
    assert node.cli_json("directory", "show", "nouveau.3@medecin.mssante.fr")["sources"] == [
        "fhir"]
    assert node.cli_json("directory", "show", data.mail_of(1))["sources"] == [
        "extraction", "fhir"]
    missing = node.cli("directory", "reconcile", "ldap", "fhir", check=False)
    assert missing.returncode == 2
    assert "no mailbox list stored for source 'ldap' (stored: extraction, fhir)" in \
        missing.stderr


def test_reconcile_needs_a_second_source(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    out = node.cli("directory", "reconcile", check=False)
    assert out.returncode == 2
    assert "name the source to compare extraction with (stored: none)" in out.stderr
