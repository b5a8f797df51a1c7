"""The IMAP command reader and tokeniser: unit cases, hypothesis (any bytes -> a reply, no
crash, no hang), and the same property against the real server over a socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.imap.parser import (
    Command,
    CommandError,
    CommandReader,
    LineBuffer,
    LineTooLong,
    LiteralTooLarge,
    parse_command,
)
from proxy.imap.tokens import Atom, ImapParseError
from tests.node import DOMAIN, PASSWORD, Node


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
])
def test_syntax_errors_are_precise(line: bytes, text: str) -> None:
    with pytest.raises(CommandError, match=text.replace("[", r"\[")):
        parse(line)


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
    # too large: refused from the announcement; a LITERAL+ one's bytes are skipped
    assert _framing(b"a APPEND x {101+}\r\n" + b"z" * 101 + b"b NOOP\r\n") == [
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
