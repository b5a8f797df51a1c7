"""The admin CLI as an operator's script sees it: exit codes, one-line errors, no change."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node import CHILD_ENV, DOMAIN, MSS, REPO, Node, env_without_config, make_node
from tests.peers import require_file
from tests.whitelist_fixtures import make_whitelist_xml

REAL_LIST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "liste-blanche"
             / "listeblanchemssante-2025-03-14.xml")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("cli"), with_whitelist=False, real_init=True)


# what an admin command must not pay for at start-up (loaded by the command that uses it)
HEAVY = ("sqlalchemy", "cryptography", "pydantic", "asyncio", "proxy", "audit", "trustspace",
         "directory", "mss.app", "mss.db", "mss.mailstore", "mss.crypto", "mss.server")
LIGHT = ("audit", "audit.events")  # the event catalogue: core, dataclasses and an enum


def test_import_mss_cli_loads_no_store_nor_protocol() -> None:
    code = "import sys, mss.cli; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    loaded = [m for m in proc.stdout.split() if m not in LIGHT and (m in HEAVY or m.startswith(
        tuple(f"{h}." for h in HEAVY)))]
    assert loaded == []


def _best_cpu(command: list[str], runs: int = 5) -> tuple[float, float]:
    """The least CPU time (user + system) and its wall time of *runs* runs of *command*."""
    import resource

    measured = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, cwd=REPO, timeout=120, env=CHILD_ENV)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        measured.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                         wall))
    return min(measured)


def test_whitelist_check_answers_fast(node: Node) -> None:
    """An admin command pays only for its own imports beyond what no command can do without
    (sqlalchemy with its SQLite dialect, typer with its pydantic): measured in the same run,
    so a slower machine moves both. On an idle machine here the floor is about 0.4 s of CPU
    and the command 0.6-0.8 s; it was 1.1 s when mss.cli imported every package. Bounded on
    CPU time (the best of five runs): wall time on a loaded machine measures the others."""
    proc = node.cli_process("whitelist", "check", "operator-a.mssante.fr", check=False)
    assert proc.returncode == 1 and "not whitelisted" in proc.stdout
    floor, _ = _best_cpu([sys.executable, "-c", "import sqlalchemy, sqlalchemy.dialects.sqlite,"
                          " typer, typer._adapters"])
    cpu, wall = _best_cpu([*MSS, "--config", str(node.config), "whitelist", "check",
                           "operator-a.mssante.fr"])
    print(f"mss whitelist check: best {cpu:.2f} s CPU ({wall:.2f} s wall); floor {floor:.2f} s")
    assert cpu < floor + 0.5  # issue 13 asked 0.3 s: the floor alone takes more


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mss: error: ")
    return lines[0]


def test_init_layout_and_refuses_overwrite(node: Node) -> None:
    key = node.data_dir / "keys" / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((node.data_dir / "pki" / "server.key").stat().st_mode) == 0o600
    assert "DEVELOPMENT ONLY" in (node.data_dir / "pki" / "README").read_text()
    before = key.read_bytes()
    proc = subprocess.run([*MSS, "init", "--data-dir", str(node.data_dir), "--domain", DOMAIN],
                          capture_output=True, text=True, cwd=REPO)
    assert "--force" in one_line_error(proc)
    assert key.read_bytes() == before


def test_config_from_env_and_missing_config() -> None:
    env = env_without_config()
    env["MSS_CONFIG"] = "/nonexistent/mss.toml"
    proc = subprocess.run([*MSS, "domain", "list"], capture_output=True, text=True, cwd=REPO,
                          env=env)
    assert "not found" in one_line_error(proc)


def test_bin_mss_is_the_readme_command_from_any_directory(node: Node, tmp_path: Path) -> None:
    """bin/mss, what the README puts on PATH after 'make run' (issue 17): this checkout's
    CLI from any directory; --config, then MSS_CONFIG, then the checkout's var/mss.toml."""
    env = env_without_config()
    env["PATH"] = f"{REPO / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    if not (REPO / ".venv" / "bin" / "python").exists():  # a worktree on a shared venv
        env["PYTHON"] = sys.executable

    def mss(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mss", *args], capture_output=True, text=True, cwd=tmp_path,
                              env={**env, **extra}, timeout=120)

    listed = mss("--config", str(node.config), "domain", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["domain"] for d in json.loads(listed.stdout)] == [DOMAIN]
    by_env = mss("mailbox", "list", "--json", MSS_CONFIG=str(node.config))
    assert f"alice@{DOMAIN}" in [m["address"] for m in json.loads(by_env.stdout)]
    if not (REPO / "var" / "mss.toml").exists():  # no 'make run' node in this checkout
        assert f"{REPO / 'var' / 'mss.toml'} not found" in one_line_error(mss("domain", "list"))
    assert "Usage: mss" in mss("--help").stdout


LISTINGS = (["domain", "list"], ["mailbox", "list"], ["mailbox", "show", f"alice@{DOMAIN}"],
            ["keys", "status"], ["audit", "list"], ["audit", "status"], ["queue", "list"],
            ["relay", "list"], ["directory", "status"], ["directory", "search", "x"],
            ["mailbox", "app-password", "list", f"alice@{DOMAIN}"], ["mailbox", "cert", "list"],
            ["whitelist", "versions"])


def test_every_listing_fits_80_columns_and_prints_json(node: Node) -> None:
    """Tables at COLUMNS=80 (tests/node.py sets it): no line wider, however long the cells;
    --json: the same rows, parsed (issue 17)."""
    long_box = f"a-rather-long-mailbox-name.for-the-secretariat-of-cardiology@{DOMAIN}"
    node.cli("mailbox", "add", long_box, "--type", "APP", "--finess", "750000002",
             "--cert-dn", "CN=an application with a long name,OU=a department with a long "
             "name,O=Clinique Exemple,L=Paris,C=FR")
    node.cli("relay", "add", "scanner-of-the-radiology-department", "--domains", DOMAIN,
             "--cert-dn", "CN=scanner.radiologie.clinique-exemple.fr,OU=Radiologie,"
             "O=Clinique Exemple,L=Paris,C=FR")
    node.cli("mailbox", "app-password", "add", f"alice@{DOMAIN}", "--label",
             "Thunderbird, laptop of the secretariat, second floor, east wing")
    for args in LISTINGS:
        table = node.cli(*args).stdout
        assert table and max(map(len, table.splitlines())) <= 80, (args, table)
        one_record = tuple(args[:2]) in (("mailbox", "show"), ("directory", "status"))
        assert isinstance(node.cli_json(*args), dict if one_record else list), args
    assert long_box in [m["address"] for m in node.cli_json("mailbox", "list")]
    relays = node.cli_json("relay", "list")
    assert relays[-1]["name"] == "scanner-of-the-radiology-department"


def test_domains(node: Node) -> None:
    [listed] = node.cli_json("domain", "list")
    assert listed["domain"] == DOMAIN and listed["relay_to"] is None
    assert listed["state"] == "active" and listed["mailboxes"] >= 3
    node.cli("domain", "add", "Clinique-Exemple.MSSante.fr")
    assert "clinique-exemple.mssante.fr" in [d["domain"] for d in node.cli_json("domain",
                                                                                 "list")]
    assert "already hosted" in one_line_error(node.cli("domain", "add", DOMAIN, check=False))
    assert "invalid domain" in one_line_error(node.cli("domain", "add", "bad..name",
                                                       check=False))


def test_mailboxes(node: Node) -> None:
    listed = node.cli_json("mailbox", "list")
    assert {"address": f"alice@{DOMAIN}", "type": "PER", "state": "active",
            "rpps": "10000000001", "finess": None} in listed
    show = node.cli("mailbox", "show", f"alice@{DOMAIN}").stdout
    words = " ".join(show.split())  # labels aligned on the longest one
    assert "rpps: 10000000001" in words and "password: set" in words
    record = node.cli_json("mailbox", "show", f"alice@{DOMAIN}")
    assert record["rpps"] == "10000000001" and record["password"] == "set"
    assert isinstance(record["created_at"], float | int) and record["cert_dns"] == []
    errors = [
        (["mailbox", "add", f"x@{DOMAIN}", "--type", "XYZ"], "invalid mailbox type"),
        (["mailbox", "add", "x@not-hosted.fr", "--type", "PER"], "not hosted"),
        (["mailbox", "add", f"alice@{DOMAIN}", "--type", "PER"], "already exists"),
        (["mailbox", "add", "no-at-sign", "--type", "PER"], "invalid address"),
        (["mailbox", "add", f"y@{DOMAIN}", "--type", "PER", "--rpps", "12"], "invalid RPPS"),
        (["mailbox", "show", f"ghost@{DOMAIN}"], "no mailbox"),
        (["mailbox", "add", f"z@{DOMAIN}"], "--type"),
    ]
    for args, text in errors:
        assert text in one_line_error(node.cli(*args, check=False)), args
    short = node.cli("mailbox", "add", f"w@{DOMAIN}", "--type", "PER", "--password-stdin",
                     input="short\n", check=False)
    assert "shorter than 8" in one_line_error(short)
    assert f"w@{DOMAIN}" not in [m["address"] for m in node.cli_json("mailbox", "list")]
    node.cli("mailbox", "disable", f"secretariat@{DOMAIN}")
    assert "already disabled" in one_line_error(
        node.cli("mailbox", "disable", f"secretariat@{DOMAIN}", check=False))
    assert node.cli_json("mailbox", "show", f"secretariat@{DOMAIN}")["state"] == "disabled"


def test_whitelist_import_check_and_shrink_guard(node: Node, tmp_path: Path) -> None:
    domains = [(f"d{i}.mssante.fr", f"CN=mx{i % 3}.op.fr,O=Op,C=FR") for i in range(100)]
    full = tmp_path / "full.xml"
    full.write_bytes(make_whitelist_xml(domains))
    out = node.cli("whitelist", "import", str(full)).stdout
    assert "100 domains" in out
    assert node.cli("whitelist", "check", "D7.MSSante.fr.").returncode == 0
    absent = node.cli("whitelist", "check", "gmail.com", check=False)
    assert absent.returncode == 1 and "not whitelisted" in absent.stdout
    listed = node.cli_json("whitelist", "check", "d7.mssante.fr")
    assert listed["whitelisted"] and listed["dns"] == ["CN=mx1.op.fr,O=Op,C=FR"]
    absent = node.cli("whitelist", "check", "gmail.com", "--json", check=False)
    assert absent.returncode == 1 and json.loads(absent.stdout)["whitelisted"] is False
    assert node.cli_json("whitelist", "show")["domains"] == 100
    half = tmp_path / "half.xml"
    half.write_bytes(make_whitelist_xml(domains[:50]))
    err = one_line_error(node.cli("whitelist", "import", str(half), check=False))
    assert "--force" in err
    assert node.cli("whitelist", "check", "d80.mssante.fr").returncode == 0  # still in force
    show = node.cli("whitelist", "show").stdout
    assert "domains:   100" in show
    node.cli("whitelist", "import", str(half), "--force")
    assert node.cli("whitelist", "check", "d80.mssante.fr", check=False).returncode == 1
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<html>not a whitelist</html>")
    one_line_error(node.cli("whitelist", "import", str(broken), check=False))
    missing = one_line_error(node.cli("whitelist", "import", str(tmp_path / "nope.xml"),
                                      check=False))
    assert "cannot read" in missing
    assert node.cli("whitelist", "check", "d10.mssante.fr").returncode == 0
    events = [r for r in node.audit() if r["event"] == "whitelist.import"]
    assert [r["outcome"] for r in events][-4:] == [0, 4, 0, 8]


def test_real_national_list_via_cli(tmp_path: Path) -> None:
    require_file(REAL_LIST, source="../shared/data (the national whitelist)")
    fresh = make_node(tmp_path, with_whitelist=False)
    proc = fresh.cli("whitelist", "import", str(REAL_LIST))
    assert "6554 entries, 5002 domains" in proc.stdout
    assert "truncated" in proc.stderr
    assert fresh.cli("whitelist", "check", "zenidoc.mssante.fr").returncode == 0
    dns = fresh.cli("whitelist", "check", "zenidoc.mssante.fr").stdout
    assert "CN=smtp-1.mssante.adista.fr" in dns and "CN=smtp-2.mssante.adista.fr" in dns


def test_audit_list_filters_and_json(node: Node) -> None:
    in_process = node.audit("--mailbox", f"alice@{DOMAIN}")  # what the other tests read
    rows = node.audit_cli("--mailbox", f"alice@{DOMAIN}")
    assert rows == in_process  # the CLI's own audit.read is appended after its query
    assert rows and all(f"alice@{DOMAIN}" in (r["mailbox"], r["actor"], r["mail_from"],
                                              r["rcpt"]) for r in rows)
    assert rows[0]["event"] == "admin.mailbox.add"
    future = node.audit_cli("--since", "2999-01-01")
    assert future == []
    text = node.cli("audit", "list").stdout
    assert "admin.init" in text and max(map(len, text.splitlines())) <= 80  # COLUMNS=80
    # a kind, or a dotted prefix with or without its final dot; never a part of a word
    adds = node.audit_cli("--event", "admin.mailbox.add")
    assert adds and {r["event"] for r in adds} == {"admin.mailbox.add"}
    for prefix in ("admin.mailbox", "admin.mailbox.", "admin"):
        rows = node.audit_cli("--event", prefix)
        assert {r["id"] for r in adds} <= {r["id"] for r in rows}
        assert all(str(r["event"]).startswith(prefix.rstrip(".") + ".") for r in rows)
    for part in ("admin.mail", "adm", "admin.mailbox.ad"):
        assert "no event kind nor dotted prefix" in one_line_error(
            node.cli("audit", "list", "--event", part, check=False))
    assert "not an ISO 8601" in one_line_error(node.cli("audit", "list", "--since", "yesterday",
                                                        check=False))
    # --message-id as a mail client shows it (brackets) or as it was copied (none)
    from audit.journal import AuditRecord, append
    from mss.config import load_config
    from mss.db import make_engine

    engine = make_engine(load_config(node.config).database_url)
    try:
        with engine.begin() as conn:
            append(conn, [AuditRecord("smtp.message.accepted", message_id="<cli.17@demo>")])
    finally:
        engine.dispose()
    for written in ("<cli.17@demo>", "cli.17@demo"):
        found = node.audit_cli("--message-id", written)
        assert [r["message_id"] for r in found] == ["<cli.17@demo>"], written
    # every row chains to the previous one
    all_rows = node.audit_cli()
    for prev, row in zip(all_rows, all_rows[1:], strict=False):
        assert row["prev_hash"] == prev["hash"]
    json.dumps(all_rows)


def test_audit_checkpoint_and_purge(node: Node) -> None:
    out = node.cli("audit", "checkpoint").stdout
    assert out.startswith("checkpoint on record ")
    assert "signed checkpoints valid" in node.cli("audit", "verify").stdout
    assert "no record before" in node.cli("audit", "purge").stdout
    err = one_line_error(node.cli("audit", "purge", "--before", "2100-01-01", check=False))
    assert "are kept" in err
    events = [r["event"] for r in node.audit()]
    assert events.count("audit.purge") == 2


def test_audit_verify_and_export(node: Node) -> None:
    from xml.etree.ElementTree import fromstring

    from tests.test_audit import check_audit_message

    out = node.cli("audit", "verify")
    assert out.returncode == 0 and "chain intact" in out.stdout
    lines = node.cli("audit", "export", "--format", "dicom-xml").stdout.splitlines()
    assert lines
    for line in lines:
        check_audit_message(fromstring(line))
    assert "unknown format" in one_line_error(node.cli("audit", "export", "--format", "pdf",
                                                       check=False))
    fhir = [json.loads(line) for line in
            node.cli("audit", "export", "--format", "fhir-json").stdout.splitlines()]
    assert len(fhir) >= len(lines) and all(r["resourceType"] == "AuditEvent" for r in fhir)
    admin = node.audit("--event", "admin.", "--outcome", "0")
    assert admin and all(r["event"].startswith("admin.") for r in admin)
    assert "no event kind nor dotted" in one_line_error(node.cli("audit", "list", "--event", "nope",
                                                           check=False))
    assert "not 0, 4, 8 or 12" in one_line_error(node.cli("audit", "list", "--outcome", "3",
                                                          check=False))
    db_path = node.data_dir / "mss.db"
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE audit_log SET actor = 'someone else' WHERE id = 2")
    bad = node.cli("audit", "verify", check=False)
    assert bad.returncode == 1 and "record 2 was modified" in bad.stdout


# --------------------------------------------------------------------------- file modes

def _start_serving(node: Node, out: Path) -> subprocess.Popen[bytes]:
    """``mss serve`` logging to logging.file (inside the data dir, created by mss itself)
    with its stdout/stderr outside the data dir; returns once ready."""
    import time

    log = node.data_dir / "mss.log"
    with open(out, "ab") as sink:
        proc = subprocess.Popen([*MSS, "--config", str(node.config), "serve"], stdout=sink,
                                stderr=sink, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, out.read_text()
        if log.exists() and b'"event": "ready"' in log.read_bytes():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"mss serve not ready: {out.read_text()}")


def test_init_into_an_open_dir_then_serve_creates_only_private_files(tmp_path: Path) -> None:
    """An existing 0755 data dir: init makes it 0700; mss.db, its WAL/SHM, the log file,
    keys and certificates are created 0600 (umask 077), directories 0700."""
    import smtplib
    import stat

    from tests.node import PASSWORD

    data_dir = tmp_path / "node"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    node = make_node(tmp_path, with_whitelist=False, real_init=True)  # mss init into it
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    node.config.write_text(node.config.read_text().replace(
        '[logging]\nlevel = "info"', '[logging]\nlevel = "info"\nfile = "mss.log"'))
    proc = _start_serving(node, tmp_path / "serve.out")
    try:
        with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30) as client:
            client.starttls(context=node.client_context())
            client.login(f"alice@{DOMAIN}", PASSWORD)
            client.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"],
                            f"From: alice@{DOMAIN}\r\nSubject: m\r\n\r\nx\r\n".encode())
        names = {p.name for p in data_dir.iterdir()}
        assert {"mss.db", "mss.db-wal", "mss.db-shm", "mss.log"} <= names, names
        loose = {str(p.relative_to(data_dir)): oct(stat.S_IMODE(p.stat().st_mode))
                 for p in [data_dir, *data_dir.rglob("*")]
                 if stat.S_IMODE(p.stat().st_mode) & 0o077}
        assert loose == {}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_refuses_a_data_dir_others_can_read(tmp_path: Path) -> None:
    fresh = make_node(tmp_path, with_whitelist=False)
    fresh.data_dir.chmod(0o755)
    err = one_line_error(fresh.cli("serve", check=False))
    assert f"data directory {fresh.data_dir} is open to group/others (mode 0755)" in err
    assert "chmod 700" in err
    fresh.data_dir.chmod(0o750)
    assert "(mode 0750)" in one_line_error(fresh.cli("serve", check=False))


# --------------------------------------------------------------------------- database errors

def test_wrong_database_path_is_one_line_for_every_command(tmp_path: Path) -> None:
    fresh = make_node(tmp_path, with_whitelist=False)
    fresh.config.write_text(fresh.config.read_text().replace(
        'url = "sqlite:///mss.db"', 'url = "sqlite:///no-such-dir/mss.db"'))
    wanted = f"database {fresh.data_dir / 'no-such-dir' / 'mss.db'}: unable to open database"
    for args in (["serve"], ["domain", "list"], ["mailbox", "list"], ["audit", "list"],
                 ["queue", "list"], ["whitelist", "check", "x.fr"], ["keys", "status"]):
        err = one_line_error(fresh.cli(*args, check=False))
        assert wanted in err and "does not exist" in err, (args, err)


def test_corrupt_database_is_one_line_for_every_command(tmp_path: Path) -> None:
    fresh = make_node(tmp_path, with_whitelist=False)
    db_file = fresh.data_dir / "mss.db"
    commands = (["serve"], ["domain", "list"], ["mailbox", "show", f"alice@{DOMAIN}"],
                ["audit", "verify"], ["queue", "list"], ["whitelist", "show"])
    with open(db_file, "r+b") as f:  # pages after the header: a malformed image
        f.seek(4096)
        f.write(b"\xff" * 65536)
    for args in commands:
        err = one_line_error(fresh.cli(*args, check=False))
        assert f"database {db_file}: database disk image is malformed" in err, (args, err)
    db_file.write_bytes(b"not a database at all" * 100)  # header gone too
    for args in commands:
        err = one_line_error(fresh.cli(*args, check=False))
        assert f"database {db_file}: file is not a database" in err, (args, err)


# --------------------------------------------------------------------------- usage errors

def test_bad_arguments_are_exit_2_and_name_the_right_thing(node: Node) -> None:
    """Each a usage error: exit 2, one line naming the argument, the option or the key."""
    err = one_line_error(node.cli("domain", "add", "xn--a.fr", check=False))
    assert "'xn--a'" in err and "not a valid A-label" in err
    assert "xn--a.fr" not in node.cli("domain", "list").stdout
    node.cli("domain", "add", "xn--hpital-fva.fr")  # a real A-label: hôpital.fr
    err = one_line_error(node.cli("whitelist", "check", "bad domain!", check=False))
    assert "invalid domain 'bad domain!'" in err
    err = one_line_error(node.cli("queue", "list", "--limit", "-1", check=False))
    assert "'--limit'" in err
    err = one_line_error(node.cli("audit", "list", "--until", "2026-13-45", check=False))
    assert err == "mss: error: --until: not an ISO 8601 date or time: '2026-13-45'"
    err = one_line_error(node.cli("audit", "list", "--since", "2026-13-45", check=False))
    assert err.startswith("mss: error: --since: ")
    cert = node.data_dir / "pki" / "server.crt"
    moved = cert.with_suffix(".moved")
    cert.rename(moved)
    try:
        err = one_line_error(node.cli("serve", check=False))
        assert err == f"mss: error: tls.cert_file {cert}: No such file or directory"
    finally:
        moved.rename(cert)
