"""IMAP transcripts: exact client lines in, exact server lines out, per command family.

In the style of pymap's transcript tests, against the real server over a real socket.
``C:`` lines are sent (``{literal}`` placeholders are not used: literals are written out as
``{n+}`` with their bytes on the next ``C:`` line); ``S:`` lines must match exactly, where
``<n>`` stands for a number that varies between runs (UIDVALIDITY, MODSEQ) and ``<*>`` for
any text. Each transcript works in folders of its own, so they share one node.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.node import BACKENDS, DOMAIN, PASSWORD, Node

IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)
# transcripts of commands that read or write the store on both backends (exact lines: an
# order or a count the database decides shows); the IMAP exchange alone on SQLite
BACKENDS = BACKENDS
BOB = f"bob@{DOMAIN}"
CAPS = ("IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE{auth} NAMESPACE UIDPLUS MOVE SPECIAL-USE "
        "UNSELECT CHILDREN LIST-EXTENDED LIST-STATUS CONDSTORE ESEARCH BINARY APPENDLIMIT=52428800")
PLAIN_CAPS = CAPS.format(auth=" STARTTLS LOGINDISABLED")
TLS_CAPS = CAPS.format(auth=" AUTH=PLAIN")
AUTHED_CAPS = CAPS.format(auth="")
MSG = (b"From: Alice <alice@demo.mssante.fr>\r\nTo: bob@demo.mssante.fr\r\n"
       b"Subject: Compte rendu\r\nMessage-ID: <t1@demo.mssante.fr>\r\n"
       b"Date: Mon, 23 Nov 2026 09:00:00 +0100\r\n\r\nBonjour, resultat normal.\r\n")


QUIET = 0.2  # seconds of silence that end a transcript


def _pattern(line: str) -> re.Pattern[str]:
    text = re.escape(line).replace(re.escape("<n>"), r"\d+").replace(re.escape("<*>"), ".*")
    return re.compile(text + r"\Z")


def run(node: Node, transcript: str, *, tls: bool = True, login: bool = True) -> None:
    port = node.ports["imaps" if tls else "imap"]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        sock = node.client_context().wrap_socket(sock)
    reader = sock.makefile("rb")
    try:
        greeting = reader.readline()
        assert greeting.startswith(b"* OK [CAPABILITY "), greeting
        if login:
            sock.sendall(f'L0 LOGIN {BOB} "{PASSWORD}"\r\n'.encode())
            assert reader.readline().startswith(b"L0 OK"), "login"
        lines = [ln for ln in transcript.strip("\n").split("\n") if ln.strip()]
        for number, line in enumerate(lines, 1):
            kind, text = line[:1], line[3:]
            if kind == "C":
                sock.sendall(text.encode("utf-8").replace(b"\\r\\n", b"\r\n")
                             .replace(b"\\0", b"\0") + b"\r\n")
            elif kind == "L":  # literal bytes, sent as they are (no CRLF added)
                sock.sendall(MSG)
            else:
                try:
                    got = reader.readline()
                except TimeoutError:
                    raise AssertionError(f"line {number}: no reply, expected {text!r}") from None
                assert got.endswith(b"\r\n"), f"line {number}: connection ended: {got!r}"
                got_text = got[:-2].decode("utf-8", "replace")
                assert _pattern(text).match(got_text), \
                    f"line {number}: expected {text!r}, got {got_text!r}"
        sock.settimeout(QUIET)  # nothing may follow the last expected line
        try:
            extra = reader.peek(1)  # what is buffered, else one read
        except TimeoutError:
            extra = b""
        assert extra == b"", f"after line {len(lines)}: unexpected {extra!r}"
    finally:
        sock.close()


@pytest.mark.backends("sqlite")  # protocol only
def test_runner_fails_on_an_unexpected_last_line(running_node: Node) -> None:
    """A reply the transcript does not list fails it, the last one too."""
    with pytest.raises(AssertionError, match=r"unexpected b'a1 OK NOOP"):
        run(running_node, "C: a1 NOOP\n")
    with pytest.raises(AssertionError, match=r"unexpected b'a2 OK NOOP"):
        run(running_node, "C: a1 NOOP\nS: a1 OK NOOP completed\nC: a2 NOOP\n")


@pytest.mark.backends("sqlite")  # protocol only
def test_greeting_starttls_and_capabilities(running_node: Node) -> None:
    run(running_node, f"""
C: a1 CAPABILITY
S: * CAPABILITY {PLAIN_CAPS}
S: a1 OK CAPABILITY completed
C: a2 LOGIN {BOB} x
S: a2 NO [PRIVACYREQUIRED] Use STARTTLS first
C: a3 AUTHENTICATE PLAIN AGJvYgB4
S: a3 NO [PRIVACYREQUIRED] Use STARTTLS first
C: a4 STARTTLS
S: a4 OK Begin TLS negotiation now
""", tls=False, login=False)


@pytest.mark.backends("sqlite")  # protocol only
def test_login_and_authenticate(running_node: Node) -> None:
    run(running_node, f"""
C: a1 CAPABILITY
S: * CAPABILITY {TLS_CAPS}
S: a1 OK CAPABILITY completed
C: a2 AUTHENTICATE CRAM-MD5
S: a2 NO [CANNOT] Unsupported mechanism
C: a3 AUTHENTICATE PLAIN
S: +\x20
C: *
S: a3 BAD Authentication cancelled
C: a4 AUTHENTICATE PLAIN !!!
S: a4 BAD Invalid SASL PLAIN response
C: a5 LOGIN {BOB} {{21+}}
C: {PASSWORD}
S: a5 OK [CAPABILITY {AUTHED_CAPS}] Logged in
C: a6 LOGIN {BOB} x
S: a6 BAD Command not valid in this state
C: a7 LOGOUT
S: * BYE mss IMAP4rev1 server logging out
S: a7 OK LOGOUT completed
""", login=False)


def test_list_namespace_status(running_node: Node) -> None:
    run(running_node, """
C: a1 CREATE T-list/child
S: a1 OK CREATE completed
C: a2 LIST "" T-list*
S: * LIST (\\HasChildren) "/" T-list
S: * LIST (\\HasNoChildren) "/" T-list/child
S: a2 OK LIST completed
C: a3 LIST "" %/child
S: * LIST (\\HasNoChildren) "/" T-list/child
S: a3 OK LIST completed
C: a4 LIST "" ""
S: * LIST (\\Noselect) "/" ""
S: a4 OK LIST completed
C: a5 LIST (SUBSCRIBED) "" "Sent" RETURN (SPECIAL-USE)
S: * LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent
S: a5 OK LIST completed
C: a6 LIST "" (Drafts Junk) RETURN (STATUS (MESSAGES UNSEEN))
S: * LIST (\\HasNoChildren \\Drafts) "/" Drafts
S: * STATUS Drafts (MESSAGES 0 UNSEEN 0)
S: * LIST (\\HasNoChildren \\Junk) "/" Junk
S: * STATUS Junk (MESSAGES 0 UNSEEN 0)
S: a6 OK LIST completed
C: a7 NAMESPACE
S: * NAMESPACE (("" "/")) NIL (("Shared/" "/"))
S: a7 OK NAMESPACE completed
C: a8 STATUS T-list (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)
S: * STATUS T-list (MESSAGES 0 UIDNEXT 1 UIDVALIDITY <n> UNSEEN 0 HIGHESTMODSEQ 1)
S: a8 OK STATUS completed
C: a9 STATUS Nowhere (MESSAGES)
S: a9 NO [NONEXISTENT] No such mailbox
C: b1 CREATE T-list
S: b1 NO [ALREADYEXISTS] Mailbox already exists
C: b2 RENAME T-list/child T-list/renamed
S: b2 OK RENAME completed
C: b3 DELETE T-list
S: b3 NO [INUSE] Mailbox has children, delete them first
C: b4 DELETE T-list/renamed
S: b4 OK DELETE completed
C: b5 UNSUBSCRIBE T-list
S: b5 OK UNSUBSCRIBE completed
C: b6 LSUB "" T-list*
S: * LSUB (\\Noselect \\Subscribed) "/" T-list/renamed
S: b6 OK LSUB completed
C: b8 UNSUBSCRIBE T-list/renamed
S: b8 OK UNSUBSCRIBE completed
C: b9 LSUB "" T-list*
S: b9 OK LSUB completed
C: b7 DELETE INBOX
S: b7 NO [CANNOT] INBOX cannot be deleted
""")


def test_select_append_store_expunge(running_node: Node) -> None:
    size = len(MSG)
    when = "23-Nov-2026 08:00:00 +0000"
    run(running_node, f"""
C: a1 CREATE T-sel
S: a1 OK CREATE completed
C: a2 APPEND T-sel (\\Seen) "23-Nov-2026 09:00:00 +0100" {{{size}+}}
L: message
C:
S: a2 OK [APPENDUID <n> 1] APPEND completed
C: a3 APPEND T-sel {{{size}+}}
L: message
C:
S: a3 OK [APPENDUID <n> 2] APPEND completed
C: a4 APPEND T-nowhere {{{size}+}}
L: message
C:
S: a4 NO [TRYCREATE] Mailbox does not exist
C: a5 SELECT T-sel
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted
S: * 2 EXISTS
S: * 2 RECENT
S: * OK [UNSEEN 2] First unseen
S: * OK [UIDVALIDITY <n>] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: * OK [HIGHESTMODSEQ <n>] Highest
S: a5 OK [READ-WRITE] SELECT completed
C: a6 FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)
S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) RFC822.SIZE {size} INTERNALDATE "{when}")
S: * 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE {size} INTERNALDATE "<*>")
S: a6 OK FETCH completed
C: a7 STORE 2 +FLAGS (\\Deleted $Urgent)
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent \\*)] Flags permitted
S: * 2 FETCH (FLAGS (\\Deleted $Urgent \\Recent))
S: a7 OK STORE completed
C: a8 UID STORE 1 -FLAGS.SILENT (\\Seen)
S: a8 OK UID STORE completed
C: a9 STORE 1 FLAGS (\\Recent)
S: a9 BAD Invalid system flag \\Recent
C: b1 EXPUNGE
S: * 2 EXPUNGE
S: b1 OK EXPUNGE completed
C: b2 UID FETCH 1:* FLAGS
S: * 1 FETCH (UID 1 FLAGS (\\Recent))
S: b2 OK UID FETCH completed
C: b3 EXAMINE T-sel
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS ()] Read-only mailbox
S: * 1 EXISTS
S: * 0 RECENT
S: * OK [UNSEEN 1] First unseen
S: * OK [UIDVALIDITY <n>] UIDs valid
S: * OK [UIDNEXT 3] Predicted next UID
S: * OK [HIGHESTMODSEQ <n>] Highest
S: b3 OK [READ-ONLY] EXAMINE completed
C: b4 STORE 1 +FLAGS (\\Seen)
S: b4 NO [READ-ONLY] Mailbox is read-only
C: b5 UNSELECT
S: b5 OK UNSELECT completed
C: b6 FETCH 1 FLAGS
S: b6 BAD Command not valid in this state
""")


def test_search_and_esearch(running_node: Node) -> None:
    size = len(MSG)
    run(running_node, f"""
C: a1 CREATE T-search
S: a1 OK CREATE completed
C: a2 APPEND T-search (\\Flagged) {{{size}+}}
L: message
C:
S: a2 OK [APPENDUID <n> 1] APPEND completed
C: a3 APPEND T-search {{{size}+}}
L: message
C:
S: a3 OK [APPENDUID <n> 2] APPEND completed
C: a4 SELECT T-search
S: <*>
S: <*>
S: * 2 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a4 OK [READ-WRITE] SELECT completed
C: a5 SEARCH FLAGGED
S: * SEARCH 1
S: a5 OK SEARCH completed
C: a6 UID SEARCH CHARSET UTF-8 BODY "resultat" NOT FLAGGED
S: * SEARCH 2
S: a6 OK UID SEARCH completed
C: a7 UID SEARCH RETURN (MIN MAX COUNT ALL) ALL
S: * ESEARCH (TAG "a7") UID MIN 1 MAX 2 COUNT 2 ALL 1:2
S: a7 OK UID SEARCH completed
C: a8 SEARCH RETURN () SUBJECT "nothing like this"
S: * ESEARCH (TAG "a8")
S: a8 OK SEARCH completed
C: a9 SEARCH CHARSET ISO-2022-KR ALL
S: a9 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset
""")


def test_copy_move_uidplus(running_node: Node) -> None:
    size = len(MSG)
    run(running_node, f"""
C: a1 CREATE T-from
S: a1 OK CREATE completed
C: a2 CREATE T-to
S: a2 OK CREATE completed
C: a3 APPEND T-from {{{size}+}}
L: message
C:
S: a3 OK [APPENDUID <n> 1] APPEND completed
C: a4 APPEND T-from {{{size}+}}
L: message
C:
S: a4 OK [APPENDUID <n> 2] APPEND completed
C: a5 EXAMINE T-from
S: <*>
S: <*>
S: * 2 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a5 OK [READ-ONLY] EXAMINE completed
C: a6 COPY 1:2 T-to
S: a6 OK [COPYUID <n> 1:2 1:2] COPY completed
C: a7 MOVE 1 T-to
S: a7 NO [READ-ONLY] Mailbox is read-only
C: a8 SELECT T-from
S: <*>
S: <*>
S: * 2 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a8 OK [READ-WRITE] SELECT completed
C: a9 UID MOVE 2 T-to
S: * OK [COPYUID <n> 2 3] Moved
S: * 2 EXPUNGE
S: a9 OK UID MOVE completed
C: b1 COPY 1 T-nowhere
S: b1 NO [TRYCREATE] Mailbox does not exist
C: b2 STATUS T-to (MESSAGES UIDNEXT)
S: * STATUS T-to (MESSAGES 3 UIDNEXT 4)
S: b2 OK STATUS completed
""")


def test_condstore(running_node: Node) -> None:
    size = len(MSG)
    run(running_node, f"""
C: a1 CREATE T-cond
S: a1 OK CREATE completed
C: a2 APPEND T-cond {{{size}+}}
L: message
C:
S: a2 OK [APPENDUID <n> 1] APPEND completed
C: a3 ENABLE CONDSTORE
S: * ENABLED CONDSTORE
S: a3 OK ENABLE completed
C: a4 SELECT T-cond
S: <*>
S: <*>
S: * 1 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: * OK [HIGHESTMODSEQ 2] Highest
S: a4 OK [READ-WRITE] SELECT completed
C: a5 STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)
S: a5 OK [MODIFIED 1] Conditional STORE failed
C: a6 STORE 1 (UNCHANGEDSINCE 2) +FLAGS (\\Seen)
S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (3))
S: a6 OK STORE completed
C: a7 FETCH 1:* (FLAGS) (CHANGEDSINCE 2)
S: * 1 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (3))
S: a7 OK FETCH completed
C: a8 FETCH 1:* (FLAGS) (CHANGEDSINCE 3)
S: a8 OK FETCH completed
""")


@pytest.mark.backends("sqlite")  # protocol only
def test_idle_and_bad_input(running_node: Node) -> None:
    run(running_node, """
C: a1 SELECT INBOX
S: * FLAGS (<*>)
S: <*>
S: * 0 EXISTS
S: * 0 RECENT
S: <*>
S: <*>
S: <*>
S: a1 OK [READ-WRITE] SELECT completed
C: a2 IDLE
S: + idling
C: DONE
S: a2 OK IDLE terminated
C: a3 IDLE
S: + idling
C: NOT-DONE
S: a3 BAD Expected DONE
C: a4 FETCH 5:x FLAGS
S: a4 BAD <*>
C: a5 FROB
S: a5 BAD Unknown command
C: a6 UID FROB 1
S: a6 BAD Unknown command
C: a7 NOOP extra
S: a7 BAD Wrong number of arguments
C: a8 CREATE "bad &Jjo!"
S: a8 BAD <*>
C: a9 ID NIL
S: * ID ("name" "mss" "vendor" "mss")
S: a9 OK ID completed
C: b1 FETCH 3 FLAGS
S: b1 BAD Invalid sequence set: no message 3
C: b2 UID FETCH 3 FLAGS
S: b2 OK UID FETCH completed
""")


@pytest.mark.parametrize(("line", "expected"), [(b"a1 LOGIN {5}\r\n", b"+ "),
                                               (b"a1 CAPABILITY\r\n", b"* CAPABILITY ")])
@pytest.mark.backends("sqlite")  # protocol only
def test_preauth_literal_limit(running_node: Node, line: bytes, expected: bytes) -> None:
    """Before login the literal limit is 64 KiB; a larger one is refused unread."""
    sock = running_node.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", running_node.ports["imaps"]), timeout=10))
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b"a0 LOGIN {70000}\r\n")
    assert reader.readline() == b"a0 BAD [TOOBIG] Literal too large\r\n"
    sock.sendall(line)
    reply = reader.readline()
    assert reply.startswith(expected), reply
    sock.close()


def test_fetch_items(running_node: Node) -> None:
    size = len(MSG)
    alice = '(("Alice" NIL "alice" "demo.mssante.fr"))'
    envelope = (f'("Mon, 23 Nov 2026 09:00:00 +0100" "Compte rendu" {alice} {alice} {alice} '
                '((NIL NIL "bob" "demo.mssante.fr")) NIL NIL NIL "<t1@demo.mssante.fr>")')
    structure = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 27 1 NIL NIL NIL NIL)'
    run(running_node, f"""
C: a1 CREATE T-fetch
S: a1 OK CREATE completed
C: a2 APPEND T-fetch {{{size}+}}
L: message
C:
S: a2 OK [APPENDUID <n> 1] APPEND completed
C: a3 SELECT T-fetch
S: <*>
S: <*>
S: * 1 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a3 OK [READ-WRITE] SELECT completed
C: a4 FETCH 1 (ENVELOPE BODYSTRUCTURE)
S: * 1 FETCH (ENVELOPE {envelope} BODYSTRUCTURE {structure})
S: a4 OK FETCH completed
C: a5 FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (TO FROM DATE MESSAGE-ID)] BODY.PEEK[TEXT]<0.7>)
S: * 1 FETCH (BODY[HEADER.FIELDS.NOT (TO FROM DATE MESSAGE-ID)] {{25}}
S: Subject: Compte rendu
S:
S:  BODY[TEXT]<0> {{7}}
S: Bonjour)
S: a5 OK FETCH completed
C: a6 UID FETCH 1 (RFC822.SIZE BODY[1])
S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) RFC822.SIZE {size} BODY[1] {{27}}
S: Bonjour, resultat normal.
S: )
S: a6 OK UID FETCH completed
C: a7 FETCH 1 BODY[9]
S: * 1 FETCH (FLAGS (\\Seen \\Recent) BODY[9] {{0}}
S: )
S: a7 OK FETCH completed
C: a8 FETCH 1 (FLAGS) (CHANGEDSINCE x)
S: a8 BAD Expected a number
C: a9 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])
S: * 1 FETCH (BINARY[1] {{27}}
S: Bonjour, resultat normal.
S:  BINARY.SIZE[1] 27)
S: a9 OK FETCH completed
C: b1 APPEND T-fetch ~{{5+}}
C: a\0b\r\n
S: * 2 EXISTS
S: * 2 RECENT
S: b1 OK [APPENDUID <n> 2] APPEND completed
""")


@pytest.mark.backends("sqlite")  # protocol only
def test_authenticate_continuation(running_node: Node) -> None:
    import base64

    response = base64.b64encode(f"\0{BOB}\0{PASSWORD}".encode()).decode()
    run(running_node, f"""
C: a1 AUTHENTICATE PLAIN
S: +\x20
C: {response}
S: a1 OK [CAPABILITY {AUTHED_CAPS}] Logged in
C: a2 AUTHENTICATE PLAIN
S: a2 BAD Command not valid in this state
""", login=False)


def test_uid_expunge_close_and_modseq_search(running_node: Node) -> None:
    size = len(MSG)
    run(running_node, f"""
C: a1 CREATE T-exp
S: a1 OK CREATE completed
C: a2 APPEND T-exp (\\Deleted) {{{size}+}}
L: message
C:
S: a2 OK [APPENDUID <n> 1] APPEND completed
C: a3 APPEND T-exp (\\Deleted) {{{size}+}}
L: message
C:
S: a3 OK [APPENDUID <n> 2] APPEND completed
C: a4 APPEND T-exp (\\Deleted) {{{size}+}}
L: message
C:
S: a4 OK [APPENDUID <n> 3] APPEND completed
C: a5 SELECT T-exp (CONDSTORE)
S: <*>
S: <*>
S: * 3 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a5 OK [READ-WRITE] SELECT completed
C: a6 UID SEARCH MODSEQ 3
S: * SEARCH 2 3 (MODSEQ 4)
S: a6 OK UID SEARCH completed
C: a7 UID EXPUNGE 2
S: * 2 EXPUNGE
S: a7 OK UID EXPUNGE completed
C: a8 UID SEARCH RETURN (COUNT) DELETED
S: * ESEARCH (TAG "a8") UID COUNT 2
S: a8 OK UID SEARCH completed
C: a9 CLOSE
S: a9 OK CLOSE completed
C: b1 STATUS T-exp (MESSAGES UIDNEXT)
S: * STATUS T-exp (MESSAGES 0 UIDNEXT 4)
S: b1 OK STATUS completed
C: b2 CLOSE
S: b2 BAD Command not valid in this state
""")


@pytest.mark.backends("sqlite")  # protocol only
def test_brackets_in_atoms_and_nul_only_in_literal8(running_node: Node) -> None:
    """RFC 3501 §9: "[" is an ATOM-CHAR (tags and astrings may hold "[" and "]"); a plain
    literal is CHAR8 (no NUL), binary content goes in a literal8 (RFC 3516 §4.1)."""
    run(running_node, """
C: t[1] CREATE T-br[2026]
S: t[1] OK CREATE completed
C: a2 LIST "" T-br[*
S: * LIST (\\HasNoChildren) "/" "T-br[2026]"
S: a2 OK LIST completed
C: a3 STATUS T-br[2026] (MESSAGES)
S: * STATUS "T-br[2026]" (MESSAGES 0)
S: a3 OK STATUS completed
C: a4 APPEND T-br[2026] {5+}
C: a\\0b
C:
S: a4 BAD NUL in literal: send binary content as literal8 ~{n}
C: a5 APPEND T-br[2026] ~{5+}
C: a\\0b
C:
S: a5 OK [APPENDUID <n> 1] APPEND completed
C: a6 STATUS T-br[2026] (MESSAGES)
S: * STATUS "T-br[2026]" (MESSAGES 1)
S: a6 OK STATUS completed
""")


def _append(tag: str, folder: str, message: bytes) -> str:
    """Transcript lines appending *message* (CRLF line ends, ending in CRLF) as LITERAL+."""
    body = message[:-2].decode().replace("\r\n", "\\r\\n")
    return f"C: {tag} APPEND {folder} {{{len(message)}+}}\nC: {body}\nC:\n"


def test_search_addresses_as_envelope_and_qp_padding(running_node: Node) -> None:
    """SEARCH FROM/TO match the addresses as ENVELOPE shows them, comments included (RFC 3501
    §6.4.4); quoted-printable loses the white space ending its lines (RFC 2045 §6.7 rule 3)
    in BINARY and in SEARCH BODY."""
    one = (b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n"
           b"\r\nbody3\r\n")
    two = (b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n"
           b"\r\nbody4\r\n")
    qp = (b"From: a@domain.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
          b"padded  \r\nsoft=  \r\nbreak\t\r\nkept=20\r\n")
    run(running_node, "C: a1 CREATE T-addr\nS: a1 OK CREATE completed\n"
        + _append("a2", "T-addr", one) + "S: a2 OK [APPENDUID <n> 1] APPEND completed\n"
        + _append("a3", "T-addr", two) + "S: a3 OK [APPENDUID <n> 2] APPEND completed\n"
        + _append("a4", "T-addr", qp) + "S: a4 OK [APPENDUID <n> 3] APPEND completed\n"
        + """
C: a5 EXAMINE T-addr
S: <*>
S: <*>
S: * 3 EXISTS
S: <*>
S: <*>
S: <*>
S: <*>
S: <*>
S: a5 OK [READ-ONLY] EXAMINE completed
C: a6 SEARCH FROM user-from@domain.org
S: * SEARCH 1 2
S: a6 OK SEARCH completed
C: a7 SEARCH FROM "RealFrom <user-from@domain.org>"
S: * SEARCH 2
S: a7 OK SEARCH completed
C: a8 SEARCH FROM comment
S: * SEARCH 1
S: a8 OK SEARCH completed
C: a9 SEARCH TO realto
S: * SEARCH 2
S: a9 OK SEARCH completed
C: b1 SEARCH HEADER FROM user-from@domain.org
S: * SEARCH 2
S: b1 OK SEARCH completed
C: b2 FETCH 3 BINARY.PEEK[1]
S: * 3 FETCH (BINARY[1] {26}
S: padded
S: softbreak
S: kept\x20
S: )
S: b2 OK FETCH completed
C: b3 SEARCH BODY softbreak
S: * SEARCH 3
S: b3 OK SEARCH completed
""")


_SELECTED = "S: <*>\nS: <*>\nS: * 4 EXISTS\n" + "S: <*>\n" * 5


def test_condstore_enabled_by_first_use_and_esearch_modseq(running_node: Node) -> None:
    """RFC 7162 §3.1: FETCH MODSEQ, STORE UNCHANGEDSINCE, STATUS HIGHESTMODSEQ and SEARCH
    MODSEQ enable CONDSTORE: `* OK [HIGHESTMODSEQ]` once, then UID and MODSEQ in STORE's and
    an implicit \\Seen's FETCH answers. §3.1.5 / RFC 4731 §3.2: with RETURN of only MIN/MAX
    the MODSEQ is that of the messages returned."""
    appends = "".join(f"C: p{i} APPEND T-cs {{{len(MSG)}+}}\nL: message\nC:\n"
                      f"S: p{i} OK [APPENDUID <n> {i}] APPEND completed\n" for i in range(1, 5))
    run(running_node, "C: a1 CREATE T-cs\nS: a1 OK CREATE completed\n" + appends
        + "C: a2 SELECT T-cs\n" + _SELECTED + """
S: a2 OK [READ-WRITE] SELECT completed
C: a3 FETCH 1 (FLAGS)
S: * 1 FETCH (FLAGS (\\Recent))
S: a3 OK FETCH completed
C: a4 FETCH 1 (MODSEQ)
S: * OK [HIGHESTMODSEQ 5] Highest
S: * 1 FETCH (MODSEQ (2))
S: a4 OK FETCH completed
C: a5 STORE 1 +FLAGS (\\Seen)
S: * 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) MODSEQ (6))
S: a5 OK STORE completed
C: a6 STORE 3 +FLAGS (\\Seen)
S: * 3 FETCH (UID 3 FLAGS (\\Seen \\Recent) MODSEQ (7))
S: a6 OK STORE completed
C: a7 STORE 2 +FLAGS (\\Seen)
S: * 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (8))
S: a7 OK STORE completed
C: a8 SEARCH RETURN (MIN) 1:3 MODSEQ 1
S: * ESEARCH (TAG "a8") MIN 1 MODSEQ 6
S: a8 OK SEARCH completed
C: a9 SEARCH RETURN (MAX) 1:3 MODSEQ 1
S: * ESEARCH (TAG "a9") MAX 3 MODSEQ 7
S: a9 OK SEARCH completed
C: b1 SEARCH RETURN (MIN MAX) 1:3 MODSEQ 1
S: * ESEARCH (TAG "b1") MIN 1 MAX 3 MODSEQ 7
S: b1 OK SEARCH completed
C: b2 SEARCH RETURN () 1:3 MODSEQ 1
S: * ESEARCH (TAG "b2") ALL 1:3 MODSEQ 8
S: b2 OK SEARCH completed
C: b3 SEARCH RETURN (MIN COUNT) 1:3 MODSEQ 1
S: * ESEARCH (TAG "b3") MIN 1 COUNT 3 MODSEQ 8
S: b3 OK SEARCH completed
C: b4 FETCH 4 BODY[TEXT]
S: * 4 FETCH (UID 4 FLAGS (\\Seen \\Recent) BODY[TEXT] {27}
S: Bonjour, resultat normal.
S:  MODSEQ (9))
S: b4 OK FETCH completed
""")
    all_seen = _SELECTED.replace("S: <*>\n" * 5, "S: <*>\n" * 4)  # no UNSEEN line
    run(running_node, "C: a1 SELECT T-cs\n" + all_seen + """
S: a1 OK [READ-WRITE] SELECT completed
C: a2 STATUS T-cs (HIGHESTMODSEQ)
S: * OK [HIGHESTMODSEQ 9] Highest
S: * STATUS T-cs (HIGHESTMODSEQ 9)
S: a2 OK STATUS completed
C: a3 STORE 1 -FLAGS (\\Seen)
S: * 1 FETCH (UID 1 FLAGS () MODSEQ (10))
S: a3 OK STORE completed
""")
    run(running_node, "C: a1 SELECT T-cs\n" + _SELECTED + """
S: a1 OK [READ-WRITE] SELECT completed
C: a2 SEARCH MODSEQ 10
S: * OK [HIGHESTMODSEQ 10] Highest
S: * SEARCH 1 (MODSEQ 10)
S: a2 OK SEARCH completed
C: a3 SEARCH MODSEQ 10
S: * SEARCH 1 (MODSEQ 10)
S: a3 OK SEARCH completed
""")


def test_list_extended_selection_and_return_options(running_node: Node) -> None:
    """RFC 5258 §3.1: unknown selection / return options and RECURSIVEMATCH alone are BAD;
    (SUBSCRIBED RECURSIVEMATCH) lists a parent with a subscribed child that does not match
    with CHILDINFO (§3.5); RFC 6154 §3: selection (SPECIAL-USE) lists special-use mailboxes
    only, RETURN (SPECIAL-USE) every match with its attributes."""
    setup = "".join(f"C: c{i} CREATE T-lx/{n}\nS: c{i} OK CREATE completed\n" for i, n in
                    enumerate(["test1", "test2/test1", "test3", "test7/test7", "test8/test8",
                               "test8/test9"]))
    setup += "".join(f"C: u{i} UNSUBSCRIBE {n}\nS: u{i} OK UNSUBSCRIBE completed\n" for i, n in
                     enumerate(["T-lx", "T-lx/test2", "T-lx/test3", "T-lx/test7",
                                "T-lx/test8"]))
    run(running_node, setup + """
C: b1 LIST (IMAPTEST) "" ""
S: b1 BAD Unknown LIST selection option IMAPTEST
C: b2 LIST (RECURSIVEMATCH) "" *
S: b2 BAD RECURSIVEMATCH needs the SUBSCRIBED selection option
C: b3 LIST (RECURSIVEMATCH REMOTE) "" *
S: b3 BAD RECURSIVEMATCH needs the SUBSCRIBED selection option
C: b4 LIST "" "" RETURN (IMAPTEST)
S: b4 BAD Unknown LIST return option IMAPTEST
C: b5 LIST (REMOTE) "" T-lx/%
S: * LIST (\\HasNoChildren) "/" T-lx/test1
S: * LIST (\\HasChildren) "/" T-lx/test2
S: * LIST (\\HasNoChildren) "/" T-lx/test3
S: * LIST (\\HasChildren) "/" T-lx/test7
S: * LIST (\\HasChildren) "/" T-lx/test8
S: b5 OK LIST completed
C: b6 LIST (SUBSCRIBED RECURSIVEMATCH) "" T-lx/test2% RETURN (CHILDREN)
S: * LIST (\\HasChildren) "/" T-lx/test2 ("CHILDINFO" ("SUBSCRIBED"))
S: b6 OK LIST completed
C: b7 LIST (SUBSCRIBED RECURSIVEMATCH) "" *test7
S: * LIST (\\HasNoChildren \\Subscribed) "/" T-lx/test7/test7
S: b7 OK LIST completed
C: b8 LIST (SUBSCRIBED RECURSIVEMATCH) "" *test8
S: * LIST (\\HasChildren) "/" T-lx/test8 ("CHILDINFO" ("SUBSCRIBED"))
S: * LIST (\\HasNoChildren \\Subscribed) "/" T-lx/test8/test8
S: b8 OK LIST completed
C: b9 LIST (SUBSCRIBED RECURSIVEMATCH) "" (T-lx/test2 T-lx/test2/test1)
S: * LIST (\\HasNoChildren \\Subscribed) "/" T-lx/test2/test1
S: b9 OK LIST completed
C: d1 SUBSCRIBE T-lx/test8
S: d1 OK SUBSCRIBE completed
C: d2 LIST (SUBSCRIBED RECURSIVEMATCH) "" T-lx/test8
S: * LIST (\\HasChildren \\Subscribed) "/" T-lx/test8 ("CHILDINFO" ("SUBSCRIBED"))
S: d2 OK LIST completed
C: d3 LIST (SPECIAL-USE) "" *
S: * LIST (\\HasNoChildren \\Archive) "/" Archive
S: * LIST (\\HasNoChildren \\Drafts) "/" Drafts
S: * LIST (\\HasNoChildren \\Junk) "/" Junk
S: * LIST (\\HasNoChildren \\Sent) "/" Sent
S: * LIST (\\HasNoChildren \\Trash) "/" Trash
S: d3 OK LIST completed
C: d4 LIST "" (Sent T-lx/test1) RETURN (SPECIAL-USE)
S: * LIST (\\HasNoChildren \\Sent) "/" Sent
S: * LIST (\\HasNoChildren) "/" T-lx/test1
S: d4 OK LIST completed
C: d5 LSUB (SUBSCRIBED) "" *
S: d5 BAD LSUB takes no LIST-EXTENDED options
""")


def test_shared_namespace_cannot_be_shadowed(running_node: Node) -> None:
    """RFC 2342 §5: ``Shared/`` is the shared namespace; a personal folder of that name
    (in any case, or below it) would hide it from clients: refused."""
    run(running_node, """
C: a1 CREATE Shared
S: a1 NO [CANNOT] Reserved for the shared namespace
C: a2 CREATE Shared/mine
S: a2 NO [CANNOT] Reserved for the shared namespace
C: a3 CREATE shared/x
S: a3 NO [CANNOT] Reserved for the shared namespace
C: a4 CREATE T-shadow
S: a4 OK CREATE completed
C: a5 RENAME T-shadow SHARED
S: a5 NO [CANNOT] Reserved for the shared namespace
C: a6 LIST "" Shared*
S: a6 OK LIST completed
C: a7 CREATE T-shared-ok/Shared
S: a7 OK CREATE completed
""")


def test_subscriptions_outlive_delete_and_lsub_parents(running_node: Node) -> None:
    """RFC 3501 §6.3.6: DELETE leaves the subscription (a new folder of that name is
    subscribed again); §6.3.9: LSUB with % names an unsubscribed parent as \\Noselect."""
    run(running_node, """
C: a1 CREATE T-sub/kept
S: a1 OK CREATE completed
C: a2 UNSUBSCRIBE T-sub
S: a2 OK UNSUBSCRIBE completed
C: a3 LSUB "" T-sub%
S: * LSUB (\\Noselect) "/" T-sub
S: a3 OK LSUB completed
C: a4 LSUB "" T-sub/%
S: * LSUB (\\HasNoChildren \\Subscribed) "/" T-sub/kept
S: a4 OK LSUB completed
C: a5 LSUB "" T-sub*
S: * LSUB (\\HasNoChildren \\Subscribed) "/" T-sub/kept
S: a5 OK LSUB completed
C: a6 DELETE T-sub/kept
S: a6 OK DELETE completed
C: a7 LSUB "" T-sub*
S: * LSUB (\\Noselect \\Subscribed) "/" T-sub/kept
S: a7 OK LSUB completed
C: a8 LIST (SUBSCRIBED) "" T-sub*
S: * LIST (\\NonExistent \\Subscribed) "/" T-sub/kept
S: a8 OK LIST completed
C: a9 LIST "" T-sub*
S: * LIST (\\HasNoChildren) "/" T-sub
S: a9 OK LIST completed
C: b1 SELECT T-sub/kept
S: b1 NO [NONEXISTENT] No such mailbox
C: b2 CREATE T-sub/kept
S: b2 OK CREATE completed
C: b3 LSUB "" T-sub*
S: * LSUB (\\HasNoChildren \\Subscribed) "/" T-sub/kept
S: b3 OK LSUB completed
C: b4 DELETE T-sub/kept
S: b4 OK DELETE completed
C: b5 DELETE T-sub
S: b5 OK DELETE completed
C: b6 LSUB "" T-su%
S: * LSUB (\\Noselect) "/" T-sub
S: b6 OK LSUB completed
C: b7 UNSUBSCRIBE T-sub/kept
S: b7 OK UNSUBSCRIBE completed
C: b8 LSUB "" T-sub*
S: b8 OK LSUB completed
""")
