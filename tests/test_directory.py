"""Directory sync against a real OpenLDAP slapd: paging, validation, changes, failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from sqlalchemy import func, select

from directory.sync import DirectorySync, SyncError
from mss import db
from mss.config import DirectoryConfig
from tests import peers, slapd
from tests.node import free_port


@pytest.fixture(scope="module", autouse=True)
def _slapd_installed() -> None:
    slapd.require()  # skipped locally, failed under CI (tests/peers.py)


ENTRIES = 100_000
PEOPLE = f"ou=people,{slapd.SUFFIX}"


def bad_entries() -> Iterator[str]:
    yield slapd.person_ldif(900001, mail="")  # no mail
    yield slapd.person_ldif(900002, mail="not-an-address")
    yield slapd.person_ldif(900003, mail="twice@annuaire.mssante.fr")
    yield slapd.person_ldif(900004, mail="twice@annuaire.mssante.fr")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slapd.Slapd]:
    directory = tmp_path_factory.mktemp("slapd")
    instance = slapd.Slapd(directory, free_port(), sizelimit=500)  # paging is mandatory
    instance.configure()
    instance.load(e for gen in (
        (slapd.person_ldif(i) for i in range(ENTRIES)), bad_entries()) for e in gen)
    instance.start()
    yield instance
    instance.stop()


def config_for(server: slapd.Slapd, tmp_path: Path, **extra: object) -> DirectoryConfig:
    password = tmp_path / "ldap.password"
    password.write_text(slapd.PASSWORD + "\n")
    return DirectoryConfig(urls=(server.url,), base_dn=PEOPLE, bind_dn=slapd.READER_DN,
                           password_file=password, page_size=500, **extra)  # type: ignore[arg-type]


def engine_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = db.make_engine(f"sqlite:///{tmp_path}/dir.db")
    db.create_schema(engine)
    return engine


def count(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(db.directory_entries))
                   .scalar() or 0)


def admin(server: slapd.Slapd) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(server.url), slapd.ROOT_DN, slapd.PASSWORD,
                            auto_bind=True, raise_exceptions=True)


def test_full_sync_pages_past_the_size_limit_and_reports_bad_entries(
        server: slapd.Slapd, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    report = DirectorySync(engine, config_for(server, tmp_path)).full()
    assert report.status == "ok"
    assert report.entries == ENTRIES and count(engine) == ENTRIES
    assert report.added == ENTRIES and report.removed == 0
    assert report.rejected == 4
    text = "\n".join(report.rejects)
    assert "no mail" in text and "not-an-address" in text and "held by 2 entries" in text
    with engine.connect() as conn:
        row = conn.execute(select(db.directory_entries).where(
            db.directory_entries.c.mail == "pro42@annuaire.mssante.fr")).one()
        assert (row.type, row.id_nat, row.city) == ("PER", "810000000042", "Ville42")
        audit = conn.execute(select(db.audit_log).where(
            db.audit_log.c.event == "directory.sync")).one()
    detail = json.loads(audit.detail)
    assert (detail["added"], detail["rejected"], detail["kind"]) == (ENTRIES, 4, "full")
    # reject_invalid turns bad entries into a failed run, the directory untouched
    strict = DirectorySync(engine, config_for(server, tmp_path, reject_invalid=True))
    with pytest.raises(SyncError, match="4 invalid entries"):
        strict.full()
    assert count(engine) == ENTRIES


def test_changes_incremental_then_full(server: slapd.Slapd, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    sync = DirectorySync(engine, config_for(server, tmp_path))
    sync.full()
    time.sleep(1.1)  # modifyTimestamp has a one-second resolution
    ldap = admin(server)
    for i in range(10):
        ldap.modify(f"uid=p{i},{PEOPLE}", {"l": [(ldap3.MODIFY_REPLACE, ["Lyon"])]})
    for i in range(10, 15):
        ldap.delete(f"uid=p{i},{PEOPLE}")
    for i in range(3):
        ldap.add(f"uid=n{i},{PEOPLE}", ["inetOrgPerson", "mssMailbox"],
                 {"uid": f"n{i}", "cn": f"New {i}", "sn": "New", "mssMailboxType": "PER",
                  "mail": f"new{i}@annuaire.mssante.fr"})
    ldap.unbind()
    incremental = sync.incremental()
    assert (incremental.kind, incremental.changed, incremental.added) == ("incremental", 10, 3)
    assert count(engine) == ENTRIES + 3  # deletions wait for a full sync
    full = sync.full()
    assert (full.added, full.changed, full.removed) == (0, 0, 5)
    assert count(engine) == ENTRIES - 2
    with engine.connect() as conn:
        city = conn.execute(select(db.directory_entries.c.city).where(
            db.directory_entries.c.mail == "pro3@annuaire.mssante.fr")).scalar()
    assert city == "Lyon"


def test_server_stopped_mid_sync_keeps_last_good(tmp_path: Path) -> None:
    instance = slapd.Slapd(tmp_path / "ldap", free_port())
    instance.configure()
    instance.load(slapd.person_ldif(i) for i in range(30_000))
    instance.start()
    engine = engine_for(tmp_path)
    sync = DirectorySync(engine, config_for(instance, tmp_path, timeout=5.0))
    try:
        sync.full()
        assert count(engine) == 30_000
        stopped = threading.Event()

        def stop_midway(entries: int) -> None:
            if entries >= 10_000 and not stopped.is_set():
                stopped.set()
                instance.stop()

        with pytest.raises(SyncError):
            sync.full(stop_midway)
        assert stopped.is_set()
        assert count(engine) == 30_000  # last good directory in force
        with engine.connect() as conn:
            runs = conn.execute(select(db.directory_runs.c.status).order_by(
                db.directory_runs.c.id)).scalars().all()
            staging = conn.execute(select(func.count()).select_from(db.directory_staging)
                                   ).scalar()
        assert runs == ["ok", "failed"] and staging == 0
        # nothing reachable at all: failed at once, still the last good directory
        with pytest.raises(SyncError, match="no directory server reachable"):
            sync.full()
        assert count(engine) == 30_000
    finally:
        instance.stop()


def test_server_truncating_paged_results_fails_the_run(tmp_path: Path) -> None:
    instance = slapd.Slapd(tmp_path / "ldap", free_port(), sizelimit=500, paged_total=500)
    instance.configure()
    instance.load(slapd.person_ldif(i) for i in range(1200))
    instance.start()
    engine = engine_for(tmp_path)
    try:
        with pytest.raises(SyncError, match="ended the search early"):
            DirectorySync(engine, config_for(instance, tmp_path)).full()
        assert count(engine) == 0
    finally:
        instance.stop()


def test_submission_checks_remote_recipients_against_the_directory(tmp_path: Path) -> None:
    import smtplib

    from tests.node import DOMAIN, PASSWORD, make_node

    instance = slapd.Slapd(tmp_path / "ldap", free_port())
    instance.configure()
    instance.load([slapd.person_ldif(1, mail="dr.martin@operator-a.mssante.fr"),
                   slapd.person_ldif(2, mail="Dr.Durand@operator-b.mssante.fr")])
    instance.start()
    node = make_node(tmp_path / "mss")
    password = node.data_dir / "keys" / "ldap.password"
    password.write_text(slapd.PASSWORD)
    password.chmod(0o600)
    node.config.write_text(node.config.read_text() + f"""
[directory]
urls = ["{instance.url}"]
base_dn = "{PEOPLE}"
bind_dn = "{slapd.READER_DN}"
password_file = "keys/ldap.password"
interval = 0
unpublished_domains = ["operator-b.mssante.fr"]
""")
    try:
        out = node.cli("directory", "sync", "--full")
        assert "full sync from" in out.stdout and "2 entries" in out.stdout
        assert "entries in force: 2" in node.cli("directory", "status").stdout
        assert "dr.martin@operator-a.mssante.fr" in node.cli("directory", "search",
                                                             "martin").stdout
        assert "type: PER" in node.cli("directory", "show",
                                       "dr.martin@operator-a.mssante.fr").stdout
        node.start()
        client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
        client.starttls(context=node.client_context())
        client.login(f"alice@{DOMAIN}", PASSWORD)
        assert client.mail(f"alice@{DOMAIN}")[0] == 250
        assert client.rcpt("dr.martin@operator-a.mssante.fr")[0] == 250
        code, reply = client.rcpt("nobody@operator-a.mssante.fr")
        assert (code, reply[:5]) == (550, b"5.1.1")
        assert client.rcpt("anyone@operator-b.mssante.fr")[0] == 250  # not published
        client.quit()
        rows = node.wait_audit(lambda r: r["event"] == "smtp.recipient.refused"
                               and r["rcpt"] == "nobody@operator-a.mssante.fr")
        assert rows and "directory" in str(rows[-1]["reason"])
    finally:
        if node.process is not None:
            node.stop()
        instance.stop()


def test_publish_round_trip_and_export(tmp_path: Path) -> None:
    import subprocess

    from tests.node import DOMAIN, make_node

    instance = slapd.Slapd(tmp_path / "ldap", free_port())
    instance.configure()
    instance.load([])
    instance.start()
    node = make_node(tmp_path / "mss", with_whitelist=False)
    node.cli("mailbox", "add", f"cachee@{DOMAIN}", "--type", "PER", "--liste-rouge")
    secret = node.data_dir / "keys" / "publish.password"
    secret.write_text(slapd.PASSWORD)
    node.config.write_text(node.config.read_text() + f"""
[directory]
urls = ["{instance.url}"]
base_dn = "{PEOPLE}"
interval = 0

[directory.publish]
url = "{instance.url}"
bind_dn = "{slapd.ROOT_DN}"
password_file = "keys/publish.password"
base_dn = "{PEOPLE}"
""")
    try:
        first = node.cli("directory", "publish").stdout
        assert "3 added, 0 updated, 0 removed" in first  # alice, bob, secretariat
        again = node.cli("directory", "publish").stdout
        assert "0 added, 0 updated, 0 removed, 0 re-created with a new type, 3 unchanged" in again
        ldapsearch = peers.require_peer("ldapsearch", "ldap-utils")
        out = subprocess.run(
            [ldapsearch, "-x", "-LLL", "-H", instance.url, "-D", slapd.ROOT_DN, "-w",
             slapd.PASSWORD, "-b", PEOPLE, "(objectClass=mssMailbox)", "mail",
             "mssMailboxType", "mssIdNat"], capture_output=True, text=True, check=True)
        assert f"mail: alice@{DOMAIN}" in out.stdout and "mssIdNat: 810000000001" in out.stdout
        assert "cachee" not in out.stdout  # liste rouge
        node.cli("mailbox", "disable", f"bob@{DOMAIN}")
        third = node.cli("directory", "publish").stdout
        assert "0 added, 0 updated, 1 removed" in third
        ldif = tmp_path / "export.ldif"
        node.cli("directory", "export", "--ldif", str(ldif))
        text = ldif.read_text()
        assert f"mail: alice@{DOMAIN}" in text and "cachee" not in text and "bob@" not in text
        events = [r for r in node.audit() if r["event"] == "directory.publish"]
        assert len(events) == 3 and all(r["outcome"] == 0 for r in events)
    finally:
        instance.stop()


def test_starttls_with_certificate_verification(tmp_path: Path) -> None:
    from trustspace.pki import generate_dev_pki, issue_certificate

    pki = tmp_path / "pki"
    generate_dev_pki(pki, "ldap.test", ["mx.ldap.test"])
    cert, key = issue_certificate(pki, "ldap", ["localhost"])
    instance = slapd.Slapd(tmp_path / "ldap", free_port(), tls=(pki / "ca.crt", cert, key))
    instance.configure()
    instance.load(slapd.person_ldif(i) for i in range(50))
    instance.start()
    engine = engine_for(tmp_path)
    url = f"ldap://localhost:{instance.port}"
    try:
        good = config_for(instance, tmp_path, tls="starttls", ca_file=pki / "ca.crt")
        good = DirectoryConfig(**{**good.__dict__, "urls": (url,)})
        assert DirectorySync(engine, good).full().entries == 50
        other = tmp_path / "other"
        generate_dev_pki(other, "other.test", ["mx.other.test"])
        bad = DirectoryConfig(**{**good.__dict__, "ca_file": other / "ca.crt"})
        with pytest.raises(SyncError, match="no directory server reachable"):
            DirectorySync(engine, bad).full()  # an untrusted server gets no password
        assert count(engine) == 50
    finally:
        instance.stop()
