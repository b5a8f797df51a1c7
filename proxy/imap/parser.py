"""Reading IMAP commands: framing (lines and literals) and tokenising (RFC 3501 §9).

Framing (:class:`CommandReader`) reads one command from the connection: a line, and while
the line ends with a literal announcement ``{n}`` / ``{n+}`` (RFC 7888 LITERAL+), the literal's
bytes and the next line. A literal above the limit is refused from its announcement alone,
before any of its bytes is read. Tokenising (:func:`parse_command`) is a pure function of the
framed parts, so the hypothesis tests drive it directly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.imap.tokens import Atom, ImapParseError, Token

# "{n}", "{n+}" (RFC 7888) and the literal8 forms "~{n}", "~{n+}" (RFC 3516 §4.1)
_LITERAL_END = re.compile(rb"~?\{(\d{1,20})(\+?)\}$")
# Bytes that end an atom (RFC 3501 §9 atom-specials, minus "%" "*" "\" "]" which appear in
# list wildcards, sequence sets, flags and astrings). "[" is an ATOM-CHAR: it opens a fetch
# section only after one of _SECTIONED (see _Scanner.atom).
_PLAIN_STOP = frozenset(b'(){ "') | frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_STOP = _PLAIN_STOP | {0x5B}
# RFC 3501 §9 tag: ASTRING-CHAR except "+" ("[" and "]" included)
_TAG_STOP = _PLAIN_STOP | frozenset(b"+%*\\")
_SECTION_STOP = _ATOM_STOP | {0x5D}  # "]" ends an atom inside a fetch section
_NAME_STOP = _ATOM_STOP | {0x5D, 0x5C, 0x25, 0x2A}  # command name: no "]" "\\" "%" "*"
_PARTIAL = re.compile(rb"<(\d{1,10})\.(\d{1,10})>")  # fetch partial <offset.length>
# fetch attributes taking a section (RFC 3501 §9 "fetch-att", RFC 3516 §4.2)
_SECTIONED = frozenset({"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"})
# Parenthesised lists nest at most this deep (FETCH and SEARCH need a handful); deeper is BAD
# rather than a recursion that could end the connection.
MAX_NESTING = 64


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" for a UID command
    args: list[Token]


class CommandError(ImapParseError):
    """A command that cannot be run; *tag* is None when no tag could be read (``* BAD``)."""

    def __init__(self, text: str, tag: str | None = None) -> None:
        super().__init__(text)
        self.tag = tag


class LineTooLong(CommandError):
    """*head* is the start of the line (to answer with its tag)."""

    def __init__(self, text: str, tag: str | None = None, head: bytes = b"") -> None:
        super().__init__(text, tag)
        self.head = head


class LiteralTooLarge(CommandError):
    """The announced literal exceeds the limit; *discard* is the number of bytes the client
    sends anyway (a non-synchronising literal), to skip. The rest of that command (up to its
    last line) is then discarded by the next :meth:`CommandReader.read_parts`."""

    def __init__(self, text: str, tag: str | None, discard: int) -> None:
        super().__init__(text, tag)
        self.discard = discard


class LiteralDeferred(LiteralTooLarge):
    """The literal fits the limits but not the process's memory budget now (try later)."""


# ----------------------------------------------------------------------------- framing

class LineBuffer:
    """Buffered reading of lines and exact byte counts from a stream reader."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]]) -> None:
        self._read = read
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self._read(65536)
        if not data:
            return False
        self.buffer += data
        return True

    async def readline(self, limit: int) -> bytes | None:
        """One line without its CRLF (a bare LF is accepted); None at end of stream.
        Raises LineTooLong after discarding the rest of an over-long line."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                if end > limit:
                    head = bytes(self.buffer[:100])
                    del self.buffer[:end + 1]
                    raise LineTooLong("Command line too long", head=head)
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) > limit:
                head = bytes(self.buffer[:100])
                await self._skip_line()
                raise LineTooLong("Command line too long", head=head)
            start = len(self.buffer)
            if not await self._fill():
                return None

    async def _skip_line(self) -> None:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                del self.buffer[:end + 1]
                return
            self.buffer.clear()
            if not await self._fill():
                return

    async def readexactly(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            if not await self._fill():
                return None
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def skip(self, n: int) -> None:
        while n > 0:
            if not self.buffer and not await self._fill():
                return
            taken = min(n, len(self.buffer))
            del self.buffer[:taken]
            n -= taken


def _tag_of(line: bytes) -> str | None:
    tag = line.split(b" ", 1)[0]
    if tag and not any(b in _TAG_STOP or b > 0x7E for b in tag):
        return tag.decode("ascii")
    return None


class CommandReader:
    """Frames commands; *continuation* sends ``+ ...`` for a synchronising literal."""

    def __init__(self, buffer: LineBuffer, continuation: Callable[[], Awaitable[None]], *,
                 max_line: int, max_literal: int, max_command: int,
                 reserve: Callable[[int], bool] | None = None) -> None:
        self.buffer = buffer
        self.reserve = reserve  # takes a literal's size from a memory budget, or refuses
        self.continuation = continuation
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self.rest_pending = False  # a refused LITERAL+ was skipped: its command goes on

    async def read_parts(self) -> list[bytes] | None:
        """[line, literal, line, literal, ..., line]; None at end of stream."""
        if self.rest_pending:
            self.rest_pending = False
            if not await self._discard_rest():
                return None
        parts: list[bytes] = []
        total = 0
        tag: str | None = None
        while True:
            try:
                line = await self.buffer.readline(self.max_line)
            except LineTooLong as exc:
                exc.tag = tag if parts else _tag_of(exc.head)
                raise
            if line is None:
                return None
            if tag is None:
                tag = _tag_of(line)
            parts.append(line)
            total += len(line)
            found = _LITERAL_END.search(line)
            if found is None:
                return parts
            size, plus = int(found.group(1)), bool(found.group(2))
            if size > self.max_literal or total + size > self.max_command:
                # RFC 7888 §4 / RFC 3501 §7.5: refuse the literal without reading it. A
                # non-synchronising one is sent anyway, and the rest of its command after it:
                # the caller skips the literal, the next read discards the rest.
                self.rest_pending = plus
                raise LiteralTooLarge("[TOOBIG] Literal too large", tag, size if plus else 0)
            if self.reserve is not None and not self.reserve(size):
                raise LiteralDeferred("[UNAVAILABLE] Server busy, try again later", tag,
                                      size if plus else 0)
            if not plus:
                await self.continuation()
            data = await self.buffer.readexactly(size)
            if data is None:
                return None
            parts.append(data)
            total += size

    async def _discard_rest(self) -> bool:
        """Read and drop the lines (and their LITERAL+ literals) that end a refused command;
        False at end of stream. A synchronising literal ends it: the client waits for a
        continuation that is not sent (it already has its tagged BAD)."""
        while True:
            try:
                line = await self.buffer.readline(self.max_line)
            except LineTooLong:
                return True  # that line was discarded whole
            if line is None:
                return False
            found = _LITERAL_END.search(line)
            if found is None or not found.group(2):
                return True
            await self.buffer.skip(int(found.group(1)))


# ----------------------------------------------------------------------------- tokens

class _Scanner:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.index = 0  # index of the current line in parts (always even)
        self.pos = 0
        self.depth = 0  # open parentheses

    @property
    def line(self) -> bytes:
        return self.parts[self.index]

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.index == len(self.parts) - 1

    def peek(self) -> int | None:
        return self.line[self.pos] if self.pos < len(self.line) else None

    def expect_space(self) -> None:
        if self.peek() != 0x20:
            raise ImapParseError("Missing space")
        self.pos += 1

    def atom_text(self, stop: frozenset[int]) -> str:
        start = self.pos
        line = self.line
        while self.pos < len(line) and line[self.pos] not in stop and line[self.pos] < 0x80:
            self.pos += 1
        if self.pos == start:
            char = line[self.pos:self.pos + 1]
            raise ImapParseError(f"Unexpected {char.decode('latin-1')!r}" if char
                                 else "Missing argument")
        return line[start:self.pos].decode("ascii")

    def quoted(self) -> bytes:
        self.pos += 1  # opening quote
        out = bytearray()
        line = self.line
        while self.pos < len(line):
            char = line[self.pos]
            self.pos += 1
            if char == 0x22:
                return bytes(out)
            if char == 0x00:  # RFC 3501 §9: QUOTED-CHAR is a CHAR (%x01-7F), never NUL
                raise ImapParseError("NUL in quoted string")
            if char == 0x5C:
                if self.pos >= len(line) or line[self.pos] not in b'"\\':
                    raise ImapParseError("Invalid escape in quoted string")
                char = line[self.pos]
                self.pos += 1
            out.append(char)
        raise ImapParseError("Unterminated quoted string")

    def literal(self) -> bytes:
        found = _LITERAL_END.match(self.line, self.pos)
        if found is None or found.end() != len(self.line):
            raise ImapParseError("Invalid literal")
        data = self.parts[self.index + 1]
        if self.line[self.pos] != 0x7E and b"\0" in data:
            # RFC 3501 §9: a literal is CHAR8 (%x01-ff); NUL only in literal8 (RFC 3516 §4.1)
            raise ImapParseError("NUL in literal: send binary content as literal8 ~{n}")
        self.index += 2
        self.pos = 0
        return data

    def token(self, in_section: bool = False) -> Token:
        char = self.peek()
        if char is None:
            raise ImapParseError("Missing argument")
        if char == 0x20:
            raise ImapParseError("Extra space")
        if char == 0x22:
            return self.quoted()
        if char == 0x7B or (char == 0x7E and self.line[self.pos + 1:self.pos + 2] == b"{"):
            return self.literal()
        if char == 0x28:
            return self.paren_list(in_section)
        return self.atom(in_section)

    def paren_list(self, in_section: bool = False) -> list[Token]:
        if self.depth >= MAX_NESTING:
            raise ImapParseError("Too many nested parentheses")
        self.pos += 1
        items: list[Token] = []
        if self.peek() == 0x29:
            self.pos += 1
            return items
        self.depth += 1
        while True:
            items.append(self.token(in_section))
            char = self.peek()
            if char == 0x29:
                self.pos += 1
                self.depth -= 1
                return items
            if char != 0x20:
                raise ImapParseError("Unterminated list" if char is None
                                     else "Missing space in list")
            self.pos += 1

    def atom(self, in_section: bool) -> Atom:
        stop = _SECTION_STOP if in_section else _ATOM_STOP
        start = self.pos
        value = self.atom_text(stop) if self.peek() != 0x5B else ""
        if self.peek() != 0x5B:  # "["
            return Atom(value)
        if value.upper() not in _SECTIONED:  # RFC 3501 §9: "[" is an ATOM-CHAR
            self.pos = start
            return Atom(self.atom_text(stop - {0x5B}))
        self.pos += 1
        section: list[Token] = []
        while self.peek() != 0x5D:
            if section:
                self.expect_space()
            section.append(self.token(in_section=True))
        self.pos += 1
        partial = None
        if self.peek() == 0x3C:  # "<" offset "." length ">"
            found = _PARTIAL.match(self.line, self.pos)
            if found is None or int(found.group(2)) == 0:
                raise ImapParseError("Invalid partial")
            partial = (int(found.group(1)), int(found.group(2)))
            self.pos = found.end()
        return Atom(value, section=tuple(section), partial=partial)


def parse_command(parts: list[bytes]) -> Command:
    """Tokens of one framed command; raises CommandError (with the tag when one was read)."""
    scan = _Scanner(parts)
    tag = _tag_of(parts[0])
    if tag is None:
        raise CommandError("Missing or invalid tag")
    scan.pos = len(tag)
    try:
        scan.expect_space()
        name = scan.atom_text(_NAME_STOP).upper()
        if name == "UID":
            scan.expect_space()
            name = "UID " + scan.atom_text(_ATOM_STOP).upper()
        args: list[Token] = []
        while not scan.at_end():
            scan.expect_space()
            args.append(scan.token())
    except ImapParseError as exc:
        raise CommandError(str(exc), tag) from None
    except (IndexError, UnicodeDecodeError):
        raise CommandError("Invalid syntax", tag) from None
    return Command(tag, name, args)
