"""Interop: mbsync (isync) two-way sync of a 1 000-message mailbox against a real node.

Full sync to a local Maildir, then flag changes, moves between folders and deletes on BOTH
sides, then a second sync: both sides must hold the same Message-IDs, once each, with the
same flags (server side read through imaplib). Skipped when mbsync is not installed
(`make test` installs Debian's isync) or when this build has no IMAP listener yet.
"""

from __future__ import annotations

import email.parser
import imaplib
import os
import re
import smtplib
import ssl
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests import peers
from tests.node import DOMAIN, PASSWORD, Node, make_node

MBSYNC = peers.find_program("mbsync")
N_MESSAGES = 1000
USER = f"bob@{DOMAIN}"



@pytest.fixture(scope="module", autouse=True)
def _mbsync_installed() -> None:
    peers.require_peer("mbsync", "isync")  # skipped locally, failed under CI (tests/peers.py)


# Maildir info flags (maildir.html) <-> IMAP system flags (RFC 3501 §2.3.2)
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen"}


@pytest.fixture(scope="module")
def imap_node(tmp_path_factory: pytest.TempPathFactory) -> object:
    node = make_node(tmp_path_factory.mktemp("mbsync"), sending_limits=False)  # 1000 from one
    node.start()
    yield node
    if node.process is not None:
        node.stop()


def deliver(node: Node, count: int, sessions: int = 4) -> None:
    """alice -> bob over submission, *sessions* connections, bounded by *count*."""
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=60) as c:
                c.starttls(context=node.client_context())
                c.login(f"alice@{DOMAIN}", PASSWORD)
                for i in range(w, count, sessions):
                    m = EmailMessage()
                    m["From"], m["To"] = f"alice@{DOMAIN}", USER
                    m["Subject"] = f"sync {i}"
                    m["Message-ID"] = make_msgid(f"sync{i}", DOMAIN)
                    m.set_content(f"message {i}\n" + "lorem ipsum " * 40 + "\n")
                    c.send_message(m)
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors


@dataclass
class Endpoint:
    """Where mbsync and imaplib connect: implicit TLS, or STARTTLS when *starttls*."""
    port: int
    user: str
    password: str
    cert_pem: str  # the server's own certificate, pinned in mbsyncrc
    ctx: ssl.SSLContext
    starttls: bool = False
    # mbsync 1.4 checks the certificate's DNS names only, never an IP address SAN: connect by
    # a name the certificate carries (the dev certificate has DNS:localhost)
    host: str = "localhost"

    def imap(self) -> imaplib.IMAP4:
        if self.starttls:
            m = imaplib.IMAP4("127.0.0.1", self.port, timeout=60)
            m.starttls(ssl_context=self.ctx)
        else:
            m = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.ctx, timeout=60)
        m.login(self.user, self.password)
        return m


def node_endpoint(node: Node) -> Endpoint:
    return Endpoint(node.ports["imaps"], USER, PASSWORD,
                    (node.data_dir / "pki" / "server.crt").read_text(), node.client_context())


def server_state(m: imaplib.IMAP4, folders: list[str]) -> dict[str, dict[str, set[str]]]:
    """{folder: {message-id: flags}} read through IMAP; asserts no Message-ID twice."""
    state: dict[str, dict[str, set[str]]] = {}
    for folder in folders:
        typ, _ = m.select(folder, readonly=True)
        assert typ == "OK", folder
        typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", data
        ids: list[str] = []
        box: dict[str, set[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, hdr = item[0].decode(), item[1].decode()
            mid = hdr.split(":", 1)[1].strip() if ":" in hdr else ""
            flags = re.search(r"FLAGS \(([^)]*)\)", meta)
            ids.append(mid)
            box[mid] = {f for f in (flags.group(1).split() if flags else [])
                        if f in MAILDIR_FLAGS.values()}
        dup = [k for k, n in Counter(ids).items() if n > 1]
        assert not dup, f"{folder}: duplicated on the server: {dup[:5]}"
        state[folder] = box
    return state


def local_state(root: Path, folders: list[str]) -> dict[str, dict[str, set[str]]]:
    parser = email.parser.BytesHeaderParser()
    state: dict[str, dict[str, set[str]]] = {}
    for folder in folders:
        ids: list[str] = []
        box: dict[str, set[str]] = {}
        for sub in ("cur", "new"):
            d = root / folder / sub
            for f in d.iterdir() if d.exists() else []:
                with f.open("rb") as fh:
                    mid = str(parser.parse(fh)["Message-ID"] or "").strip()
                info = f.name.rsplit(":2,", 1)[1] if ":2," in f.name else ""
                if "T" in info:  # trashed, not yet expunged
                    continue
                ids.append(mid)
                box[mid] = {MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS}
        dup = [k for k, n in Counter(ids).items() if n > 1]
        assert not dup, f"{folder}: duplicated in the Maildir: {dup[:5]}"
        state[folder] = box
    return state


def write_config(ep: Endpoint, base: Path) -> Path:
    """An mbsyncrc: TLS, the server's own certificate pinned, password via PassCmd."""
    leaf = ep.cert_pem
    cert = base / "server-leaf.pem"
    cert.write_text(leaf[: leaf.index("-----END CERTIFICATE-----") + 25] + "\n")
    pw = base / "password"
    pw.write_text(ep.password)
    pw.chmod(0o600)
    maildir = base / "Maildir"
    maildir.mkdir()
    rc = base / "mbsyncrc"
    rc.write_text(f"""\
IMAPAccount mss
Host {ep.host}
Port {ep.port}
User {ep.user}
PassCmd "cat {pw}"
SSLType {"STARTTLS" if ep.starttls else "IMAPS"}
CertificateFile {cert}
AuthMechs PLAIN

IMAPStore mss-far
Account mss

MaildirStore mss-near
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mss
Far :mss-far:
Near :mss-near:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
""")
    return rc


def mbsync(rc: Path, base: Path, label: str) -> None:
    proc = subprocess.run([str(MBSYNC), "-c", str(rc), "-D", "-a"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HOME": str(base)})
    (base / f"mbsync-{label}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_mbsync_two_way_sync_of_1000_messages(imap_node: Node, tmp_path: Path) -> None:
    deliver(imap_node, N_MESSAGES)
    two_way_sync(node_endpoint(imap_node), tmp_path, N_MESSAGES)


def two_way_sync(ep: Endpoint, tmp_path: Path, n_messages: int) -> None:
    """Full sync, changes on both sides, second sync, then both sides compared."""
    folders = ["INBOX", "Archive"]
    m = ep.imap()
    typ, data = m.select("INBOX")
    assert typ == "OK" and int(data[0] or 0) == n_messages

    rc = write_config(ep, tmp_path)
    mbsync(rc, tmp_path, "1-full")
    maildir = tmp_path / "Maildir"
    first = local_state(maildir, folders)
    assert len(first["INBOX"]) == n_messages
    assert first == server_state(m, folders)

    # server side: flag 10, move 10 to Archive, delete 10 (RFC 3501 §6.4.6, §6.4.3, RFC 6851)
    m.select("INBOX")
    typ, data = m.uid("SEARCH", "ALL")
    uids = data[0].split()
    assert m.uid("STORE", b",".join(uids[0:10]), "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert m.uid("MOVE", b",".join(uids[10:20]), "Archive")[0] == "OK"
    assert m.uid("STORE", b",".join(uids[20:30]), "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge()[0] == "OK"

    # local side, on other messages: mark seen, move to Archive, delete
    # the highest UIDs: the server side touched the lowest ones
    def uid_of(f: Path) -> int:
        found = re.search(r",U=(\d+)", f.name)
        return int(found.group(1)) if found else 0
    local = sorted([*(maildir / "INBOX" / "cur").iterdir(), *(maildir / "INBOX" / "new").iterdir()],
                   key=uid_of)
    tail = local[-30:]
    for f in tail[0:10]:  # seen
        base, _, info = f.name.partition(":2,")
        f.rename(maildir / "INBOX" / "cur" / f"{base}:2,{''.join(sorted(set(info + 'S')))}")
    (maildir / "Archive" / "cur").mkdir(parents=True, exist_ok=True)
    for f in tail[10:20]:  # moved: a new file in Archive, UID tag stripped (mbsync docs)
        f.rename(maildir / "Archive" / "cur" / re.sub(r",U=\d+", "", f.name))
    for f in tail[20:30]:
        f.unlink()
    expected_local_ids = {
        k: set(v) for k, v in local_state(maildir, folders).items()}

    mbsync(rc, tmp_path, "2-changes")
    after_local = local_state(maildir, folders)
    after_server = server_state(m, folders)
    m.logout()
    assert after_local == after_server
    all_ids = set(first["INBOX"])
    kept = set(after_local["INBOX"]) | set(after_local["Archive"])
    assert not set(after_local["INBOX"]) & set(after_local["Archive"])
    assert len(kept) == n_messages - 20  # 10 deleted on each side, nothing else lost
    assert kept <= all_ids
    # the local moves arrived on the server under the same Message-ID, once
    assert expected_local_ids["Archive"] <= set(after_server["Archive"])
    assert sum(1 for f in after_server["INBOX"].values() if "\\Flagged" in f) == 10
    assert sum(1 for f in after_server["INBOX"].values() if "\\Seen" in f) >= 10
