"""The IMAP command reader and tokeniser: unit cases, hypothesis (any bytes -> a reply, no
crash, no hang), and the same property against the real server over a socket."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mss.mailstore.messages import SYSTEM_FLAGS
from proxy.imap.commands import COMMANDS
from proxy.imap.fetch import internal_date
from proxy.imap.mailbox_args import AppendArgs, SelectArgs
from proxy.imap.message_args import StoreArgs
from proxy.imap.names import encode_name
from proxy.imap.parser import (
    MAX_NESTING,
    Command,
    CommandError,
    CommandReader,
    LineBuffer,
    LineTooLong,
    LiteralTooLarge,
    parse_command,
)
from proxy.imap.seqset import SequenceSet
from proxy.imap.tokens import Atom, ImapParseError, Token
from tests.node import DOMAIN, PASSWORD, Node

IN_PROCESS = True  # running_node served in a thread of this process (tests/conftest.py)


def parse(line: bytes, *literals: bytes) -> Command:
    parts = line.split(b"\r\n")
    framed: list[bytes] = []
    for i, part in enumerate(parts):
        framed.append(part)
        if i < len(literals):
            framed.append(literals[i])
    return parse_command(framed)


def test_tokens_of_a_fetch() -> None:
    cmd = parse(b"a1 UID FETCH 1:*,5 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> "
                b"BODY[] BODY[1.2.MIME])")
    assert cmd.tag == "a1" and cmd.name == "UID FETCH"
    assert cmd.args == [Atom("1:*,5"), [
        Atom("FLAGS"),
        Atom("BODY.PEEK", section=(Atom("HEADER.FIELDS"), [Atom("FROM"), Atom("TO")]),
             partial=(0, 100)),
        Atom("BODY", section=()),
        Atom("BODY", section=(Atom("1.2.MIME"),)),
    ]]


def test_strings_literals_and_flags() -> None:
    cmd = parse(b'a2 APPEND "Sent items" (\\Seen $Label1) {5}\r\n', b"hello")
    assert cmd.args == [b"Sent items", [Atom("\\Seen"), Atom("$Label1")], b"hello"]
    cmd = parse(b'a3 LOGIN {3+}\r\n "p\\"w"', b"bob")
    assert cmd.args == [b"bob", b'p"w']
    assert parse(b'a4 LIST "" %').args == [b"", Atom("%")]
    assert parse(b"a5 noop").name == "NOOP"


@pytest.mark.parametrize(("line", "text"), [
    (b"", "Missing or invalid tag"),
    (b"+tag NOOP", "Missing or invalid tag"),
    (b"a1", "Missing space"),
    (b"a1 LOGIN \"x", "Unterminated quoted string"),
    (b"a1 LOGIN \"a\\b\"", "Invalid escape in quoted string"),
    (b"a1 FETCH 1 (FLAGS", "Unterminated list"),
    (b"a1 FETCH 1 BODY[]<5.0>", "Invalid partial"),
    (b"a1 NOOP ", "Missing argument"),
    (b"a1 NOOP  x", "Extra space"),
    (b"a1 LOGIN {5}x", "Invalid literal"),
    (b'a1 LOGIN "a\0b" c', "NUL in quoted string"),
    (b"a1 NOOP " + b"(" * 900 + b")" * 900, "Too many nested parentheses"),
    (b"a1 SEARCH " + b"(" * 65 + b"ALL" + b")" * 65, "Too many nested parentheses"),
])
def test_syntax_errors_are_precise(line: bytes, text: str) -> None:
    with pytest.raises(CommandError, match=text.replace("[", r"\[")):
        parse(line)


def test_nesting_up_to_the_bound_is_accepted() -> None:
    cmd = parse(b"a1 SEARCH " + b"(" * MAX_NESTING + b"ALL" + b")" * MAX_NESTING)
    inner = cmd.args[0]
    for _ in range(MAX_NESTING - 1):
        assert isinstance(inner, list)
        inner = inner[0]
    assert inner == [Atom("ALL")]


# RFC 3501 §9 ASTRING-CHAR: ATOM-CHAR or "]" ("[" included); "{" left out (a literal)
_ASTRING_CHAR = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if chr(c) not in '(){%*"\\'])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ASTRING_CHAR, min_size=1, max_size=20))
def test_astring_chars_are_one_atom(text: str) -> None:
    """Any run of ASTRING-CHARs is one atom argument and, without "+", a tag; only a fetch
    attribute name right before "[" starts a section."""
    if text.split("[", 1)[0].upper() in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
                                         "BINARY.SIZE") and "[" in text:
        return
    assert parse(b"a1 CREATE " + text.encode()).args == [Atom(text)]
    tag = text.replace("+", "x")
    assert parse(tag.encode() + b" NOOP").tag == tag


def test_nul_only_in_literal8() -> None:
    """RFC 3501 §9: a literal is CHAR8 (no NUL); RFC 3516 §4.1: literal8 may hold NUL."""
    with pytest.raises(CommandError, match="NUL in literal") as caught:
        parse(b"a1 APPEND INBOX {3}\r\n", b"a\0b")
    assert caught.value.tag == "a1"
    assert parse(b"a1 APPEND INBOX ~{3}\r\n", b"a\0b").args == [Atom("INBOX"), b"a\0b"]


def test_open_bracket_is_an_atom_char() -> None:
    """RFC 3501 §9: "[" is an ATOM-CHAR (only "]" is a resp-special, allowed in astrings);
    a section follows only a fetch attribute that takes one."""
    cmd = parse(b"a[1] CREATE Projets[2026] (x[ [y])")
    assert cmd.tag == "a[1]"
    assert cmd.args == [Atom("Projets[2026]"), [Atom("x["), Atom("[y]")]]
    assert parse(b"a1 LOGIN [bob] pw[").args == [Atom("[bob]"), Atom("pw[")]
    assert parse(b"a1 FETCH 1 BINARY.SIZE[1]").args[1] == Atom("BINARY.SIZE",
                                                               section=(Atom("1"),))


def _framing(data: bytes, max_literal: int = 100) -> list[list[bytes] | str]:
    """Run the framer over *data*; each command's parts, or the error text."""
    async def run() -> list[list[bytes] | str]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        continuations: list[int] = []

        async def cont() -> None:
            continuations.append(1)
        commands = CommandReader(LineBuffer(reader.read), cont, max_line=200,
                                 max_literal=max_literal, max_command=1000)
        out: list[list[bytes] | str] = []
        for _ in range(len(data) + 2):  # bounded: each round consumes input or ends
            try:
                parts = await commands.read_parts()
            except LiteralTooLarge as exc:
                await commands.buffer.skip(exc.discard)
                out.append(str(exc))
                continue
            except LineTooLong as exc:
                out.append(str(exc))
                continue
            if parts is None:
                return out
            out.append(parts)
        raise AssertionError("framer did not end")
    return asyncio.run(asyncio.wait_for(run(), 10))


def test_framing_literals_and_limits() -> None:
    assert _framing(b"a LOGIN {3}\r\nbob {2+}\r\npw\r\nb NOOP\r\n") == [
        [b"a LOGIN {3}", b"bob", b" {2+}", b"pw", b""], [b"b NOOP"]]
    # too large: refused from the announcement; a LITERAL+ one's bytes are skipped, and the
    # rest of its command too (up to the line ending the command, other LITERAL+ included)
    assert _framing(b"a APPEND x {101+}\r\n" + b"z" * 101 + b"\r\nb NOOP\r\n") == [
        "[TOOBIG] Literal too large", [b"b NOOP"]]
    assert _framing(b"a X {101+}\r\n" + b"z" * 101 + b" c NOOP {2+}\r\nxy d NOOP\r\n"
                    b"b NOOP\r\n") == ["[TOOBIG] Literal too large", [b"b NOOP"]]
    # a synchronising one is not sent by the client: nothing to skip
    assert _framing(b"a APPEND x {101}\r\nb NOOP\r\n") == [
        "[TOOBIG] Literal too large", [b"b NOOP"]]
    assert _framing(b"a " + b"x" * 300 + b"\r\nb NOOP\r\n") == [
        "Command line too long", [b"b NOOP"]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_frame_and_parse_without_crash(data: bytes) -> None:
    for item in _framing(data):
        if isinstance(item, str):
            continue
        try:
            command = parse_command(item)
        except ImapParseError:
            continue
        assert command.tag and command.name


_ALPHABET = st.sampled_from([b"a1 ", b"UID ", b"FETCH ", b"1:*", b"(", b")", b"[", b"]",
                             b"<0.10>", b'"', b"\\", b"{3}\r\nabc", b"{2+}\r\nxy", b" ",
                             b"BODY", b"NIL", b"*", b"%", b"\x00", b"\xff", b"SELECT",
                             b"INBOX", b"+", b"\r\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=30))
def test_imap_shaped_input_never_crashes_the_tokeniser(pieces: list[bytes]) -> None:
    for item in _framing(b"".join(pieces)):
        if isinstance(item, list):
            with contextlib.suppress(ImapParseError):
                parse_command(item)


# ---------------------------------------------------------------- command arguments
# Each command's parser (proxy/imap/*_args.py) is pure: a Command in, a frozen value out, or
# ImapParseError (answered BAD), never any other exception (which would be a NO SERVERBUG).

_WORDS = [
    "1", "2:4", "1:*", "*", "5,7:9", "0", "4294967296", "12345678901234567890123", "UID",
    "FLAGS", "+FLAGS", "-FLAGS.SILENT", "FLAGS.SILENT", "\\Seen", "\\Deleted", "\\Bogus",
    "$Label", "a]b", "(UNCHANGEDSINCE 5)", "(CHANGEDSINCE 3)", "(CHANGEDSINCE x)",
    "(CONDSTORE)", "RETURN", "(MIN MAX)", "(COUNT)", "(ALL)", "(FOO)", "()", "ALL",
    "CHARSET", "UTF-8", "KOI8-R", "SEEN", "MODSEQ", "OR", "NOT", "BODY[]",
    "BODY.PEEK[HEADER.FIELDS (FROM)]<0.10>", "BINARY[1]", "BINARY.SIZE[1]", "ENVELOPE",
    "FAST", "INBOX", "Shared/x@y/INBOX", '""', '"a b"', '"&AOk-t&AOk-"', "&Jjo-", "&bad",
    "%", "(SUBSCRIBED)", "(RECURSIVEMATCH)", "(SPECIAL-USE REMOTE)",
    "(STATUS (MESSAGES HIGHESTMODSEQ))", "(STATUS (BOGUS))", "(STATUS)",
    "(SUBSCRIBED CHILDREN)", "MESSAGES", "(MESSAGES UNSEEN SIZE)", "(x)",
    '"23-Nov-2026 09:00:00 +0100"', '"31-Feb-2020 00:00:00 +0000"', "PLAIN", "=",
    "dXNlcgB1c2VyAHB3", "CONDSTORE", "NIL", "(", ")", '"\\\\Seen"', "~{1}\r\nx"]

_ATOM_TEXT = st.text(st.sampled_from([chr(c) for c in range(0x21, 0x7F)
                                      if chr(c) not in '(){"']), min_size=1, max_size=12)
_SECTIONED = st.builds(Atom, st.sampled_from(["BODY", "BODY.PEEK", "BINARY", "BINARY.SIZE"]),
                       section=st.sampled_from([(), (Atom("HEADER"),), (Atom("1.2.MIME"),),
                                                (Atom("HEADER.FIELDS"), [Atom("FROM")]),
                                                (Atom("TEXT"), b"x")]),
                       partial=st.sampled_from([None, (0, 10), (5, 0)]))
_TOKENS: st.SearchStrategy[Token] = st.recursive(
    st.one_of(st.builds(Atom, _ATOM_TEXT), st.builds(Atom, st.sampled_from(_WORDS)),
              st.binary(max_size=12), _SECTIONED),
    lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _parsed_or_bad(cmd: Command) -> object | None:
    """What the command's parser makes of *cmd*: a frozen dataclass, or None for BAD."""
    try:
        value = COMMANDS[cmd.name].parse(cmd)
    except ImapParseError:
        return None
    assert dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
    return value


def test_every_command_has_a_parser_giving_frozen_arguments() -> None:
    for name, spec in COMMANDS.items():
        args = {"CAPABILITY": "", "SELECT": " INBOX", "UID FETCH": " 1:* (FLAGS)",
                "STORE": " 1 +FLAGS (\\Seen)", "LIST": ' "" *'}.get(name)
        if args is not None:
            assert _parsed_or_bad(parse(f"t {name}{args}".encode())) is not None, name
        assert callable(spec.parse) and spec.states, name


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(COMMANDS)), st.lists(st.sampled_from(_WORDS), max_size=8))
def test_argument_parsers_of_imap_shaped_commands_only_say_bad(name: str, words: list[str]
                                                               ) -> None:
    line = f"t {name}" + "".join(" " + w for w in words)
    try:
        cmd = parse(*line.encode().split(b"\r\n", 1))
    except CommandError:
        return
    if cmd.name in COMMANDS:
        _parsed_or_bad(cmd)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(COMMANDS)), st.lists(_TOKENS, max_size=6))
def test_argument_parsers_of_any_tokens_only_say_bad(name: str, tokens: list[Token]) -> None:
    _parsed_or_bad(Command("t", name, tokens))


_SEQSETS = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                    min_size=1, max_size=4).map(lambda r: SequenceSet(tuple(r)))
_KEYWORDS = st.from_regex(r"\$?[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
_FLAGS = st.lists(st.one_of(st.sampled_from(SYSTEM_FLAGS), _KEYWORDS), unique=True,
                  max_size=5).map(tuple)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), _SEQSETS, st.sampled_from(["", "+", "-"]), st.booleans(), _FLAGS,
       st.one_of(st.none(), st.integers(0, 2**63)))
def test_store_arguments_round_trip(by_uid: bool, sequence: SequenceSet, sign: str,
                                    silent: bool, flags: tuple[str, ...],
                                    unchanged_since: int | None) -> None:
    """A STORE written as a client writes it parses back to the same arguments."""
    name = "UID STORE" if by_uid else "STORE"
    mods = "" if unchanged_since is None else f" (UNCHANGEDSINCE {unchanged_since})"
    line = (f"t {name} {sequence}{mods} {sign}FLAGS{'.SILENT' if silent else ''} "
            f"({' '.join(flags)})")
    assert _parsed_or_bad(parse(line.encode())) == StoreArgs(
        by_uid, sequence, sign, silent, flags, unchanged_since)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), st.booleans())
@example(name="\u0131nbox", readonly=False)  # dotless i: upper() is "INBOX", not INBOX
@example(name="inBox/Sub/", readonly=True)
def test_mailbox_names_round_trip(name: str, readonly: bool) -> None:
    """A name as the server writes it (modified UTF-7, quoted when needed, RFC 3501 §5.1.3)
    is read back as the same name; INBOX (ASCII, any case) is INBOX."""
    folded = name.rstrip("/")
    if folded[:5].isascii() and folded[:5].upper() == "INBOX" and folded[5:6] in ("", "/"):
        folded = "INBOX" + folded[5:]
    command = "EXAMINE" if readonly else "SELECT"
    wire = encode_name(name)
    head, _, literal = wire.partition(b"\r\n")
    cmd = parse(b"t " + command.encode() + b" " + head + (b"\r\n" if literal else b""),
                *([literal] if literal else []))
    assert _parsed_or_bad(cmd) == SelectArgs(folded, readonly, False)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**34), _FLAGS, st.binary(min_size=1, max_size=40))
def test_append_arguments_round_trip(when: int, flags: tuple[str, ...], message: bytes
                                     ) -> None:
    """APPEND with flags and the INTERNALDATE as FETCH renders it (RFC 3501 §9 date-time)
    parses back to the same instant, flags and content."""
    line = b"t APPEND Drafts (" + " ".join(flags).encode() + b") " + internal_date(when) + \
        b" ~{%d}\r\n" % len(message)  # RFC 3516 literal8: any octet
    assert _parsed_or_bad(parse(line, message)) == AppendArgs("Drafts", flags, float(when),
                                                              message)


class _Conn:
    def __init__(self, node: Node) -> None:
        sock = socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=10)
        self.sock = node.client_context().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b"{", b"")),
                min_size=1, max_size=5))
def test_server_answers_every_garbage_line(running_node: Node, lines: list[bytes]) -> None:
    """Each line (no literal announcement) gets exactly one tagged or ``* BAD`` reply, and the
    connection still answers a NOOP afterwards."""
    conn = _Conn(running_node)
    try:
        for i, line in enumerate(lines):
            tag = b"h%d" % i
            conn.sock.sendall(tag + b" " + line.rstrip(b"\r") + b"\r\n")
            while True:
                reply = conn.file.readline()
                assert reply.endswith(b"\r\n"), reply
                if reply.startswith((tag + b" ", b"* BAD")) or reply.startswith(b"* BYE"):
                    break
            if reply.startswith(b"* BYE"):
                return  # LOGOUT among the garbage
        conn.sock.sendall(b"z NOOP\r\n")
        while not (reply := conn.file.readline()).startswith(b"z "):
            assert reply
        assert reply == b"z OK NOOP completed\r\n"
    finally:
        conn.sock.close()


_COMMANDS = st.sampled_from([b"FETCH", b"UID FETCH", b"STORE", b"UID STORE", b"SEARCH",
                             b"UID SEARCH", b"COPY", b"UID MOVE", b"LIST", b"STATUS",
                             b"SELECT", b"EXAMINE", b"APPEND", b"EXPUNGE", b"UID EXPUNGE",
                             b"CREATE", b"RENAME", b"ENABLE", b"NOOP", b"CHECK", b"LSUB",
                             b"SUBSCRIBE", b"ID", b"NAMESPACE", b"UNSELECT"])
_ARGS = st.sampled_from([b"1", b"1:*", b"*", b"0", b"4294967296", b"2,1:3", b"x", b"()",
                         b"(FLAGS)", b"(BODY[])", b"BODY.PEEK[1.2.MIME]<0.5>", b"ENVELOPE",
                         b"(\\Seen)", b"+FLAGS", b"-FLAGS.SILENT", b"FLAGS", b"(UNCHANGEDSINCE 1)",
                         b"(CHANGEDSINCE 0)", b"INBOX", b"Fuzz", b'""', b'"*"', b"%", b"ALL",
                         b"OR", b"NOT", b"TEXT", b"HEADER", b"SINCE", b"1-Jan-2020",
                         b"CHARSET", b"UTF-8", b"RETURN", b"(MIN MAX)", b"(MESSAGES)",
                         b"BODY[HEADER.FIELDS (FROM)]", b"BINARY[1]", b"RFC822", b"NIL",
                         b"{3+}\r\nabc", b"&Jjo!", b"(CONDSTORE)", b"LARGER", b"UID"])


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_COMMANDS, st.lists(_ARGS, max_size=5)), min_size=1, max_size=6))
def test_selected_state_fuzz_never_hits_an_internal_error(
        running_node: Node, commands: list[tuple[bytes, list[bytes]]]) -> None:
    """IMAP-shaped commands in the selected state: each gets its tagged reply, never
    ``NO [SERVERBUG]`` (an unexpected exception), and the session stays usable."""
    conn = _Conn(running_node)
    f, sock = conn.file, conn.sock

    def run(tag: bytes, line: bytes) -> bytes:
        sock.sendall(tag + b" " + line + b"\r\n")
        while True:
            reply = f.readline()
            assert reply.endswith(b"\r\n"), reply
            if reply.startswith(b"+ ") and b"{" in line:
                continue
            if reply.startswith((tag + b" ", b"* BAD", b"* BYE")):
                return reply
    try:
        assert run(b"l", f'LOGIN bob@{DOMAIN} "{PASSWORD}"'.encode()).startswith(b"l OK")
        run(b"c", b"CREATE Fuzz")
        run(b"a", b"APPEND Fuzz {12+}\r\nSubject: x\r\n")
        assert run(b"s", b"SELECT Fuzz").startswith(b"s OK")
        for i, (name, args) in enumerate(commands):
            reply = run(b"f%d" % i, b" ".join([name, *args]))
            assert b"SERVERBUG" not in reply, (name, args, reply)
            if reply.startswith(b"* BYE"):
                return
        assert run(b"z", b"NOOP") == b"z OK NOOP completed\r\n"
    finally:
        sock.close()


def _reply_to(conn: _Conn, tag: bytes) -> bytes:
    while True:
        reply = conn.file.readline()
        assert reply.endswith(b"\r\n"), f"connection ended: {reply!r}"
        if reply.startswith((tag + b" ", b"* BAD")):
            return reply


def test_deep_nesting_is_bad_and_the_session_stays(running_node: Node) -> None:
    """900 nested parentheses (before login and after), 2 000 chained NOTs: BAD, and the
    same connection answers the next command (no RecursionError closing it)."""
    conn = _Conn(running_node)
    try:
        conn.sock.sendall(b"a1 NOOP " + b"(" * 900 + b")" * 900 + b"\r\n")
        assert _reply_to(conn, b"a1") == b"a1 BAD Too many nested parentheses\r\n"
        conn.sock.sendall(f'a2 LOGIN bob@{DOMAIN} "{PASSWORD}"\r\n'.encode())
        assert _reply_to(conn, b"a2").startswith(b"a2 OK")
        conn.sock.sendall(b"a3 SELECT INBOX\r\n")
        assert _reply_to(conn, b"a3").startswith(b"a3 OK")
        conn.sock.sendall(b"a4 SEARCH " + b"(" * 900 + b"ALL" + b")" * 900 + b"\r\n")
        assert _reply_to(conn, b"a4") == b"a4 BAD Too many nested parentheses\r\n"
        conn.sock.sendall(b"a5 SEARCH " + b"NOT " * 2000 + b"ALL\r\n")
        assert _reply_to(conn, b"a5") == b"a5 BAD SEARCH: search keys nested too deeply\r\n"
        conn.sock.sendall(b"a6 NOOP\r\n")
        assert _reply_to(conn, b"a6") == b"a6 OK NOOP completed\r\n"
    finally:
        conn.sock.close()


def test_refused_literal_plus_discards_the_rest_of_its_command(running_node: Node) -> None:
    """RFC 7888 §4: the client sends a LITERAL+ literal and the rest of the command even when
    it is refused; all of it is dropped, one tagged BAD, the next command runs normally."""
    conn = _Conn(running_node)
    try:
        conn.sock.sendall(b"a1 LOGIN {70000+}\r\n" + b"x" * 70000
                          + b" {5+}\r\nabcde a9 LOGOUT\r\na2 NOOP\r\n")
        assert conn.file.readline() == b"a1 BAD [TOOBIG] Literal too large\r\n"
        assert conn.file.readline() == b"a2 OK NOOP completed\r\n"
    finally:
        conn.sock.close()
