"""Directory sync against a real OpenLDAP slapd: paging, validation, changes, failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from sqlalchemy import Engine, func, select

from directory.sources import SyncError
from directory.sync import DirectorySync, ldap_connection
from mss import db
from mss.config import ConfigError, DirectoryConfig, parse_config
from tests import peers, slapd
from tests.databases import schema_url
from tests.node import BACKENDS, free_port

# the sync's staging and swap, and a node's directory commands, on both backends (tests
# taking ``backend``); the LDAP transport tests (TLS, paging errors) on SQLite only
BACKENDS = BACKENDS


@pytest.fixture(scope="module", autouse=True)
def _slapd_installed() -> None:
    slapd.require()  # skipped locally, failed under CI (tests/peers.py)


# 12 pages of the server's 500-entry size limit and two of the sync's 5 000-row staging
# batches (directory/sync.py BATCH): paging, staging and validation at a size a test can
# afford (20 000 entries took 25 s a sync here for nothing more); bench/directory_sync.py
# measures the sync at 1 000 000 entries
ENTRIES = 6_000
PEOPLE = f"ou=people,{slapd.SUFFIX}"


# the module's entries were changed an hour ago (slapadd keeps the modifyTimestamp it is
# given): an incremental run sees only what a test changes, however soon after the load
# the first full sync ran (the sync reads again what changed within SKEW_MARGIN of its start)
LOADED = time.strftime("modifyTimestamp: %Y%m%d%H%M%SZ\n", time.gmtime(time.time() - 3600))


def bad_entries() -> Iterator[str]:
    yield slapd.person_ldif(900001, mail="", extra=LOADED)  # no mail
    yield slapd.person_ldif(900002, mail="not-an-address", extra=LOADED)
    yield slapd.person_ldif(900003, mail="twice@annuaire.mssante.fr", extra=LOADED)
    yield slapd.person_ldif(900004, mail="twice@annuaire.mssante.fr", extra=LOADED)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slapd.Slapd]:
    directory = tmp_path_factory.mktemp("slapd")
    instance = slapd.Slapd(directory, free_port(), sizelimit=500)  # paging is mandatory
    instance.configure()
    instance.load(e for gen in (
        (slapd.person_ldif(i, extra=LOADED) for i in range(ENTRIES)), bad_entries())
        for e in gen)
    instance.start()
    yield instance
    instance.stop()


def config_for(server: slapd.Slapd, tmp_path: Path, **extra: object) -> DirectoryConfig:
    password = tmp_path / "ldap.password"
    password.write_text(slapd.PASSWORD + "\n")
    return DirectoryConfig(urls=(server.url,), base_dn=PEOPLE, bind_dn=slapd.READER_DN,
                           password_file=password, page_size=500, **extra)  # type: ignore[arg-type]


def engine_for(tmp_path: Path, backend: str = "sqlite"):  # type: ignore[no-untyped-def]
    return db.make_engine(schema_url(backend, tmp_path, "dir"))


def count(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(db.directory_entries))
                   .scalar() or 0)


def admin(server: slapd.Slapd) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(server.url), slapd.ROOT_DN, slapd.PASSWORD,
                            auto_bind=True, raise_exceptions=True)


def test_full_sync_pages_past_the_size_limit_and_reports_bad_entries(
        server: slapd.Slapd, tmp_path: Path, backend: str) -> None:
    engine = engine_for(tmp_path, backend)
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
    engine.dispose()


# SQLite only: the LDAP change tracking; its statements are the full sync's, which runs on
# both (two full syncs more would double the module's time)
@pytest.mark.backends("sqlite")
def test_changes_incremental_then_full(server: slapd.Slapd, tmp_path: Path, backend: str
                                       ) -> None:
    engine = engine_for(tmp_path, backend)
    sync = DirectorySync(engine, config_for(server, tmp_path))
    sync.full()
    time.sleep(1.1)  # modifyTimestamp has a one-second resolution
    ldap = admin(server)
    try:
        _change_and_sync(sync, engine, ldap)
    finally:  # the module's server as it was, for the next backend's tests
        _restore(ldap)
        ldap.unbind()
        engine.dispose()


def _restore(ldap: ldap3.Connection) -> None:
    for i in range(10):
        ldap.modify(f"uid=p{i},{PEOPLE}", {"l": [(ldap3.MODIFY_REPLACE, [f"Ville{i % 50}"])]})
    for i in range(10, 15):
        attributes: dict[str, list[str]] = {}
        for line in slapd.person_ldif(i).splitlines()[1:]:
            if line:
                name, value = line.split(": ", 1)
                attributes.setdefault(name, []).append(value)
        ldap.add(f"uid=p{i},{PEOPLE}", attributes=attributes)
    for i in range(3):
        ldap.delete(f"uid=n{i},{PEOPLE}")


def _change_and_sync(sync: DirectorySync, engine: Engine, ldap: ldap3.Connection) -> None:
    for i in range(10):
        ldap.modify(f"uid=p{i},{PEOPLE}", {"l": [(ldap3.MODIFY_REPLACE, ["Lyon"])]})
    for i in range(10, 15):
        ldap.delete(f"uid=p{i},{PEOPLE}")
    for i in range(3):
        ldap.add(f"uid=n{i},{PEOPLE}", ["inetOrgPerson", "mssMailbox"],
                 {"uid": f"n{i}", "cn": f"New {i}", "sn": "New", "mssMailboxType": "PER",
                  "mail": f"new{i}@annuaire.mssante.fr"})
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
    instance.load(slapd.person_ldif(i) for i in range(12_000))  # 3 staging batches
    instance.start()
    engine = engine_for(tmp_path)
    sync = DirectorySync(engine, config_for(instance, tmp_path, timeout=5.0))
    try:
        sync.full()
        assert count(engine) == 12_000
        stopped = threading.Event()

        def stop_midway(entries: int) -> None:  # after the first batch: 7 000 entries to go
            if entries >= 5_000 and not stopped.is_set():
                stopped.set()
                instance.stop()

        with pytest.raises(SyncError):
            sync.full(stop_midway)
        assert stopped.is_set()
        assert count(engine) == 12_000  # last good directory in force
        with engine.connect() as conn:
            runs = conn.execute(select(db.directory_runs.c.status).order_by(
                db.directory_runs.c.id)).scalars().all()
            staging = conn.execute(select(func.count()).select_from(db.directory_staging)
                                   ).scalar()
        assert runs == ["ok", "failed"] and staging == 0
        # nothing reachable at all: failed at once, still the last good directory
        with pytest.raises(SyncError, match="no directory server reachable"):
            sync.full()
        assert count(engine) == 12_000
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


def test_submission_checks_remote_recipients_against_the_directory(tmp_path: Path,
                                                                   backend: str) -> None:
    import smtplib

    from tests.node import DOMAIN, PASSWORD, make_node

    instance = slapd.Slapd(tmp_path / "ldap", free_port())
    instance.configure()
    instance.load([slapd.person_ldif(1, mail="dr.martin@operator-a.mssante.fr"),
                   slapd.person_ldif(2, mail="Dr.Durand@operator-b.mssante.fr")])
    instance.start()
    node = make_node(tmp_path / "mss", backend=backend)
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
        status = node.cli_json("directory", "status")
        assert status["entries"] == 2 and status["runs"][0]["status"] == "ok"
        assert [r["mail"] for r in node.cli_json("directory", "search", "martin")] == [
            "dr.martin@operator-a.mssante.fr"]
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
    node.cli("mailbox", "add", f"cachee@{DOMAIN}", "--type", "PER", "--liste-rouge",
             "--no-password")
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


class TlsListener:
    """A loopback TLS server (ldaps://) presenting *cert*: records whether its handshakes
    succeeded and every byte a client sent after one (a bind request carries the DN and the
    password in clear inside the TLS stream)."""

    def __init__(self, cert: Path, key: Path) -> None:
        import socket
        import ssl

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes: list[str] = []  # "ok" or the server-side error
        self.received = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import ssl

        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            raw.settimeout(2)
            try:
                tls = self.context.wrap_socket(raw, server_side=True)
                self.handshakes.append("ok")
                while chunk := tls.recv(4096):
                    self.received += chunk
            except (ssl.SSLError, OSError) as exc:
                if not self.handshakes or self.handshakes[-1] != "ok":
                    self.handshakes.append(type(exc).__name__)
            finally:
                raw.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("case", ["unknown CA", "right CA, other name", "control"])
def test_publish_verifies_the_server_before_sending_the_bind(tmp_path: Path,
                                                             case: str) -> None:
    """Issue 20 #7: 'mss directory publish' to ldaps:// checked no certificate, so a server
    with a certificate of an unknown CA received the bind request and its password. The
    chain and the URL's host are now verified in the handshake (RFC 4513 §3.1.3): the client
    aborts it and nothing is sent. The control (right CA, right name) shows the listener
    does see the bind request when the server is the right one."""
    from directory.publish import publish
    from mss.config import PublishConfig
    from trustspace.pki import generate_dev_pki, issue_certificate

    ours, rogue = tmp_path / "ours", tmp_path / "rogue"
    generate_dev_pki(ours, "ldap.test", ["mx.ldap.test"])
    generate_dev_pki(rogue, "rogue.test", ["mx.rogue.test"])
    cert, key = issue_certificate(rogue if case == "unknown CA" else ours, "ldap",
                                  ["annuaire.other.test" if "other" in case else "localhost"])
    listener = TlsListener(cert, key)
    engine = engine_for(tmp_path)
    url = f"ldaps://localhost:{listener.port}"
    directory = DirectoryConfig(urls=(url,), base_dn=PEOPLE, ca_file=ours / "ca.crt",
                                timeout=5.0)
    to = PublishConfig(url=url, bind_dn="cn=operator,dc=leak,dc=test", base_dn=PEOPLE,
                       ca_file=ours / "ca.crt")
    try:
        with pytest.raises(SyncError, match="publication failed"):
            publish(engine, {}, directory, to, "publish-secret-password", "test")
    finally:
        listener.close()
    assert listener.handshakes, "the client never connected"
    if case == "control":
        assert b"cn=operator,dc=leak,dc=test" in listener.received
        return
    assert "ok" not in listener.handshakes  # the client aborted the handshake
    assert listener.received == b""  # no bind request, no password
    with engine.connect() as conn:  # the refusal is audited, without the password
        rows = conn.execute(select(db.audit_log)).mappings().all()
    assert [r["event"] for r in rows] == ["directory.publish"]
    assert "publish-secret-password" not in json.dumps([dict(r) for r in rows], default=str)


# --------------------------------------------------------------------------- TLS first

def directory_table(url: str, tls: str = "none", **extra: object) -> dict[str, object]:
    return {"urls": [url], "base_dn": PEOPLE, "bind_dn": slapd.READER_DN,
            "password_file": "ldap.password", "tls": tls, **extra}


def test_password_bind_without_tls_to_a_network_host_is_refused(tmp_path: Path) -> None:
    """TLS before any credential (RFC 4513 §6.3.4): a bind password over ldap:// with
    tls = "none" is a config error naming the key, raised before any connection (the
    host does not even resolve); loopback hosts (a local slapd) and TLS are accepted."""
    cfg = tmp_path / "mss.toml"
    with pytest.raises(ConfigError, match=re.escape("config: directory.tls: \"none\" "
                                                    "would send the bind password")):
        parse_config({"directory": directory_table("ldap://ldap.example.test")}, cfg)
    publish = {"url": "ldap://10.0.0.7", "bind_dn": "cn=op", "base_dn": "ou=op",
               "password_env": "MSS_PUBLISH_PASSWORD"}
    with pytest.raises(ConfigError, match=re.escape("config: directory.publish.tls:")):
        parse_config({"directory": directory_table("ldaps://ldap.example.test",
                                                   publish=publish)}, cfg)
    for url, tls in (("ldap://127.0.0.1:3389", "none"), ("ldap://[::1]", "none"),
                     ("ldap://localhost", "none"), ("ldap://ldap.example.test", "starttls"),
                     ("ldaps://ldap.example.test", "none")):
        config = parse_config({"directory": directory_table(url, tls)}, cfg).directory
        assert config is not None and config.urls == (url,)
    anonymous = directory_table("ldap://ldap.example.test")
    del anonymous["password_file"]  # no password: nothing to protect
    assert parse_config({"directory": anonymous}, cfg).directory is not None
    with pytest.raises(ConfigError, match="in clear to ldap://ldap.example.test"):
        ldap_connection("ldap://ldap.example.test", "none", None, 1.0, slapd.READER_DN,
                        "secret", read_only=True)


def test_cli_refuses_a_cleartext_bind_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    cfg.write_text('[directory]\nurl = "ldap://ldap.example.test"\nbase_dn = "o=x"\n'
                   'bind_dn = "cn=r"\npassword_env = "MSS_LDAP_PASSWORD"\n')
    out = subprocess.run([sys.executable, "-m", "mss", "--config", str(cfg), "directory",
                          "sync"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "config: directory.tls:" in lines[0], lines
    assert not (tmp_path / "mss.db").exists()
