"""Differential fuzzing of the MIME reader (mss/mime.py, rendered by proxy/imap/mime.py)
against a running Dovecot (not run by pytest).

Usage: python -m tests.dovecot_fuzz HOST PORT USER PASSWORD SEED COUNT
Generates COUNT malformed MIME messages from SEED, APPENDs them to a scratch folder
``mss-fuzz`` and prints every ENVELOPE, BODY, BODYSTRUCTURE or BODY[section] where mss and
Dovecot answer differently. Messages worth keeping go to tests/imap_corpus.py.
"""

from __future__ import annotations

import contextlib
import random
import re
import sys

from proxy.imap.mime import parse_message
from tests.dovecot_reference import _Client, _value

LINES = [
    "--b", "--b--", "--c", "--c--", "--b  ", "--bx", "", "", "",
    "Content-Type: multipart/mixed; boundary=c",
    'Content-Type: multipart/alternative; boundary="b"',
    "Content-Type: message/rfc822", "Content-Type: multipart/digest; boundary=b",
    "Content-Transfer-Encoding: base64", "Subject: =?utf-8?q?x?= y", "From: a@b, (c) <d@e>",
    'From: "q\\"x" <a@b>', "To: g: h@i;", " folded", "\tfolded tab", "text line", "=C3=A9",
    "Content-Type: text/plain; charset=latin1", "Content-Type: text/html",
    'Content-Disposition: attachment; filename="a b.txt"', "Content-ID: <x@y>",
    "Content-Language: fr", "Date: Mon, 1 Jan 2024 00:00:00 +0000", "Message-ID: <m@x>",
    "Cc: ,,a@b,,", 'Bcc: "A, B" <a@b> (c)', "Reply-To: <>", "Sender: x",
    "Content-Type: text/plain; name*0=a; name*1=b", "Content-Description: d\u00e9",
    "Subject: caf\u00e9", "X-Foo: bar", "From: Dr. X <x@y> (com)",
    "Content-Type: application/octet-stream", "Content-Type: MESSAGE/RFC822",
    "Content-Type: text", "Content-Type: ;",
]
TOPS = ["Content-Type: multipart/mixed; boundary=b", "Content-Type: text/plain",
        "Content-Type: message/rfc822", "Subject: s", "Content-Type: multipart/digest; boundary=b"]
SECTIONS = ["1", "1.MIME", "2", "2.MIME", "1.1", "1.2", "2.1", "1.HEADER", "2.HEADER", "2.TEXT",
            "TEXT", "HEADER", "1.1.MIME", "2.1.MIME", "HEADER.FIELDS (FROM SUBJECT)",
            "1.HEADER.FIELDS.NOT (FROM)", "3", "1.3"]


def generate(rnd: random.Random) -> bytes:
    lines = [rnd.choice(TOPS)] + [rnd.choice(LINES) for _ in range(rnd.randint(0, 25))]
    return "\r\n".join(lines).encode() + (b"\r\n" if rnd.random() < 0.7 else b"")


def main(host: str, port: int, user: str, password: str, seed: int, count: int) -> int:
    rnd = random.Random(seed)
    messages = [generate(rnd) for _ in range(count)]
    c = _Client(host, port)
    c.command(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
    with contextlib.suppress(RuntimeError):
        c.command(b"DELETE mss-fuzz")
    c.command(b"CREATE mss-fuzz")
    for raw in messages:
        c.command(b"APPEND mss-fuzz", raw)
    c.command(b"EXAMINE mss-fuzz")
    bad = 0
    for seq, raw in enumerate(messages, 1):
        m = parse_message(raw)
        ours: dict[str, bytes] = {"ENVELOPE": m.envelope(), "BODY": m.bodystructure(False),
                                  "BODYSTRUCTURE": m.bodystructure(True)}
        for item in ("ENVELOPE", "BODY", "BODYSTRUCTURE"):
            (line,) = c.command(b"FETCH %d %s" % (seq, item.encode()))
            start = line.index(item.encode() + b" (") + len(item) + 1
            if line[start:-3] != ours[item]:
                bad += 1
                print(f"=== {seq} {item}\n{raw!r}\n ref {line[start:-3]!r}\n our {ours[item]!r}")
        for section in SECTIONS:
            (line,) = c.command(b"FETCH %d BODY.PEEK[%s]" % (seq, section.encode()))
            match = re.match(rb"\* \d+ FETCH \((BODY\[[^]]*\]) ", line)
            assert match, line
            ref = _value(line, match.group(1))
            got = m.section(section) or b""
            if ref != got:
                bad += 1
                print(f"=== {seq} [{section}]\n{raw!r}\n ref {ref!r}\n our {got!r}")
    c.command(b"CLOSE")
    c.command(b"DELETE mss-fuzz")
    print(f"{bad} differences in {count} messages")
    return 1 if bad else 0


if __name__ == "__main__":
    a = sys.argv[1:7]
    sys.exit(main(a[0], int(a[1]), a[2], a[3], int(a[4]), int(a[5])))
