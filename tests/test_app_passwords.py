"""App passwords (issue 15): made, listed and revoked by the operator's CLI, used by real
clients (imaplib LOGIN and AUTHENTICATE PLAIN, smtplib AUTH PLAIN and LOGIN, curl over IMAP
with STARTTLS), refused when revoked, out of scope or not offered by the listener; their
last use recorded; the secret in no audit record."""

from __future__ import annotations

import base64
import imaplib
import json
import re
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from mss.mailstore import app_passwords
from mss.mailstore.errors import StoreError
from tests.node import BACKENDS, DOMAIN, PASSWORD, Node, make_node

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
SOURCE = "127.0.23.10"  # this branch's loopback block (CONTRACTS.md): the last use's address
BACKENDS = BACKENDS


# --------------------------------------------------------------------------- pure logic

def test_secret_shape_and_digest() -> None:
    secrets = {app_passwords.new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert re.fullmatch(r"([a-z2-9]{4}-){5}[a-z2-9]{4}", secret), secret
        assert not set(secret) & set("ilo01")
    secret = secrets.pop()
    stored = app_passwords.digest(secret)
    assert stored.startswith("$sha256$") and secret not in stored
    # what a user may type: groups with spaces, no separators, upper case
    for typed in (secret.replace("-", " "), secret.replace("-", ""), secret.upper()):
        assert app_passwords.digest(typed) == stored
    assert app_passwords.digest(secret[:-1] + ("a" if secret[-1] != "a" else "b")) != stored


def test_scopes_and_labels_are_checked() -> None:
    assert app_passwords.parse_scopes("smtp, IMAP") == ("imap", "smtp")
    assert app_passwords.parse_scopes(["smtp"]) == ("smtp",)
    for bad in ("", "pop3", "imap,web"):
        with pytest.raises(StoreError):
            app_passwords.parse_scopes(bad)


# --------------------------------------------------------------------------- the node

def set_auth(text: str, listener: str, methods: list[str]) -> str:
    """*text* (a config 'mss init' wrote) with listeners.<listener>.auth set."""
    block = re.compile(rf"(\[listeners\.{listener}\]\nhost = .*\nport = \d+\n)")
    text, count = block.subn(rf"\g<1>auth = {json.dumps(methods)}\n", text)
    assert count == 1, listener
    return text


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("apppw"), in_process=True, backend=backend,
                  extra_config="\n[imap]\nlogin_failures = 100\n")
    text = n.config.read_text().replace("[smtp]\n", "[smtp]\nauth_failures = 100\n", 1)
    text = set_auth(text, "imaps", ["password"])  # a front without app passwords
    text = set_auth(text, "submissions", ["app-password"])  # one without mailbox passwords
    n.config.write_text(text)
    n.start()
    yield n
    if n.running:
        n.stop()


def add(node: Node, address: str, label: str, scope: str | None = None) -> tuple[int, str]:
    args = ["mailbox", "app-password", "add", address, "--label", label]
    out = node.cli(*args, *(["--scope", scope] if scope else [])).stdout.splitlines()
    made = re.fullmatch(r"app password (\d+) of (\S+) \((.*); ([a-z,]+)\), shown this once:",
                        out[0])
    assert made is not None and made.group(2) == address and made.group(3) == label, out
    return int(made.group(1)), out[1]


def listed(node: Node, address: str) -> dict[int, dict[str, Any]]:
    table = node.cli("mailbox", "app-password", "list", address).stdout.splitlines()
    assert "label" in table[0] and max(map(len, table)) <= 80  # COLUMNS=80 (tests/node.py)
    return {row["id"]: row for row in node.cli_json("mailbox", "app-password", "list", address)}


class SourcedIMAP(imaplib.IMAP4):
    """IMAP with STARTTLS from this branch's loopback source address."""

    def __init__(self, node: Node, port_name: str = "imap") -> None:
        self.node = node
        self.implicit = port_name == "imaps"
        super().__init__("127.0.0.1", node.ports[port_name], timeout=10)
        if not self.implicit:
            self.starttls(ssl_context=node.client_context())

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(SOURCE, 0))
        if self.implicit:
            return self.node.client_context().wrap_socket(sock, server_hostname=self.host)
        return sock


def imap_login(node: Node, login: str, secret: str, *, plain: bool = False,
               port_name: str = "imap") -> str:
    """'OK' and the INBOX selected, or the NO reply's text."""
    client = SourcedIMAP(node, port_name)
    try:
        if plain:
            client.authenticate("PLAIN", lambda _: f"\0{login}\0{secret}".encode())
        else:
            client.login(login, secret)
        assert client.select("INBOX")[0] == "OK"
        return "OK"
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        client.shutdown()


def smtp_login(node: Node, login: str, secret: str, mechanism: str,
               port_name: str = "submission") -> int:
    """The AUTH reply code (235 accepted)."""
    if port_name == "submissions":
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", node.ports[port_name], timeout=10,
                                                source_address=(SOURCE, 0),
                                                context=node.client_context())
    else:
        client = smtplib.SMTP("127.0.0.1", node.ports[port_name], timeout=10,
                              source_address=(SOURCE, 0))
        client.starttls(context=node.client_context())
    with client:
        client.ehlo("device.example")
        if mechanism == "PLAIN":
            blob = base64.b64encode(f"\0{login}\0{secret}".encode()).decode()
            return client.docmd("AUTH", f"PLAIN {blob}")[0]
        code, _ = client.docmd("AUTH", "LOGIN")  # RFC 4954 (draft-murchison-sasl-login)
        assert code == 334
        code, _ = client.docmd(base64.b64encode(login.encode()).decode())
        assert code == 334
        return client.docmd(base64.b64encode(secret.encode()).decode())[0]


def curl_imap(node: Node, login: str, secret: str) -> subprocess.CompletedProcess[str]:
    """curl lists the folders over imap:// with STARTTLS required (--ssl-reqd)."""
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--ssl-reqd", "--cacert", str(node.ca_file),
         "--interface", SOURCE, "--max-time", "20", "--user", f"{login}:{secret}",
         f"imap://127.0.0.1:{node.ports['imap']}/"],
        capture_output=True, text=True, timeout=30)


def login_records(node: Node, event: str) -> list[dict[str, object]]:
    return [r for r in node.audit("--event", event) if r.get("actor") == ALICE]


def test_app_password_with_real_clients(node: Node) -> None:
    imap_id, imap_secret = add(node, ALICE, "Thunderbird laptop", "imap")
    smtp_id, smtp_secret = add(node, ALICE, "Scanner", "smtp")
    both_id, both_secret = add(node, ALICE, "Outlook desk")
    assert listed(node, ALICE)[both_id]["state"] == "active"
    assert listed(node, ALICE)[both_id]["scopes"] == ["imap", "smtp"]

    assert imap_login(node, ALICE, imap_secret) == "OK"
    assert imap_login(node, ALICE, imap_secret.upper().replace("-", " "), plain=True) == "OK"
    assert imap_login(node, ALICE, both_secret, plain=True) == "OK"
    assert imap_login(node, ALICE, PASSWORD) == "OK"  # the mailbox password still works
    assert smtp_login(node, ALICE, smtp_secret, "PLAIN") == 235
    assert smtp_login(node, ALICE, both_secret, "LOGIN") == 235
    proc = curl_imap(node, ALICE, imap_secret)
    assert proc.returncode == 0, proc.stderr
    assert "INBOX" in proc.stdout

    rows = listed(node, ALICE)
    for app_password_id in (imap_id, smtp_id, both_id):
        assert rows[app_password_id]["last_used_from"] == SOURCE, rows  # last use: from where
        assert rows[app_password_id]["last_used_at"] is not None
    records = login_records(node, "imap.login")
    assert any(r["detail"] == {"mechanism": "LOGIN", "method": "app-password",
                               "app_password": str(imap_id)} for r in records), records
    smtp = login_records(node, "smtp.auth")
    assert any(r["outcome"] == 0 and r["detail"] == {
        "mechanism": "LOGIN", "method": "app-password", "app_password": str(both_id)}
        for r in smtp), smtp
    everything = json.dumps(node.audit())
    for secret in (imap_secret, smtp_secret, both_secret):
        assert secret not in everything and secret.replace("-", "") not in everything


def test_wrong_scope_and_revoked_are_refused(node: Node) -> None:
    imap_id, imap_secret = add(node, ALICE, "Tablet", "imap")
    smtp_id, smtp_secret = add(node, ALICE, "Printer", "smtp")
    assert smtp_login(node, ALICE, imap_secret, "PLAIN") == 535
    assert "AUTHENTICATIONFAILED" in imap_login(node, ALICE, smtp_secret)
    assert "AUTHENTICATIONFAILED" in imap_login(node, ALICE, smtp_secret, plain=True)
    reasons = {r["reason"] for r in node.wait_audit(
        lambda r: r["event"] in ("imap.login", "smtp.auth") and r["actor"] == ALICE
        and "not valid for" in str(r.get("reason")), count=3)}
    assert reasons == {"app password not valid for smtp", "app password not valid for imap"}
    assert listed(node, ALICE)[imap_id]["last_used_at"] is None  # a refused login: no use

    out = node.cli("mailbox", "app-password", "revoke", ALICE, str(imap_id)).stdout
    assert out == f"app password {imap_id} of {ALICE} (Tablet) revoked\n"
    node.cli("mailbox", "app-password", "revoke", ALICE, str(smtp_id))
    assert "AUTHENTICATIONFAILED" in imap_login(node, ALICE, imap_secret)
    assert curl_imap(node, ALICE, imap_secret).returncode != 0
    assert smtp_login(node, ALICE, smtp_secret, "LOGIN") == 535
    rows = listed(node, ALICE)
    assert rows[imap_id]["state"] == rows[smtp_id]["state"] == "revoked"
    # another mailbox's app password is not alice's
    _, bob_secret = add(node, BOB, "Bob's phone")
    assert "AUTHENTICATIONFAILED" in imap_login(node, ALICE, bob_secret)
    assert imap_login(node, BOB, bob_secret) == "OK"

    adds = node.audit("--event", "admin.app_password.add")
    assert {"app_password": str(imap_id), "label": "Tablet", "scopes": "imap"} in [
        r["detail"] for r in adds]
    revokes = node.audit("--event", "admin.app_password.revoke")
    assert [r["detail"] for r in revokes if r["mailbox"] == ALICE][-2:] == [
        {"app_password": str(imap_id), "label": "Tablet"},
        {"app_password": str(smtp_id), "label": "Printer"}]


def test_listener_auth_decides_the_methods(node: Node) -> None:
    """imaps offers only the mailbox password, submissions only app passwords."""
    _, secret = add(node, ALICE, "Phone")
    assert "AUTHENTICATIONFAILED" in imap_login(node, ALICE, secret, port_name="imaps")
    assert imap_login(node, ALICE, PASSWORD, port_name="imaps") == "OK"
    assert smtp_login(node, ALICE, PASSWORD, "PLAIN", port_name="submissions") == 535
    assert smtp_login(node, ALICE, secret, "PLAIN", port_name="submissions") == 235
    assert smtp_login(node, ALICE, PASSWORD, "PLAIN") == 235  # submission offers both
    reasons = {str(r["reason"]) for r in node.wait_audit(
        lambda r: r["event"] in ("imap.login", "smtp.auth") and r["actor"] == ALICE
        and r["outcome"] == 8 and r["reason"] in ("wrong password", "wrong app password"),
        count=2)}
    assert reasons == {"wrong password", "wrong app password"}


def test_cli_errors_are_one_line(node: Node) -> None:
    def error(*args: str) -> str:
        proc = node.cli("mailbox", "app-password", *args, check=False)
        assert proc.returncode == 2 and proc.stdout == "", proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        return lines[0]

    assert error("add", f"nobody@{DOMAIN}", "--label", "x") == \
        f"mss: error: no mailbox nobody@{DOMAIN}"
    assert error("add", ALICE, "--label", "x", "--scope", "pop3") == \
        "mss: error: unknown app password scope 'pop3': use imap, smtp or both"
    assert error("add", ALICE, "--label", " ") == \
        "mss: error: an app password needs a label (the device it is for)"
    assert "--label" in error("add", ALICE)
    assert error("revoke", ALICE, "999999") == f"mss: error: {ALICE} has no app password 999999"
    made, _ = add(node, BOB, "Laptop")
    assert error("revoke", ALICE, str(made)) == f"mss: error: {ALICE} has no app password {made}"
    node.cli("mailbox", "app-password", "revoke", BOB, str(made))
    assert error("revoke", BOB, str(made)) == \
        f"mss: error: app password {made} of {BOB} is already revoked"
    assert error("revoke", BOB, "seven").startswith("mss: error: Invalid value for 'ID'")


def test_check_login_same_work_for_unknown_users(node: Node, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    """The same statements and the same number of scrypt runs whether the login names a
    mailbox or not, for each set of methods; a match says which method and app password."""
    import hashlib

    from sqlalchemy import event

    from mss import passwords
    from mss.config import load_config
    from mss.db import make_engine
    from mss.login import LoginCheck, check_login

    app_password_id, secret = add(node, BOB, "Work phone", "imap")
    engine = make_engine(load_config(node.config).database_url, writer=False)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))  # (conn, cursor, statement, ...)
    scrypts: list[int] = []
    real_scrypt = hashlib.scrypt

    def counted(*args: object, **kwargs: object) -> bytes:
        scrypts.append(1)
        return real_scrypt(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(passwords.hashlib, "scrypt", counted)

    def work(login: str, password: str, methods: set[str]
             ) -> tuple[list[str], int, LoginCheck]:
        statements.clear()
        scrypts.clear()
        checked = check_login(engine, login, password, service="imap",
                              methods=frozenset(methods))
        return list(statements), len(scrypts), checked

    try:
        for methods, runs in (({"app-password"}, 0), ({"password", "app-password"}, 1),
                              ({"password"}, 1)):
            known = work(BOB, "not-the-secret", methods)
            unknown = work(f"nobody@{DOMAIN}", "not-the-secret", methods)
            assert known[0] == unknown[0] and known[1] == unknown[1] == runs, methods
        _, runs, checked = work(BOB, secret, {"password", "app-password"})
        assert runs == 0 and checked.method == "app-password"
        assert checked.app_password_id == app_password_id
        assert checked.mailbox is not None
        _, runs, checked = work(BOB, PASSWORD, {"password", "app-password"})
        assert runs == 1 and checked.method == "password"
        assert checked.app_password_id is None
        _, _, checked = work(BOB, secret, {"password"})  # app passwords not offered
        assert checked.mailbox is None
        assert checked.reason == "wrong password"
    finally:
        engine.dispose()
