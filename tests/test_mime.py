"""The node's MIME reader (mss/mime.py): pure functions, hypothesis-tested.

Never raises on arbitrary bytes, output bounded by the input, round trips against the
standard library's encoders, and linear time on hostile shapes (each timed at n and 10 n).
"""

from __future__ import annotations

import ast
import base64
import email.header
import email.quoprimime
import encodings
import pkgutil
import quopri
import random
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mss import mime
from mss.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    MimeMessage,
    decode_bytes,
    decode_header_value,
    decode_quoted_printable,
    decode_rfc2231,
    header_bounds,
    header_fields,
    param_text,
    parse_address_list,
)
from tests.node import DOMAIN, PASSWORD, Node
from tests.timing import best_cpu_time

REPO = Path(__file__).resolve().parents[1]


def test_core_reader_imports_nothing_from_the_protocols() -> None:
    """Issue 13 #2: the MIME reader is core; IMAP syntax stays in proxy.imap."""
    tree = ast.parse((REPO / "mss" / "mime.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported and not [m for m in imported if m.split(".")[0] in
                             ("proxy", "audit", "trustspace", "directory")]


# ---------------------------------------------------------------- arbitrary input

_ATOMS = [b"--b", b"--b--", b"--bb", b"--c--", b"\r\n", b"\n", b"\r", b" ", b"\t", b"x",
          b"Content-Type: multipart/mixed; boundary=b",
          b'Content-Type: multipart/digest; boundary="c"', b"Content-Type: message/rfc822",
          b"Content-Type: text/plain; charset=hex", b"Content-Type: text/plain; charset=\"\0\"",
          b"Content-Type: text/plain; title*0*=us-ascii'en'a%; title*1=b; name*=x",
          b"MIME-Version: 1.0", b"Content-Transfer-Encoding: base64",
          b"Content-Transfer-Encoding: quoted-printable", b"aGVsbG8=", b"=41 =\r\n", b"=\xff",
          b'From: "A, B" <a@b.c>, (x) d@e', b"To: g: a@b, <@r,@s:c@d>;", b"Cc: a@[1.2",
          b"Subject: =?utf-8?q?h=C3=A9?= =?punycode?b?YWJj?= =?x?q?=ZZ?=", b"(", b")", b'"',
          b"\\", b"@", b"<", b">", b";", b":", b",", b"\x00", b"\xc3\xa9", b"\xff"]
_MIME_ISH = st.lists(st.sampled_from(_ATOMS), max_size=60).map(b"".join)
_INPUT = st.one_of(st.binary(max_size=2000), _MIME_ISH)


def _read_everything(raw: bytes) -> int:
    """Every public reading of ``raw``; returns the characters/bytes produced."""
    msg = MimeMessage(raw)
    produced = sum(len(v) for v in msg.header_values("subject") + msg.header_values("from"))
    produced += len(msg.header_text()) + len(msg.header_text(all_parts=True))
    parts = list(msg.root.walk())
    assert len(parts) <= 2 * MAX_PARTS  # a message/rfc822 part brings its message entity
    for part in parts:
        assert part.start <= part.body <= part.end <= len(raw)
        body = part.decoded_body()
        assert len(body) <= part.end - part.body  # decoding never grows the content
        produced += len(body)
        for name in (b"charset", b"name", b"title", b"filename"):
            text = param_text(part.info.params + part.info.disposition_params, name)
            produced += len(text or "")
    produced += len(msg.body_text())
    for f in msg.fields():
        produced += len(parse_address_list(f.value))
    return produced


@given(_INPUT)
@settings(max_examples=400, deadline=None)
def test_reader_never_raises_and_output_is_bounded(raw: bytes) -> None:
    produced = _read_everything(raw)
    # headers are read a few times over (top, all parts, address lists): a constant factor
    assert produced <= 12 * len(raw) + 16


@given(st.binary(max_size=300), st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_decoders_never_raise(data: bytes, charset: str) -> None:
    assert isinstance(decode_bytes(data, charset), str)
    assert len(decode_bytes(data, charset)) <= len(data)
    assert len(decode_header_value(data)) <= len(data)
    assert isinstance(decode_rfc2231(data), str)
    assert len(decode_quoted_printable(data)) <= len(data)


def test_every_python_codec_name_is_safe_as_a_charset() -> None:
    """hex, zlib, base64 (bytes-to-bytes), idna (no "replace") raised; a NUL in the name
    raised ValueError: SEARCH BODY on such a message failed."""
    names = [m.name for m in pkgutil.iter_modules(encodings.__path__)] + ["x\0y", "é"]
    for name in names:
        for data in (b"\xff\xfe+-=41\x00", b"abc", b"+AGE-", b"\\u0041"):
            assert isinstance(decode_bytes(data, name), str), name
    raw = (b"MIME-Version: 1.0\r\nSubject: =?hex?q?41?=\r\nContent-Type: text/plain; "
           b"charset=hex\r\n\r\nbody text\r\n")
    assert MimeMessage(raw).body_text() == "body text\r\n"
    assert MimeMessage(raw).header_values("subject") == ["41"]


# ---------------------------------------------------------------- round trips

_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)  # header text
_WORDS = st.lists(st.text("abcdefghij=?:;,<>@\"()\x80é", min_size=1, max_size=8), min_size=1,
                  max_size=8)


@given(st.lists(st.tuples(st.sampled_from(["Subject", "X-A", "from", "Content-Type"]),
                          _WORDS), max_size=6),
       st.sampled_from([b"\r\n", b"\n"]))
def test_header_fields_unfold_what_folding_wrote(fields: list[tuple[str, list[str]]],
                                                 eol: bytes) -> None:
    """RFC 5322 §2.2.3: a fold is CRLF before white space; unfolding removes the CRLF."""
    raw = b"".join(name.encode() + b": " + (eol + b" ").join(w.encode() for w in words) + eol
                   for name, words in fields) + eol + b"body"
    end, body = header_bounds(raw, 0, len(raw))
    assert raw[body:] == b"body"
    got = header_fields(raw, 0, end)
    assert [(f.name, f.value.replace(b"\n", b"")) for f in got] == [
        (name.lower().encode(), b" ".join(w.encode() for w in words)) for name, words in fields]
    assert b"".join(raw[f.start:f.end] for f in got) == raw[:end]  # fields tile the header


@given(_TEXT, st.sampled_from(["utf-8", "iso-8859-1", "utf-16"]))
def test_rfc2047_decodes_what_the_stdlib_encodes(text: str, charset: str) -> None:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    encoded = email.header.Header(text, charset, maxlinelen=76).encode()  # B, folded
    assert decode_header_value(encoded.encode("ascii")) == text
    q = email.quoprimime.header_encode(text.encode("utf-8"), "utf-8")  # Q
    assert decode_header_value(q.encode("ascii")) == text


@given(_TEXT, st.integers(min_value=1, max_value=5))
def test_rfc2231_decodes_what_percent_encoding_writes(text: str, pieces: int) -> None:
    encoded = urllib.parse.quote(text.encode("utf-8"), safe="")
    step = max(1, -(-len(encoded) // pieces))
    chunks = [encoded[i:i + step] for i in range(0, len(encoded), step)] or [""]
    # RFC 2231 §3-4: continuations, the first one carries charset and language
    params = "; ".join(f"title*{i}*={'utf-8' + chr(39) + 'fr' + chr(39) if i == 0 else ''}{c}"
                       for i, c in enumerate(chunks))
    raw = f"MIME-Version: 1.0\r\nContent-Type: text/plain; {params}\r\n\r\n".encode()
    assert param_text(MimeMessage(raw).root.info.params, b"title") == text
    assert decode_rfc2231(b"utf-8''" + encoded.encode()) == text


@given(st.binary(max_size=500))
def test_transfer_encodings_round_trip(data: bytes) -> None:
    for cte, body in ((b"base64", base64.encodebytes(data)),
                      (b"quoted-printable", quopri.encodestring(data.replace(b"\r", b"")))):
        raw = (b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)
        expected = data if cte == b"base64" else data.replace(b"\r", b"")
        assert MimeMessage(raw).root.decoded_body() == expected


@given(st.lists(st.tuples(st.text("abcdef xyz", max_size=10),
                          st.from_regex(r"[a-z0-9.+]{1,8}", fullmatch=True),
                          st.from_regex(r"[a-z0-9]{1,8}(\.[a-z]{2,3})?", fullmatch=True)),
                min_size=1, max_size=5))
def test_address_lists_read_back(addresses: list[tuple[str, str, str]]) -> None:
    written = ", ".join(f'"{name}" <{local}@{domain}>' if name.strip() else f"{local}@{domain}"
                        for name, local, domain in addresses)
    got = parse_address_list(written.encode())
    assert [(a.mailbox, a.host) for a in got] == [(local.encode(), domain.encode())
                                                   for _, local, domain in addresses]


# ---------------------------------------------------------------- linear time

def _shapes() -> dict[str, Callable[[int], bytes]]:
    mp = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    return {
        "header fields": lambda n: b"X-A: b\r\n" * n + b"\r\nbody",
        "one folded field": lambda n: b"Subject: a" + b"\r\n b" * n + b"\r\n\r\nbody",
        "parts": lambda n: mp + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * n,
        "parts without blank line": lambda n: mp + b"--b\r\nContent-Type: text/plain\r\n" * n,
        "nesting": lambda n: b"MIME-Version: 1.0\r\n" + b"".join(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
            for i in range(n)),
        "obs-routes": lambda n: b"From: " + b"<@a," * n + b"\r\n\r\n",
        "domain literals": lambda n: b"From: " + b"a@[x," * n + b"\r\n\r\n",
        "comments": lambda n: b"From: " + b"(a" * n + b"\r\n\r\n",
        "quotes": lambda n: b'From: "a\\' * n + b"\r\n\r\n",
        "rfc2231 parameters": lambda n: b"MIME-Version: 1.0\r\nContent-Type: text/plain" + b"".join(
            b"; a%d*=x" % i for i in range(n)) + b"\r\n\r\n",
        "encoded words": lambda n: b"Subject: " + b"=?utf-8?q?a?= " * n + b"\r\n\r\n",
        "qp white space": lambda n: b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: "
                                    b"quoted-printable\r\n\r\n" + b" " * (20 * n) + b"x",
        "punycode text": lambda n: b"MIME-Version: 1.0\r\nContent-Type: text/plain; "
                                   b"charset=punycode\r\n\r\n" + b"a" * (4 * n) + b"-" + b"b" * n,
    }


def _read_time(raw: bytes) -> float:
    return best_cpu_time(lambda: _read_everything(raw))


@pytest.mark.parametrize("shape", list(_shapes()))
def test_reading_is_linear_whatever_the_shape(shape: str) -> None:
    """2 000 then 20 000 units: ~10x the time, not 100x (parts without a blank line took
    25 s for 50 000, obs-routes and RFC 2231 parameters were quadratic too, punycode 10 s
    for 200 kB)."""
    make = _shapes()[shape]
    small, large = _read_time(make(2_000)), _read_time(make(20_000))
    assert large <= 15 * small + 0.02, (small, large)
    assert large < 3.0, large


def test_nesting_and_parts_are_bounded() -> None:
    deep = _shapes()["nesting"](MAX_DEPTH * 3)
    depth, part = 0, MimeMessage(deep).root
    while part.children:
        part, depth = part.children[0], depth + 1
    assert depth == MAX_DEPTH
    many = _shapes()["parts"](MAX_PARTS + 50)
    assert len(MimeMessage(many).root.children) == MAX_PARTS - 1  # the root counts as one
    assert len(MimeMessage(many, max_parts=10).root.children) == 9
    assert mime.MimeMessage(b"").root.end == 0


@given(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b))
@settings(max_examples=200, deadline=2000)
def test_address_parser_always_moves_on(value: bytes) -> None:
    """A control byte (not white space) starts no token: the parser stayed on it forever."""
    for written in (value, b"Dr" + value + b" A <a@b>", b"a@" + value, b"g: " + value + b";"):
        assert len(parse_address_list(written)) <= len(written) + 2


# ---------------------------------------------------------------- over IMAP


def test_control_byte_in_an_address_does_not_hang_fetch(running_node: Node) -> None:
    """Found by the hypothesis test above: ``From: Dr\\x01 A <...>`` (a CHAR8 literal, legal
    over SMTP too) sent the address parser into an endless loop, so FETCH ENVELOPE never
    answered and a worker thread span. Real server, imaplib: answered at once."""
    import imaplib

    m = imaplib.IMAP4_SSL("127.0.0.1", running_node.ports["imaps"],
                          ssl_context=running_node.client_context(), timeout=10)
    try:
        m.login(f"bob@{DOMAIN}", PASSWORD)
        m.create("Controls")
        raw = (b"From: Dr\x01 A <a\x01b@x.example>\r\nTo: c@d\x01e, \x7f\r\n"
               b"Cc: a@\x01\r\nSubject: s\r\n\r\nbody\r\n")
        assert m.append("Controls", None, None, raw)[0] == "OK"
        assert m.select("Controls")[0] == "OK"
        started = time.monotonic()
        typ, data = m.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
        first = data[0][0] if isinstance(data[0], tuple) else data[0]
        assert typ == "OK" and isinstance(first, bytes) and b"ENVELOPE (" in first
        assert time.monotonic() - started < 5
        assert m.search(None, "FROM", "x.example") == ("OK", [b"1"])
    finally:
        m.logout()


def _random_multipart(rnd: random.Random, depth: int = 0) -> bytes:
    """Nested multiparts with long and short boundaries, stray and cut boundary lines."""
    bounds = [b"abcdefgh12", b"abcdefgh1234", b"zz", b"Boundary_XYZ_000", b"abcdefgh"]
    pieces = [b"\r\n", b"\n", b"--", b"-- ", b"x", b"\r\n\r\n", b"Content-Type: text/plain\r\n",
              b"Content-Transfer-Encoding: base64\r\n", b"UEsDBAo=\r\n"]
    out: list[bytes] = []
    for _ in range(rnd.randint(0, 10)):
        r = rnd.random()
        if r < 0.15 and depth < 5:
            b = rnd.choice(bounds)
            out += [b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n',
                    b"\r\n" if rnd.random() < .8 else b"", b"preamble\r\n"]
            for _ in range(rnd.randint(0, 3)):
                out += [b"--" + b + rnd.choice([b"\r\n", b"\n", b"", b"x\r\n"]),
                        _random_multipart(rnd, depth + 1)]
            out.append(b"\r\n--" + b + rnd.choice([b"--\r\n", b"--", b"\r\n", b""]))
        elif r < 0.3:
            out.append(b"\r\n--" + rnd.choice(bounds)
                       + rnd.choice([b"--", b"", b"\r\n", b"--\r\n"]))
        elif r < 0.35 and depth < 5:
            out += [b"Content-Type: message/rfc822\r\n\r\n", _random_multipart(rnd, depth + 1)]
        else:
            out.append(rnd.choice(pieces))
    return b"".join(out)


def _tree_shape(part: mime.Part) -> tuple[object, ...]:
    return (part.start, part.header_end, part.body, part.end, part.mime_end, part.info.type,
            part.info.subtype, part.multipart, tuple(_tree_shape(c) for c in part.children),
            _tree_shape(part.message) if part.message is not None else None)


@given(st.randoms(use_true_random=False), st.integers(0, 100))
@settings(max_examples=300, deadline=None)
def test_boundaries_found_by_their_own_needles_as_by_every_line(rnd: random.Random,
                                                                cut: int) -> None:
    """A few long boundaries are each searched for as a whole (issue 18: through base64
    text, 5x faster than looking at every line that starts with "--"): the same tree."""
    raw = b"MIME-Version: 1.0\r\n" + _random_multipart(rnd)
    raw = raw[:len(raw) * cut // 100] if cut < 30 else raw
    for max_parts in (MAX_PARTS, 3):
        fast = _tree_shape(MimeMessage(raw, max_parts=max_parts).root)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mime, "_FEW_BOUNDARIES", 0)  # every "--" line, as before
            every_line = _tree_shape(MimeMessage(raw, max_parts=max_parts).root)
        assert fast == every_line
