"""A mailbox migrated from Dovecot into mss with mbsync, then back (issue 16, reversibility).

A real Dovecot (Debian ``dovecot-imapd``, tests/dovecot.py) holds a user's mail in three
folders, with flags, filled over IMAP; ``mbsync`` (isync) copies it into an mss mailbox
logging in as an operator (``mss operator add``; the login ``MAILBOX*OPERATOR``, as mbsync
sends no SASL authzid), then from mss into an empty Dovecot user. Each side read through
imaplib: the same messages, byte for byte, with the same flags, in the same folders; the
operator's logins audited as delegated access. mbsync adds an ``X-TUID`` header field to
each message it copies (its own recovery marker, added on every copy, replaced on the next):
the comparison drops that one field and nothing else.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import peers
from tests.dovecot import HOST, Dovecot
from tests.node import DOMAIN, PASSWORD, Node, make_node

FOLDERS = ("INBOX", "Archive", "Projets/Dossier")
SYSTEM = ("\\Seen", "\\Answered", "\\Flagged", "\\Draft")  # what mbsync 1.4 carries
FLAG_SETS = ((), ("\\Seen",), ("\\Seen", "\\Answered"), ("\\Flagged",), ("\\Draft",),
             ("\\Seen", "\\Flagged", "\\Answered"))
TARGET = f"migrated@{DOMAIN}"
OPERATOR, OPERATOR_PASSWORD = "migrator", "operator migration secret"
USERS = {"source": "source password", "back": "back password"}
PER_FOLDER = 12


@pytest.fixture(scope="module", autouse=True)
def _peers() -> None:
    peers.require_peer("mbsync", "isync")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot(USERS)
    try:
        m = server.imap("source")
        for f, folder in enumerate(FOLDERS):
            if folder != "INBOX":
                assert m.create(folder)[0] == "OK", folder
            for i in range(PER_FOLDER):
                n = f * 100 + i
                flags = FLAG_SETS[n % len(FLAG_SETS)]
                data = (f"From: source@example.org\r\nTo: {TARGET}\r\nSubject: migration {n}"
                        f"\r\nMessage-ID: <migration{n}@example.org>\r\n\r\nbody {n}\r\n"
                        "From a line\r\n" + "x" * (n * 37 % 3000) + "\r\n").encode()
                typ, _ = m.append(folder, "(" + " ".join(flags) + ")" if flags else None,
                                  None, data)
                assert typ == "OK"
        m.logout()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("migration"), sending_limits=False)
    n.start()
    n.cli("mailbox", "add", TARGET, "--type", "PER", "--password-stdin",
          input=PASSWORD + "\n")
    n.cli("operator", "add", OPERATOR, "--password-stdin", input=OPERATOR_PASSWORD + "\n")
    yield n
    n.stop()


def state(m: object) -> dict[str, list[tuple[bytes, frozenset[str]]]]:
    """{folder: sorted [(message bytes, system flags)]} read over IMAP."""
    import imaplib

    assert isinstance(m, imaplib.IMAP4)
    out: dict[str, list[tuple[bytes, frozenset[str]]]] = {}
    for folder in FOLDERS:
        typ, data = m.select(f'"{folder}"', readonly=True)
        assert typ == "OK", (folder, data)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        rows = []
        for item in data:
            if isinstance(item, tuple):
                flags = re.search(r"FLAGS \(([^)]*)\)", item[0].decode())
                assert flags is not None
                rows.append((without_tuid(item[1]), frozenset(f for f in flags.group(1).split()
                                                if f in SYSTEM)))
        out[folder] = sorted(rows, key=lambda r: r[0])
    return out


def without_tuid(data: bytes) -> bytes:
    """The message without the one ``X-TUID`` header field mbsync adds to every message it
    copies (isync: to find it again after an interrupted run), itself asserted once."""
    head, sep, body = data.partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.startswith(b"X-TUID: ")]
    assert len(head.split(b"\r\n")) - len(kept) <= 1
    return b"\r\n".join(kept) + sep + body


def mss_imap(node: Node, login: str, password: str) -> object:
    import imaplib

    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=30)
    m.login(login, password)
    return m


def write_rc(base: Path, node: Node, dovecot: Dovecot, dovecot_user: str, name: str,
             pull_from_dovecot: bool) -> Path:
    cert_pem = (node.data_dir / "pki" / "server.crt").read_text()
    cert = base / "server-leaf.pem"
    cert.write_text(cert_pem[: cert_pem.index("-----END CERTIFICATE-----") + 25] + "\n")
    for label, secret in (("dovecot", USERS[dovecot_user]), ("mss", OPERATOR_PASSWORD)):
        path = base / f"{name}-{label}.pw"
        path.write_text(secret)
        path.chmod(0o600)
    state_dir = base / f"{name}-state"
    state_dir.mkdir()
    far, near = ("dovecot", "mss") if pull_from_dovecot else ("mss", "dovecot")
    rc = base / f"{name}.mbsyncrc"
    # mbsync 1.4 checks DNS names only, never an IP SAN: mss is reached as localhost
    rc.write_text(f"""\
IMAPAccount dovecot
Host {HOST}
Port {dovecot.port}
User {dovecot_user}
PassCmd "cat {base}/{name}-dovecot.pw"
SSLType None
AuthMechs LOGIN

IMAPStore dovecot
Account dovecot

IMAPAccount mss
Host localhost
Port {node.ports["imaps"]}
User {TARGET}*{OPERATOR}
PassCmd "cat {base}/{name}-mss.pw"
SSLType IMAPS
CertificateFile {cert}
AuthMechs PLAIN

IMAPStore mss
Account mss

Channel {name}
Far :{far}:
Near :{near}:
Patterns INBOX Archive Projets/Dossier
Create Near
Sync Pull
SyncState {state_dir}/
""")
    return rc


def mbsync(rc: Path, base: Path, name: str) -> None:
    binary = peers.require_peer("mbsync", "isync")
    proc = subprocess.run([binary, "-c", str(rc), name], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HOME": str(base)})
    (base / f"mbsync-{name}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_dovecot_to_mss_and_back(node: Node, dovecot: Dovecot, tmp_path: Path) -> None:
    source = dovecot.imap("source")
    expected = state(source)
    source.logout()
    assert sum(len(v) for v in expected.values()) == PER_FOLDER * len(FOLDERS)
    started = time.time()
    mbsync(write_rc(tmp_path, node, dovecot, "source", "inbound", True), tmp_path, "inbound")
    migrated = mss_imap(node, TARGET, PASSWORD)
    assert state(migrated) == expected
    migrated.logout()  # type: ignore[attr-defined]
    mbsync(write_rc(tmp_path, node, dovecot, "back", "outbound", False), tmp_path, "outbound")
    back = dovecot.imap("back")
    assert state(back) == expected
    back.logout()
    delegated = [r for r in node.audit("--event", "imap.delegated")
                 if r["actor"] == f"operator:{OPERATOR}" and r.get("mailbox") == TARGET]
    assert len(delegated) >= 2  # one login per mbsync run at least
    appended = node.audit("--event", "imap.append")
    assert sum(1 for r in appended if r["actor"] == f"operator:{OPERATOR}") == \
        PER_FOLDER * len(FOLDERS)
    listed = node.cli_json("operator", "list")
    assert [o for o in listed if o["name"] == OPERATOR][0]["last_used_at"] >= started
