"""The IMAP fast paths of issue 21 give what the plain paths give.

- a folder snapshot brought up to date from the rows changed since (not read whole) after
  deliveries, flag changes and expunges by other processes, checked against the database,
  and SELECT / FETCH of real sessions after each;
- the metadata/ENVELOPE FETCH rendered from cached envelopes, byte for byte the answer
  rendered from the decrypted messages (the first FETCH), \\Recent and MODSEQ included;
- SEARCH TEXT/BODY's quick test of the bytes never drops a match the decoded text holds.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from mss.app import open_app
from mss.mailstore import folders, mailboxes, messages
from mss.mailstore.snapshots import SnapshotCache
from proxy.imap.mime import parse_message
from proxy.imap.search import Body, SearchProgram, byte_views
from proxy.imap.tokens import MessageMeta
from tests.imap_corpus import CORPUS
from tests.node import DOMAIN, PASSWORD, Node, deliver_from_this_process

BOB = f"bob@{DOMAIN}"
IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)


def message(subject: str, body: str = "Bonjour.\n") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"alice@{DOMAIN}", BOB, subject
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def imaps(node: Node) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=10)
    m.login(BOB, PASSWORD)
    return m


@pytest.fixture(scope="module")
def folder_db(running_node: Node) -> Iterator[tuple[object, int, int]]:
    """(app, bob's mailbox id, INBOX's id) of the running node, opened in this process."""
    app = open_app(running_node.config)
    with app.engine.connect() as conn:
        bob = mailboxes.require_mailbox(conn, BOB)
        inbox = folders.folder_by_name(conn, app.keyring, bob.id, "INBOX")
        assert inbox is not None
    yield app, bob.id, inbox.id
    app.engine.dispose()
    app.reader.dispose()


def _truth(app: object, mailbox_id: int) -> tuple[folders.Folder, list[messages.Row]]:
    with app.engine.connect() as conn:  # type: ignore[attr-defined]
        folder = folders.folder_by_name(conn, app.keyring, mailbox_id, "INBOX")  # type: ignore[attr-defined]
        assert folder is not None
        return folder, messages.rows(conn, folder.id)


def _store(app: object, folder_id: int, uids: list[int], sign: str, flags: tuple[str, ...]
           ) -> None:
    with app.engine.begin() as conn:  # type: ignore[attr-defined]
        messages.store_flags(conn, folder_id, uids, sign, flags, lambda _: [])


def _expunge(app: object, folder_id: int) -> None:
    with app.engine.begin() as conn:  # type: ignore[attr-defined]
        messages.expunge(conn, folder_id, None, lambda gone: [])


def _session_view(node: Node) -> tuple[int, int | None, set[str], dict[int, set[str]]]:
    """What a new session's SELECT and UID FETCH say: EXISTS, UNSEEN, FLAGS, uid -> flags."""
    m = imaps(node)
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK"
        exists = int(data[0])
        unseen = m.untagged_responses.get("UNSEEN", [None])[0]
        flags_line = m.untagged_responses["FLAGS"][-1].decode()
        typ, data = m.uid("FETCH", "1:*", "(FLAGS)") if exists else ("OK", [])
        assert typ == "OK"
        seen: dict[int, set[str]] = {}
        for item in data:
            if not isinstance(item, bytes):
                continue
            found = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)", item)
            assert found is not None, item
            uid = int(found.group(1) or found.group(4))
            text = (found.group(2) if found.group(1) else found.group(3)).decode()
            seen[uid] = set(text.split()) - {"\\Recent"}
        return exists, int(unseen) if unseen else None, set(flags_line.strip("()").split()), seen
    finally:
        m.logout()


def _check(node: Node, app: object, mailbox_id: int) -> None:
    folder, rows = _truth(app, mailbox_id)
    exists, unseen, flags, seen = _session_view(node)
    assert exists == len(rows)
    first = next((i for i, r in enumerate(rows, 1) if "\\Seen" not in r.flags), None)
    assert unseen == first
    assert {f for r in rows for f in r.flags if not f.startswith("\\")} <= flags
    assert seen == {r.uid: set(r.flags) for r in rows}


def test_snapshot_follows_other_processes_changes(running_node: Node,
                                                  folder_db: tuple[object, int, int]) -> None:
    app, mailbox_id, inbox_id = folder_db
    for i in range(4):
        deliver_from_this_process(running_node, BOB, message(f"first {i}"))
    cache = SnapshotCache()

    def cached() -> list[messages.Row]:
        folder, rows = _truth(app, mailbox_id)
        with app.engine.connect() as conn:  # type: ignore[attr-defined]
            snap = cache.get(conn, folder)
        assert list(snap.rows) == rows
        assert snap.first_unseen == next(
            (i for i, r in enumerate(rows, 1) if "\\Seen" not in r.flags), None)
        assert snap.keywords == {f for r in rows for f in r.flags if not f.startswith("\\")}
        return rows

    rows = cached()
    _check(running_node, app, mailbox_id)  # the serving process's snapshot taken too
    assert (cache.scans, cache.updates) == (1, 0)

    deliver_from_this_process(running_node, BOB, message("second"))  # new rows only
    cached()
    _check(running_node, app, mailbox_id)
    assert (cache.scans, cache.updates) == (1, 1)

    _store(app, inbox_id, [rows[0].uid, rows[2].uid], "+", ("\\Seen", "$Label1"))  # flags
    cached()
    _check(running_node, app, mailbox_id)
    _store(app, inbox_id, [rows[0].uid], "-", ("$Label1",))  # one keyword user left
    _store(app, inbox_id, [rows[2].uid], "-", ("$Label1",))  # none: counted again
    assert cached() and cache.updates == 3  # both changes read at once
    _check(running_node, app, mailbox_id)

    _store(app, inbox_id, [rows[1].uid], "+", ("\\Deleted",))
    _expunge(app, inbox_id)  # a row gone without a modseq: the count tells, full read
    after = cached()
    assert rows[1].uid not in {r.uid for r in after}
    assert cache.scans == 2
    _check(running_node, app, mailbox_id)

    deliver_from_this_process(running_node, BOB, message("third"))
    _store(app, inbox_id, [after[-1].uid], "+", ("\\Flagged",))
    cached()
    assert cache.updates == 4
    _check(running_node, app, mailbox_id)


def _fetch_lines(node: Node, command: str) -> list[bytes]:
    """The untagged lines of *command* in a new session that EXAMINEs INBOX (read-only:
    it claims no \\Recent message, so every such session reports the same flags)."""
    m = imaps(node)
    try:
        assert m.select("INBOX", readonly=True)[0] == "OK"
        tag = m._new_tag()
        m.send(tag + b" " + command.encode() + b"\r\n")
        lines = []
        while True:
            line = m._get_line()
            if line.startswith(tag):
                assert b" OK " in line, line
                return lines
            lines.append(line)
    finally:
        m.logout()


def test_cached_envelope_fetch_is_the_decrypted_one(running_node: Node) -> None:
    for i in range(3):
        deliver_from_this_process(running_node, BOB, message(f"R\u00e9sultat {i}", "Texte.\n"))
    commands = ["UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
                "FETCH 1:* ALL", "FETCH 1:* FAST", "UID FETCH 1:* (ENVELOPE UID MODSEQ)",
                "UID FETCH 1:* (FLAGS ENVELOPE) (CHANGEDSINCE 1)"]
    first = [_fetch_lines(running_node, c) for c in commands]  # envelopes decrypted
    again = [_fetch_lines(running_node, c) for c in commands]  # from the cache
    assert first == again
    assert all(first)
    last = first[0][-1]
    assert re.fullmatch(rb"\* \d+ FETCH \(UID \d+ FLAGS \(\\Recent\) INTERNALDATE "
                        rb'"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d \+0000" RFC822.SIZE \d+ '
                        rb"ENVELOPE \(.*\)\)", last), last  # unclaimed: \Recent (EXAMINE)
    changed = first[4][-1]  # UID FETCH: UID first; CHANGEDSINCE: MODSEQ last
    assert re.fullmatch(rb"\* \d+ FETCH \(UID \d+ FLAGS \(.*\) ENVELOPE \(.*\) "
                        rb"MODSEQ \(\d+\)\)", changed), changed

    # a session's own \Recent messages (claimed by its SELECT) in the cached answer
    deliver_from_this_process(running_node, BOB, message("recent"))
    m = imaps(running_node)
    try:
        assert m.select("INBOX")[0] == "OK"
        typ, data = m.fetch("*", "(FLAGS ENVELOPE)")
        assert typ == "OK" and b"\\Recent" in data[0]
        typ, again_data = m.fetch("*", "(FLAGS ENVELOPE)")  # cached now: the same answer
        assert again_data == data
    finally:
        m.logout()


# ------------------------------------------------------------------ SEARCH's quick test

def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


TRICKY = {
    # a word cut by a quoted-printable soft line break, another behind =XX escapes
    "qp": _crlf("Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: "
                "quoted-printable\n\nordon=\nnance r=C3=A9sultat pre=3Dscription\nab==\n41 "
                "padded=  \nline\n"),
    "qp-upper": _crlf('Content-Type: text/plain; charset="UTF-8"\nContent-Transfer-'
                      "Encoding: Quoted-Printable\n\nCARDIO=\nLOGIE =41NALYSE\n"),
    # padded soft breaks (the exact decoding), padding elsewhere (binascii.a2b_qp alone)
    "qp-padded": _crlf("Content-Transfer-Encoding: quoted-printable\n\nordon=  \nnance car=\t"
                       "\ndio\n"),
    "qp-padding": _crlf("Content-Transfer-Encoding: quoted-printable\n\nordo  \nnance =4  \n"
                        "x=41b\n=3D=\n3D\n"),
    "base64": _crlf("Content-Transfer-Encoding: base64\n\nb3Jkb25uYW5jZSBzZWNyZXRl\n"),
    "encoded-word": _crlf("Subject: =?utf-8?b?b3Jkb25uYW5jZQ==?=\n\nbody\n"),
    "eightbit": _crlf("Content-Type: text/plain; charset=utf-8\n\nstra\u00dfe \ufb01chier "
                      "\u212aelvin\n"),
    "latin1": b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nstra\xdfe\r\n",
    "utf7": _crlf("Content-Type: text/plain; charset=utf-7\n\n+AE4-OM\n"),
    "utf16": b"Content-Type: text/plain; charset=utf-16-le\r\n\r\nN\x00O\x00M\x00\r\n",
    "charset-in-text": _crlf("Content-Type: text/plain; charset=utf-7\n\ncharset=utf-8 "
                             "+AE4-OM\n"),
    "folded": _crlf("Subject: one\n two\nX-Colon:value\n\nbody text\n"),
    "plain": _crlf("Subject: compte rendu\n\nconsultation de suivi\n"),
}


def _needles(raw: bytes) -> set[str]:
    parsed = parse_message(raw)
    text = parsed.header_text(all_parts=True).casefold() + "\n" + \
        parsed.text_for_search().casefold()
    words = set(re.findall(r"\S+", text))
    out = {"", "nom", "ss", "fi", "kelvin", "ordonnance", "cardiologie", "analyse",
           "prescription", "pre=scription", "a=41", "aba", "paddedline", "subject:",
           "x-colon:", "onetwo", "one two", "absent-word", "=3d", "=41", "cardio",
           "xab", "=4", "==", "=3d3d", "=3"}
    for w in sorted(words)[:40]:  # bounded: a few hundred checks per message at most
        out.add(w)
        out.update(w[i:i + 4] for i in range(0, min(len(w), 24), 3))
    return out


@pytest.mark.parametrize("name", sorted({**TRICKY, **CORPUS}))
def test_quick_test_never_drops_a_match(name: str) -> None:
    raw = {**TRICKY, **CORPUS}[name]
    meta = MessageMeta(1, 1, (), 0.0, len(raw), 1)
    parsed = parse_message(raw)  # its decoded texts computed once, kept by the object
    header = parsed.header_text(all_parts=True).casefold()
    body = parsed.text_for_search().casefold()
    for needle in _needles(raw):
        for with_header in (True, False):
            expected = (with_header and needle in header) or needle in body
            got = SearchProgram(Body(needle, with_header)).matches(
                meta, largest_seq=1, largest_uid=1, load=lambda: parsed)
            assert got == expected, (name, needle, with_header)


def test_quick_test_applies_only_where_bytes_tell() -> None:
    for name in ("base64", "encoded-word", "eightbit", "latin1", "utf7", "utf16",
                 "charset-in-text"):
        assert byte_views(TRICKY[name]) is None, name
    assert byte_views(TRICKY["plain"]) is not None
    assert byte_views(TRICKY["qp"]) is None  # =C3=A9: not ASCII once decoded
    assert len(byte_views(TRICKY["qp-upper"]) or ()) == 2  # the bytes, the decoded view
    assert b"ordonnance" in (byte_views(TRICKY["qp-padded"]) or (b"",))[-1]
