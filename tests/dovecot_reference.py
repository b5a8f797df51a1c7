"""Record Dovecot's FETCH answers for tests/imap_corpus.py (reference values for the tests).

Usage: python -m tests.dovecot_reference HOST PORT USER PASSWORD > /tmp/ref.py
APPENDs the corpus to a scratch folder ``mss-ref`` (deleted first) over plain IMAP on
loopback and prints ``REFERENCE = {name: {item: value}}``: ENVELOPE, BODY and BODYSTRUCTURE
as wire bytes, ``BODY[section]`` as the content (None for NIL). Not run by the test suite.
"""

from __future__ import annotations

import contextlib
import pprint
import re
import socket
import sys

from tests.imap_corpus import CORPUS, SEARCHES, SECTIONS


class _Client:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""
        self.n = 0
        self.line()

    def line(self) -> bytes:
        """One response line with its literals inlined as {n}\\r\\n + data."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            head, _, self.buf = self.buf.partition(b"\r\n")
            out += head + b"\r\n"
            m = re.search(rb"\{(\d+)\}$", head)
            if not m:
                return out
            size = int(m.group(1))
            while len(self.buf) < size:
                self.buf += self.sock.recv(65536)
            out += self.buf[:size]
            self.buf = self.buf[size:]

    def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"r%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line)
                return lines
            lines.append(line)


def _value(line: bytes, item: bytes) -> bytes | None:
    start = line.index(item + b" ") + len(item) + 1
    rest = line[start:]
    assert rest.endswith(b")\r\n"), rest[-20:]
    rest = rest[:-3]
    if rest == b"NIL":
        return None
    m = re.match(rb"\{(\d+)\}\r\n", rest)
    if m:
        return rest[m.end():]
    if rest.startswith(b'"'):
        return rest[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
    return rest


def record(host: str, port: int, user: str, password: str) -> dict[str, dict[str, object]]:
    c = _Client(host, port)
    c.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
    with contextlib.suppress(RuntimeError):
        c.command(b"DELETE mss-ref")
    c.command(b"CREATE mss-ref")
    for raw in CORPUS.values():
        c.command(b'APPEND mss-ref () "23-Nov-2026 10:00:00 +0000"', raw)
    c.command(b"EXAMINE mss-ref")
    result: dict[str, dict[str, object]] = {}
    for seq, name in enumerate(CORPUS, 1):
        entry: dict[str, object] = {}
        for item in (b"ENVELOPE", b"BODY", b"BODYSTRUCTURE"):
            (line,) = c.command(b"FETCH %d %s" % (seq, item))
            start = line.index(item + b" (") + len(item) + 1
            entry[item.decode()] = line[start:-3]
        for section in SECTIONS:
            (line,) = c.command(b"FETCH %d BODY.PEEK[%s]" % (seq, section.encode()))
            m = re.match(rb"\* \d+ FETCH \((BODY\[[^]]*\](?:<\d+>)?) ", line)
            assert m, line
            entry[f"BODY[{section}]"] = _value(line, m.group(1))
            entry[f"echo {section}"] = m.group(1)
        result[name] = entry
    c.command(b"CLOSE")
    c.command(b"DELETE mss-ref")
    c.command(b"LOGOUT")
    return result


def record_search(host: str, port: int, user: str, password: str) -> list[list[str]]:
    """For each program of SEARCHES, the corpus messages Dovecot finds (UID SEARCH CHARSET
    UTF-8, messages stored with CRLF line ends)."""
    c = _Client(host, port)
    c.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
    with contextlib.suppress(RuntimeError):
        c.command(b"DELETE mss-ref")
    c.command(b"CREATE mss-ref")
    names = sorted(CORPUS)
    for name in names:
        raw = CORPUS[name].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        c.command(b'APPEND mss-ref () "23-Nov-2026 10:00:00 +0000"', raw)
    c.command(b"EXAMINE mss-ref")
    found: list[list[str]] = []
    for program in SEARCHES:
        line = b"UID SEARCH CHARSET UTF-8"
        for word in program:
            data = word.encode()
            line += b" " + data if word.isupper() and word.isascii() else (
                b" {%d+}\r\n" % len(data) + data)
        uids = [int(x) for reply in c.command(line) if reply.startswith(b"* SEARCH")
                for x in reply.split()[2:]]
        found.append([names[u - 1] for u in sorted(uids)])
    c.command(b"CLOSE")
    c.command(b"DELETE mss-ref")
    c.command(b"LOGOUT")
    return found


if __name__ == "__main__":
    host, port, user, password = sys.argv[1:5]
    print("REFERENCE = ", end="")
    pprint.pprint(record(host, int(port), user, password), width=100)
    print("SEARCH_REFERENCE = ", end="")
    pprint.pprint(record_search(host, int(port), user, password), width=100)
