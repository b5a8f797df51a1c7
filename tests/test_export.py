"""Reversibility (issue 16 part 6): ``mss mailbox export`` / ``import`` and operator logins.

One node (module scope) whose mailboxes are filled over real IMAP (imaplib APPEND with flags,
keywords and internal dates, in folders with awkward names, messages with body lines that
start with ``From ``/``>From ``, LF-only, no final line end); archives written by the real
CLI, encrypted with age to a key made here, decrypted with pyrage to compare them; the
operator login driven by imaplib (SASL PLAIN with an authzid, RFC 4616; and the
``MAILBOX*OPERATOR`` LOGIN).
"""

from __future__ import annotations

import imaplib
import io
import mailbox as pymailbox
import re
import signal
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrage import x25519

from mss.mailstore.archive import (
    ArchivedMessage,
    folder_dir,
    folder_name,
    mbox_chunks,
    parse_mbox,
)
from tests.node import BACKENDS, CHILD_ENV, DOMAIN, MSS, PASSWORD, REPO, Node, make_node

BACKENDS = BACKENDS  # the round trips, the all-or-nothing import, operator logins: both
SQLITE_ONLY = pytest.mark.backends("sqlite")  # what does not depend on the database
ALICE = f"alice@{DOMAIN}"
OPERATOR_PASSWORD = "operator migration secret"
FOLDERS = ("INBOX", "Archive", "Dossiers/2024.1", "Équipe")
KEYWORDS = ("$Forwarded", "Urgent")


def _utf7(name: str) -> str:
    """RFC 3501 §5.1.3 modified UTF-7 (what an IMAP client sends)."""
    import base64

    out, pending = [], ""
    for ch in name + "\0":
        if ch != "\0" and not (0x20 <= ord(ch) <= 0x7e):
            pending += ch
            continue
        if pending:
            raw = base64.b64encode(pending.encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + raw.replace("/", ",") + "-")
            pending = ""
        if ch != "\0":
            out.append("&-" if ch == "&" else ch)
    return "".join(out)


def _message(i: int, folder: str) -> bytes:
    body = [f"message {i} of {folder}", "From the start of a line", ">From quoted already",
            ">>From twice", "", "end"]
    head = [f"From: Alice <{ALICE}>", f"To: bob@{DOMAIN}", f"Subject: export {i}",
            f"Message-ID: <export{i}@{DOMAIN}>"]
    if i % 5 == 3:  # LF only, no final line end
        return ("\n".join(head) + "\n\n" + "\n".join(body)).encode()
    return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()


FLAG_SETS = ((), ("\\Seen",), ("\\Seen", "\\Flagged"), ("\\Answered", "\\Draft", "Urgent"),
             ("\\Deleted", "$Forwarded"))


def imap(node: Node, user: str = ALICE, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=30)
    m.login(user, password)
    return m


def fill(node: Node, user: str, count_per_folder: int) -> None:
    m = imap(node, user)
    try:
        for f, folder in enumerate(FOLDERS):
            if folder not in ("INBOX", "Archive"):
                assert m.create(_utf7(folder))[0] == "OK", folder
            for i in range(count_per_folder):
                n = f * 100 + i
                flags = FLAG_SETS[n % len(FLAG_SETS)]
                when = time.gmtime(1_700_000_000 + n * 3600)
                typ, data = m.append(_utf7(folder), "(" + " ".join(flags) + ")" if flags else
                                     None, imaplib.Time2Internaldate(time.mktime(when)
                                                                     - time.timezone),
                                     _message(n, folder))
                assert typ == "OK", data
    finally:
        m.logout()


def snapshot(node: Node, user: str) -> dict[str, list[tuple[str, str, bytes]]]:
    """{folder: [(flags sorted, INTERNALDATE, bytes)]} read over IMAP in UID order."""
    m = imap(node, user) if "*" not in user else imap(node, user, OPERATOR_PASSWORD)
    out: dict[str, list[tuple[str, str, bytes]]] = {}
    try:
        for folder in FOLDERS:
            assert m.select(_utf7(folder), readonly=True)[0] == "OK"
            typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            assert typ == "OK"
            rows = []
            for item in data:
                if isinstance(item, tuple):
                    meta = item[0].decode()
                    flags = re.search(r"FLAGS \(([^)]*)\)", meta)
                    date = re.search(r'INTERNALDATE "([^"]+)"', meta)
                    assert flags and date
                    rows.append((" ".join(sorted(f for f in flags.group(1).split()
                                                 if f != "\\Recent")), date.group(1), item[1]))
            out[folder] = rows
    finally:
        m.logout()
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Node]:
    n = make_node(tmp_path_factory.mktemp("export"), sending_limits=False, backend=backend)
    n.start()
    fill(n, ALICE, 6)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def key() -> x25519.Identity:
    return x25519.Identity.generate()


def add_mailbox(node: Node, name: str) -> str:
    address = f"{name}@{DOMAIN}"
    node.cli("mailbox", "add", address, "--type", "PER", "--password-stdin",
             input=PASSWORD + "\n")
    return address


def identity_file(tmp_path: Path, key: x25519.Identity) -> Path:
    path = tmp_path / "key.txt"
    path.write_text(f"# test identity\n{key}\n")
    path.chmod(0o600)
    return path


def decrypt(path: Path, key: x25519.Identity) -> bytes:
    data = path.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    return pyrage.decrypt(data, [key])


def message_count(node: Node, address: str) -> int:
    return int(node.cli_json("mailbox", "show", address)["messages"])


@pytest.mark.parametrize("fmt", ["mbox", "maildir"])
def test_round_trip_is_byte_identical(node: Node, key: x25519.Identity, tmp_path: Path,
                                      fmt: str) -> None:
    """alice -> archive -> a new mailbox -> archive: the two plaintexts are the same bytes,
    and IMAP shows the same messages, flags and internal dates in the same folders."""
    first, second = tmp_path / f"alice.{fmt}.age", tmp_path / f"copy.{fmt}.age"
    out = node.cli_json("mailbox", "export", ALICE, "--format", fmt, "--to", str(first),
                        "--recipient", str(key.to_public()))
    assert out["messages"] == 6 * len(FOLDERS) and out["folders"] == len(FOLDERS)
    assert first.stat().st_mode & 0o777 == 0o600
    copy = add_mailbox(node, f"copy-{fmt}")
    done = node.cli_json("mailbox", "import", copy, str(first), "--identity",
                         str(identity_file(tmp_path, key)))
    assert done["messages"] == 6 * len(FOLDERS)
    # Dossiers/2024.1 and Équipe (Archive is a default); Maildir keeps the empty "Dossiers"
    assert done["folders_created"] == (2 if fmt == "mbox" else 3)
    node.cli("mailbox", "export", copy, "--format", fmt, "--to", str(second),
             "--recipient", str(key.to_public()))
    plain = decrypt(first, key)
    if fmt == "maildir":
        assert [m[:2] for m in tar_members(plain)] == \
            [m[:2] for m in tar_members(decrypt(second, key))]
    assert plain == decrypt(second, key)
    if fmt == "mbox":
        assert plain.count(b"\nFrom MAILER-DAEMON ") + 1 == 6 * len(FOLDERS)
        assert b"\n>From the start of a line" in plain and b"\n>>>From twice" in plain
    else:
        members = tar_members(plain)
        assert sum(1 for name, _, _ in members if "/cur/" in name and not
                   name.endswith("/")) == 6 * len(FOLDERS)
    assert snapshot(node, copy) == snapshot(node, ALICE)
    records = node.audit("--event", "admin.mailbox.import")
    assert any(r.get("mailbox") == copy and r["detail"]["messages"] == 6 * len(FOLDERS)
               for r in records)


def tar_members(data: bytes) -> list[tuple[str, int, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        out = []
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            out.append((member.name, member.mtime if member.isfile() else 0,
                        handle.read() if handle else None))
        return out


@SQLITE_ONLY
def test_maildir_layout(node: Node, key: x25519.Identity, tmp_path: Path) -> None:
    """Maildir++: INBOX at the root, ".Dossiers.2024%2E1", flags letters, dovecot-keywords."""
    target = tmp_path / "a.tar.age"
    node.cli("mailbox", "export", ALICE, "--format", "maildir", "--to", str(target),
             "--recipient", str(key.to_public()))
    members = {name: data for name, _, data in tar_members(decrypt(target, key))}
    assert "Maildir/.Dossiers.2024%2E1/cur/" in members or \
        "Maildir/.Dossiers.2024%2E1/cur" in members
    keywords = members["Maildir/dovecot-keywords"]
    assert keywords == b"0 $Forwarded\n1 Urgent\n"
    names = sorted(n for n in members if n.startswith("Maildir/cur/"))
    assert names[1].endswith(":2,S") and names[2].endswith(":2,FS")
    assert names[3].endswith(":2,DRb") and names[4].endswith(":2,Ta")


@SQLITE_ONLY
def test_import_foreign_mbox_and_maildir(node: Node, tmp_path: Path) -> None:
    """An mbox written by Python's mailbox module (Status/X-Status headers) and a Maildir
    directory: messages, flags and dates taken in (plain files, no identity)."""
    path = tmp_path / "foreign.mbox"
    box = pymailbox.mbox(str(path))
    for i, (status, x_status) in enumerate((("RO", ""), ("O", "F"), ("RO", "A"))):
        msg = pymailbox.mboxMessage(_message(900 + i, "foreign"))
        msg.set_from("someone@example.org", time.gmtime(1_600_000_000 + i))
        msg["Status"], msg["X-Status"] = status, x_status
        box.add(msg)
    box.close()
    target = add_mailbox(node, "foreign")
    out = node.cli_json("mailbox", "import", target, str(path), "--folder", "Archive")
    assert out["messages"] == 3 and out["format"] == "mbox"
    maildir = pymailbox.Maildir(str(tmp_path / "md"), create=True)
    message = pymailbox.MaildirMessage(_message(950, "md"))
    message.set_flags("FS")
    maildir.add(message)
    maildir.close()
    assert node.cli_json("mailbox", "import", target, str(tmp_path / "md"))["messages"] == 1
    m = imap(node, target)
    try:
        m.select("Archive", readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS INTERNALDATE)")
        flags = [set(re.search(rb"FLAGS \(([^)]*)\)", d).group(1).split())  # type: ignore
                 - {b"\\Recent"} for d in data]
        assert flags == [{b"\\Seen"}, {b"\\Flagged"}, {b"\\Seen", b"\\Answered"}]
        assert b"13-Sep-2020 12:26:40 +0000" in data[0]
        m.select("INBOX", readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
        assert b"\\Flagged \\Seen" in data[0], data
    finally:
        m.logout()


def test_malformed_mbox_imports_nothing(node: Node, tmp_path: Path) -> None:
    target = add_mailbox(node, "malformed")
    good = b"".join(b"From a@b Thu Jan  1 00:00:00 2024\nSubject: %d\n\nbody\n\n" % i
                    for i in range(2))
    cases = {
        "message 3: does not start with a header field": good + b"From a@b Thu Jan  1 00:00:00 "
        b"2024\nnot a header\n\nbody\n",
        "message 2: From_ line has no date": good[:len(good) // 2] + b"From nobody\nA: b\n\n",
        "message 1: neither an mbox (no From_ line) nor a Maildir tar": b"Subject: x\n\nb\n",
    }
    for expected, data in cases.items():
        path = tmp_path / "bad.mbox"
        path.write_bytes(data)
        proc = node.cli("mailbox", "import", target, str(path), check=False)
        assert proc.returncode == 2, proc.stdout
        assert expected in proc.stderr and "nothing imported" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert message_count(node, target) == 0
    refused = node.audit("--event", "admin.mailbox.import")
    assert any(r.get("mailbox") == target and r["outcome"] != 0 and "message 3" in r["reason"]
               for r in refused)


@SQLITE_ONLY
def test_encrypted_import_needs_the_right_identity(node: Node, key: x25519.Identity,
                                                   tmp_path: Path) -> None:
    archive = tmp_path / "a.age"
    node.cli("mailbox", "export", ALICE, "--format", "mbox", "--to", str(archive),
             "--recipient", str(key.to_public()))
    target = add_mailbox(node, "wrongkey")
    proc = node.cli("mailbox", "import", target, str(archive), check=False)
    assert proc.returncode == 2 and "--identity" in proc.stderr
    other = identity_file(tmp_path, x25519.Identity.generate())
    proc = node.cli("mailbox", "import", target, str(archive), "--identity", str(other),
                    check=False)
    assert proc.returncode == 2 and "does not decrypt" in proc.stderr, proc.stderr
    truncated = tmp_path / "cut.age"
    truncated.write_bytes(archive.read_bytes()[:-100])
    proc = node.cli("mailbox", "import", target, str(truncated), "--identity",
                    str(identity_file(tmp_path, key)), check=False)
    assert proc.returncode == 2 and "nothing imported" in proc.stderr, proc.stderr
    assert message_count(node, target) == 0


@SQLITE_ONLY
def test_export_bad_input(node: Node, key: x25519.Identity, tmp_path: Path) -> None:
    target = tmp_path / "x.age"
    recipient = str(key.to_public())
    for args, expected in (
            (("nobody@" + DOMAIN, "--format", "mbox", "--to", str(target), "--recipient",
              recipient), "no mailbox"),
            ((ALICE, "--format", "pst", "--to", str(target), "--recipient", recipient),
             "--format"),
            ((ALICE, "--format", "mbox", "--to", str(target), "--recipient", "age1nope"),
             "recipient"),
            ((ALICE, "--format", "mbox", "--to", str(tmp_path / "no" / "x"), "--recipient",
              recipient), "no directory")):
        proc = node.cli("mailbox", "export", *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout)
        assert expected in proc.stderr, proc.stderr
    target.write_bytes(b"keep")
    proc = node.cli("mailbox", "export", ALICE, "--format", "mbox", "--to", str(target),
                    "--recipient", recipient, check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr and target.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.age"]


@SQLITE_ONLY
def test_failed_export_leaves_no_file(node: Node, key: x25519.Identity, tmp_path: Path) -> None:
    """A message that does not decrypt half-way: exit 2, nothing under the final name and
    no temporary file left; the failure audited."""
    victim = add_mailbox(node, "tampered")
    fill_inbox(node, victim, 400, tmp_path / "source.mbox")
    database = node.data_dir / "mss.db"
    with sqlite3.connect(database) as conn:
        (mailbox_id,) = conn.execute("SELECT id FROM mailboxes WHERE address = ?",
                                     (victim,)).fetchone()
        (store_id, blob) = conn.execute(
            "SELECT id, body_blob FROM messages WHERE mailbox_id = ? ORDER BY uid "
            "LIMIT 1 OFFSET 300", (mailbox_id,)).fetchone()
        conn.execute("UPDATE messages SET body_blob = ? WHERE id = ?",
                     (blob[:-1] + bytes([blob[-1] ^ 1]), store_id))
    target = tmp_path / "out.age"
    proc = node.cli("mailbox", "export", victim, "--format", "mbox", "--to", str(target),
                    "--recipient", str(key.to_public()), check=False)
    assert proc.returncode == 2 and store_id in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert any(r.get("mailbox") == victim and r["outcome"] != 0
               for r in node.audit("--event", "admin.mailbox.export"))


def fill_inbox(node: Node, user: str, count: int, scratch: Path) -> None:
    """*count* messages in *user*'s INBOX by one plain mbox import (one transaction: an
    APPEND each would cost a commit each)."""
    with scratch.open("wb") as out:
        for i in range(count):
            out.write(b"From a@b Thu Jan  1 00:00:00 2024\r\nSubject: %d\r\n\r\n"
                      b"message %d\r\n\r\n" % (i, i))
    assert node.cli_json("mailbox", "import", user, str(scratch))["messages"] == count
    scratch.unlink()


# --------------------------------------------------------------------------- operators

@SQLITE_ONLY
def test_operator_cli(node: Node) -> None:
    proc = node.cli("operator", "add", "migration", check=False)
    assert proc.returncode == 2 and "--password-stdin" in proc.stderr
    proc = node.cli("operator", "add", "bad@name", "--password-stdin",
                    input=OPERATOR_PASSWORD + "\n", check=False)
    assert proc.returncode == 2 and "invalid operator name" in proc.stderr
    proc = node.cli("operator", "add", "short", "--password-stdin", input="x\n", check=False)
    assert proc.returncode == 2 and "shorter than 12" in proc.stderr
    node.cli("operator", "add", "temp", "--password-stdin", input=OPERATOR_PASSWORD + "\n")
    proc = node.cli("operator", "add", "temp", "--password-stdin",
                    input=OPERATOR_PASSWORD + "\n", check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert [o["name"] for o in node.cli_json("operator", "list")] == ["temp"] or \
        "temp" in [o["name"] for o in node.cli_json("operator", "list")]
    node.cli("operator", "remove", "temp")
    assert "temp" not in [o["name"] for o in node.cli_json("operator", "list")]
    proc = node.cli("operator", "remove", "temp", check=False)
    assert proc.returncode == 2 and "no operator" in proc.stderr
    events = [r["event"] for r in node.audit("--event", "admin.operator.add")]
    assert events.count("admin.operator.add") >= 1
    assert node.audit("--event", "admin.operator.remove")


def test_operator_logs_in_as_the_mailbox(node: Node) -> None:
    """PLAIN with authzid = alice, authcid = the operator: alice's folders; the login and
    every record of the session name the operator; a wrong password or an unknown mailbox
    is refused; MAILBOX*OPERATOR with LOGIN works the same."""
    node.cli("operator", "add", "ops", "--password-stdin", input=OPERATOR_PASSWORD + "\n")
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=30)
    typ, _ = m.authenticate("PLAIN", lambda _: f"{ALICE}\0ops\0{OPERATOR_PASSWORD}".encode())
    assert typ == "OK"
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 6
    m.logout()
    for response in (f"{ALICE}\0ops\0wrong password!", f"nobody@{DOMAIN}\0ops\0"
                     f"{OPERATOR_PASSWORD}", f"{ALICE}\0nobody\0{OPERATOR_PASSWORD}"):
        m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"],
                              ssl_context=node.client_context(), timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.authenticate("PLAIN", lambda _, r=response: r.encode())
        m.logout()
    assert snapshot(node, f"{ALICE}*ops")["INBOX"] == snapshot(node, ALICE)["INBOX"]
    logins = node.audit("--event", "imap.delegated")
    assert any(r["actor"] == "operator:ops" and r.get("mailbox") == ALICE
               and r["detail"]["operator"] == "ops" for r in logins)
    fetched = node.audit("--event", "imap.fetch")
    assert any(r["actor"] == "operator:ops" and r.get("mailbox") == ALICE for r in fetched)
    failed = [r for r in node.audit("--event", "imap.login")
              if r["actor"] == "operator:ops" and r["outcome"] != 0]
    assert len(failed) == 2  # the wrong password and the unknown mailbox


# --------------------------------------------------------------------------- the formats

_HEADER = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,10}: [ -~]{0,30}\Z")
_LINE = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
                  st.sampled_from([b"From x", b">From y", b">>From z", b"From ", b">", b""]))


@st.composite
def _messages(draw: st.DrawFn) -> list[ArchivedMessage]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        lines = [draw(_HEADER), b"", *draw(st.lists(_LINE, max_size=8))]
        data = eol.join(lines) + draw(st.sampled_from([eol, b""]))
        flags = tuple(draw(st.sets(st.sampled_from(
            ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$Label", "kw"]))))
        folder = draw(st.sampled_from(["INBOX", "Archive", "a.b/c%d", "Équipe"]))
        out.append(ArchivedMessage(folder, flags, float(draw(st.integers(0, 2**31))), data))
    return out


def _canonical(m: ArchivedMessage) -> tuple[str, frozenset[str], float, bytes]:
    return m.folder, frozenset(m.flags), m.internal_date, m.data


@settings(max_examples=300, deadline=None)
@given(_messages())
def test_mbox_round_trip_property(messages: list[ArchivedMessage]) -> None:
    """Any messages starting with a header field: mbox_chunks then parse_mbox gives them
    back exactly (bytes, folder, flags, date), whatever their lines and line ends."""
    stream = io.BytesIO(b"".join(mbox_chunks(messages)))
    assert [_canonical(m) for m in parse_mbox(stream)] == [_canonical(m) for m in messages]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["INBOX", "Archive", "a.b/c%d", "x/y.z", "%2E"]),
                min_size=1, max_size=5))
def test_maildir_folder_names_round_trip(names: list[str]) -> None:
    for name in names:
        directory = folder_dir(name)
        assert directory == "Maildir" if name == "INBOX" else \
            folder_name(directory.removeprefix("Maildir/")) == name


@SQLITE_ONLY
def test_interrupted_export_leaves_no_file(node: Node, key: x25519.Identity,
                                           tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while the archive is being written: the `.part` file is removed,
    nothing under the final name. The mailbox (30 MB) is filled by a plain mbox import."""
    big = add_mailbox(node, "big")
    source = tmp_path / "big.mbox"
    line = b"x" * 76 + b"\r\n"
    with source.open("wb") as out:
        for i in range(600):
            out.write(b"From a@b Thu Jan  1 00:00:00 2024\r\nSubject: %d\r\n\r\n" % i
                      + line * 650 + b"\r\n")
    assert node.cli_json("mailbox", "import", big, str(source))["messages"] == 600
    source.unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "big.age"
    proc = subprocess.Popen([*MSS, "--config", str(node.config), "mailbox", "export", big,
                             "--format", "mbox", "--to", str(target), "--recipient",
                             str(key.to_public())], cwd=REPO, env=CHILD_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".part") and p.stat().st_size > 0
                  for p in out_dir.iterdir()):
        assert proc.poll() is None, "the export ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the export ended before it could be interrupted"
    assert proc.returncode == 130, (proc.returncode, err)  # mss.cli: "aborted"
    assert list(out_dir.iterdir()) == []
