"""The national extraction ("Extraction des BAL MSSanté") as a directory source: a
100 000-line file in the published format with malformed, duplicate and badly encoded
lines, loaded by the real CLI (``mss directory import``), then checked on a real SMTP
submission; changes between two files; SHA-256, damaged files and https with TLS verified."""

from __future__ import annotations

import hashlib
import http.server
import ipaddress
import re
import smtplib
import ssl
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from directory.extraction import HEADER, ExtractionSource, column_key, header_positions
from directory.sources import SyncError
from directory.sync import DirectorySync
from mss import db
from mss.config import ConfigError, DirectoryConfig, parse_config
from tests import extraction_data as data
from tests.databases import schema_url
from tests.node import DOMAIN, PASSWORD, make_node

LINES = 100_000
HOST = "127.0.56.1"  # this module's loopback address (tests/README: one range per branch)
MARTIN = "dr.martin@operator-a.mssante.fr"


def bad_lines() -> list[bytes]:
    """Lines 100 002-100 007 of the fixture, in this order."""
    return [
        data.line(data.fields(900_001, mail=MARTIN)),  # a good one, used over SMTP
        b"PER|tronque@operator-a.mssante.fr|8|123\n",  # malformed: 4 fields
        data.line(data.fields(900_002, mail="")),  # no address
        data.line(data.fields(900_003, mail="pas-une-adresse")),
        data.line(data.fields(900_004, mail=data.mail_of(7))),  # duplicate of line 9
        "|".join(data.fields(900_006)).replace("Prénom", "Pr\udce9nom").encode(
            "utf-8", "surrogateescape") + b"|\n",  # Latin-1 é: not UTF-8
    ]


LATIN1_AT = bad_lines()[5].index(b"\xe9") + 1
REJECTS = ["line 100003: 4 fields, the header has 31", "line 100004: no Adresse BAL",
           "line 100005: invalid address 'pas-une-adresse': need exactly one '@'",
           f"line 100006: {data.mail_of(7)} already on an earlier line (first kept)",
           f"line 100007: not UTF-8 (byte {LATIN1_AT})"]


@pytest.fixture(scope="module")
def extraction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 100 000-line ZIP, generated once for the module (~0.5 s)."""
    path = tmp_path_factory.mktemp("extraction") / "Extraction_Correspondance_MSSante.zip"
    return data.write_zip(path, data.lines(LINES, bad_lines()))


def engine_for(tmp_path: Path) -> Engine:
    return db.make_engine(schema_url("sqlite", tmp_path, "dir"))


def entries(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(db.directory_entries))
                   .scalar() or 0)


def load(engine: Engine, location: Path | str, **options: object) -> object:
    source = ExtractionSource(location, **options)  # type: ignore[arg-type]
    return DirectorySync(engine, DirectoryConfig(source="extraction"), source=source).full()


# --------------------------------------------------------------------------- unit

def test_header_columns_found_by_name_whatever_the_spelling() -> None:
    assert column_key("Prénom d'exercice") == "prenomdexercice"
    at = header_positions(list(HEADER))
    assert (at["mail"], at["type"], at["given_name"], at["l6"]) == (1, 0, 10, 27)
    # the spellings of the agency's older files, reordered: still read
    older = ["Adresse BAL", "L6LIGNEACHEMINEMENT", "Code postal", "Type de BAL"]
    assert header_positions(older) == {"mail": 0, "l6": 1, "postal_code": 2, "type": 3}
    with pytest.raises(SyncError, match='no "Adresse BAL" column'):
        header_positions(["mail", "type"])


def test_plain_text_copy_with_bom_and_crlf(tmp_path: Path) -> None:
    """data.gouv.fr's mirror serves the text itself: a BOM, CRLF line ends and lines
    without the trailing '|' read the same; no generation stamp in the name."""
    header = "\ufeff" + "|".join(HEADER) + "\r\n"
    body = "\r\n".join("|".join(data.fields(i)) for i in range(3)) + "\r\n\r\n"
    path = tmp_path / "extraction-correspondance-mssante.txt"
    path.write_text(header + body, encoding="utf-8", newline="")
    source = ExtractionSource(path)
    assert source.open().startswith(f"{path} sha256:")
    rows = list(source.rows(None))
    assert [r["mail"] for r in rows] == [data.mail_of(i) for i in range(3)]  # type: ignore[index]
    assert rows[1]["city"] == "LYON" and source.high_water(0) is None  # type: ignore[index]


def test_config_source_keys(tmp_path: Path) -> None:
    """urls/base_dn only for source = "ldap"; the extraction needs its section, with url or
    file; "fhir" is a known value refused until its source is merged."""
    cfg = tmp_path / "mss.toml"
    ok = parse_config({"directory": {"source": "extraction",
                                     "extraction": {"file": "x.zip"}}}, cfg).directory
    assert ok is not None and ok.extraction is not None
    assert ok.extraction.file == tmp_path / "x.zip" and ok.sync_interval() == 86400.0
    for table, message in (
            ({"source": "extraction"}, "directory.extraction: source = \"extraction\" needs"),
            ({"source": "extraction", "extraction": {"interval": 60}},
             "directory.extraction.url: give url (https) or file"),
            ({"source": "extraction", "extraction": {"url": "http://a.test/x"}},
             "directory.extraction.url: must be a URL starting with https://"),
            ({"source": "fhir"}, "directory.fhir: source = \"fhir\" needs a [directory.fhir]"),
            ({"source": "x500"}, "directory.source: must be"),
            ({"base_dn": "o=x"}, "directory.urls: required with source = \"ldap\""),
            ({"url": "ldaps://a.test"}, "directory.base_dn: required")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({"directory": table}, cfg)


# --------------------------------------------------------------------------- loads

def test_full_load_reports_bad_lines_then_counts_changes(extraction: Path,
                                                         tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    first = load(engine, extraction)
    assert (first.entries, first.rejected, first.rejects) == (LINES + 1, 5, REJECTS)  # type: ignore[attr-defined]
    assert first.high_water == data.STAMP  # type: ignore[attr-defined]
    with engine.connect() as conn:
        e = db.directory_entries
        per = conn.execute(select(e).where(e.c.mail == data.mail_of(1))).one()
        org = conn.execute(select(e).where(e.c.mail == data.mail_of(5))).one()
        seen = conn.execute(select(func.count()).select_from(db.directory_seen)).scalar()
        audit = conn.execute(select(db.audit_log.c.detail).where(
            db.audit_log.c.event == "directory.sync")).scalar_one()
    assert (per.dn, per.type, per.id_nat, per.display_name, per.profession, per.city) == (
        f"extraction:{data.mail_of(1)}", "PER", "810000000001", "Prénom1 NOM1",
        "Pharmacien (Cardiologie et maladies vasculaires)", "LYON")
    assert (org.type, org.display_name, org.service) == (
        "ORG", "CENTRE HOSPITALIER TEST", "Secrétariat de cardiologie")
    assert seen == LINES + 1
    assert '"source":"extraction"' in audit and f'"entries":{LINES + 1}' in audit



def test_the_next_file_counts_changes(tmp_path: Path) -> None:
    """The next day's file: 3 mailboxes gone, 2 changed, 1 new; only those rewritten."""
    engine = engine_for(tmp_path)
    size = 2000
    load(engine, data.write_zip(tmp_path / "day1.zip", data.lines(size)))
    with engine.connect() as conn:
        before = dict(conn.execute(select(db.directory_entries.c.mail,
                                          db.directory_entries.c.updated_at)).all())

    def changed() -> Iterator[bytes]:
        for i, raw in enumerate(data.lines(size)):
            if i not in (10, 11, 12):  # lines 10-12 are mailboxes 9-11
                yield raw.replace(b"|NOM21|", b"|NOM-EPOUSE21|").replace(b"|NOM31|", b"|X31|")
        yield data.line(data.fields(size + 5))
    second = load(engine, data.write_zip(tmp_path / "day2.zip", changed(), "202612040600"))
    assert (second.entries, second.added, second.changed, second.removed) == (  # type: ignore[attr-defined]
        size - 2, 1, 2, 3)
    with engine.connect() as conn:
        after = dict(conn.execute(select(db.directory_entries.c.mail,
                                         db.directory_entries.c.updated_at)).all())
        seen = set(conn.execute(select(db.directory_seen.c.mail)).scalars())
    assert seen == set(after) and data.mail_of(9) not in seen and data.mail_of(size + 5) in seen
    touched = {m for m in after if after[m] != before.get(m)}
    assert touched == {data.mail_of(21), data.mail_of(31), data.mail_of(size + 5)}


def test_bad_files_keep_the_last_good_directory(extraction: Path, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    small = data.write_zip(tmp_path / "small.zip", data.lines(50))
    good = hashlib.sha256(small.read_bytes()).hexdigest()
    assert load(engine, small, sha256=good.upper()).entries == 50  # type: ignore[attr-defined]
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(extraction.read_bytes()[:200_000])
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("Extraction_Correspondance_MSSante_202601010000.txt",
                         "nom|prenom\nA|B\n")
    for location, options, message in (
            (extraction, {"sha256": "0" * 64}, "is not the expected 0000"),
            (damaged, {}, "not a readable ZIP"),
            (foreign, {}, 'line 1: no "Adresse BAL" column'),
            (tmp_path / "absent.zip", {}, "No such file"),
            (extraction, {"max_bytes": 1_000_000}, "more than max_bytes")):
        with pytest.raises(SyncError, match=message):
            load(engine, location, **options)
        assert entries(engine) == 50
    with engine.connect() as conn:
        runs = conn.execute(select(db.directory_runs.c.status, db.directory_runs.c.source)
                            ).all()
    assert runs == [("ok", "extraction")] + [("failed", "extraction")] * 5
    with pytest.raises(SyncError, match="expected 64 hexadecimal digits"):
        ExtractionSource(small, sha256="abc")


class _Https:
    """A loopback HTTPS server handing out one file (and a redirect to plain http)."""

    def __init__(self, pki: Path, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/downgrade":
                    self.send_response(302)
                    self.send_header("Location", f"http://{HOST}:1/x.zip")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki / "server.crt", pki / "server.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_download_verifies_the_server(tmp_path: Path) -> None:
    from trustspace.pki import generate_dev_pki

    ours, rogue = tmp_path / "ours", tmp_path / "rogue"
    generate_dev_pki(ours, "dirext.test", ["localhost"], [ipaddress.ip_address(HOST)])
    generate_dev_pki(rogue, "rogue.test", ["localhost"], [ipaddress.ip_address(HOST)])
    small = data.write_zip(tmp_path / "small.zip", data.lines(20))
    server = _Https(rogue, small.read_bytes())
    engine = engine_for(tmp_path)
    try:
        with pytest.raises(SyncError, match="CERTIFICATE_VERIFY_FAILED"):
            load(engine, f"{server.url}/x.zip", ca_file=ours / "ca.crt")
        assert entries(engine) == 0
    finally:
        server.close()
    server = _Https(ours, small.read_bytes())
    try:
        report = load(engine, f"{server.url}/x.zip", ca_file=ours / "ca.crt",
                      tmp_dir=tmp_path)
        assert report.entries == 20  # type: ignore[attr-defined]
        assert report.server.startswith(f"{server.url}/x.zip sha256:")  # type: ignore[attr-defined]
        with pytest.raises(SyncError, match="refused redirect from https"):
            load(engine, f"{server.url}/downgrade", ca_file=ours / "ca.crt")
        with pytest.raises(SyncError, match="only https URLs"):
            load(engine, f"http://{HOST}:1/x.zip")
    finally:
        server.close()
    assert not list(Path(tmp_path).glob("mss-extraction-*"))


# --------------------------------------------------------------------------- a node

def test_import_through_the_cli_then_recipient_check(extraction: Path, tmp_path: Path) -> None:
    node = make_node(tmp_path / "mss")
    small = tmp_path / "configured.zip"
    node.config.write_text(node.config.read_text() + f"""
[directory]
source = "extraction"

[directory.extraction]
file = "{small}"
interval = 0
""")
    # the configured source first (a full load each time): the first 20 mailboxes
    data.write_zip(small, data.lines(20))
    assert "20 entries, 20 added" in node.cli("directory", "sync").stdout
    sha = hashlib.sha256(extraction.read_bytes()).hexdigest()
    bad = node.cli("directory", "import", str(extraction), "--sha256", "f" * 64, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "directory import failed, last good directory kept" in bad.stderr
    out = node.cli("directory", "import", str(extraction), "--sha256", sha)
    assert f"full sync from {extraction} sha256:{sha} (extraction): {LINES + 1} entries, " \
        f"{LINES + 1 - 20} added, 0 changed, 0 removed, 5 rejected" in out.stdout
    assert [line.removeprefix("rejected: ") for line in out.stderr.splitlines()
            if line.startswith("rejected: ")] == REJECTS
    status = node.cli_json("directory", "status")
    assert status["entries"] == LINES + 1
    assert [(r["source"], r["status"]) for r in status["runs"][:3]] == [
        ("extraction", "ok"), ("extraction", "failed"), ("extraction", "ok")]
    assert [r["mail"] for r in node.cli_json("directory", "search", "martin")] == [MARTIN]
    show = node.cli_json("directory", "show", data.mail_of(3))
    assert (show["display_name"], show["sources"]) == ("Prénom3 NOM3", ["extraction"])
    node.start()
    try:
        client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
        client.starttls(context=node.client_context())
        client.login(f"alice@{DOMAIN}", PASSWORD)
        assert client.mail(f"alice@{DOMAIN}")[0] == 250
        assert client.rcpt(MARTIN)[0] == 250
        code, reply = client.rcpt("tronque@operator-a.mssante.fr")  # its line was malformed
        assert (code, reply[:5]) == (550, b"5.1.1")
        client.quit()
    finally:
        node.stop()
