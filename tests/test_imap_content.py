"""Unit tests of the IMAP content side: sequence sets, modified UTF-7, MIME, FETCH, SEARCH."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.imap import mime
from proxy.imap.fetch import (
    UnknownCte,
    internal_date,
    needs_content,
    parse_fetch_items,
    render_fetch,
    sets_seen,
)
from proxy.imap.mime import Section, parse_message
from proxy.imap.search import parse_search
from proxy.imap.seqset import SequenceSet, format_sequence_set, parse_sequence_set
from proxy.imap.tokens import Atom, ImapParseError, MessageMeta, Token
from proxy.imap.utf7 import decode_mailbox_name, encode_mailbox_name
from tests.imap_corpus import CORPUS, SECTIONS
from tests.imap_dovecot_reference import REFERENCE

# ---------------------------------------------------------------- sequence sets (RFC 3501 §9)


@pytest.mark.parametrize(
    ("text", "largest", "expected"),
    [
        ("1", 5, [1]),
        ("1:3", 5, [1, 2, 3]),
        ("3:1", 5, [1, 2, 3]),
        ("*", 5, [5]),
        ("*:4", 5, [4, 5]),
        ("4:*", 5, [4, 5]),
        ("2,4:5,1", 9, [1, 2, 4, 5]),
        ("1:3,2:4", 9, [1, 2, 3, 4]),
        ("7", 5, []),  # a lone number above the largest is dropped
        ("7:9", 5, []),
        ("7:*", 5, [5]),  # a range with * always covers the largest (RFC 3501 §6.4.8)
        ("*:9", 5, [5]),
        ("3:9", 5, [3, 4, 5]),
        ("1:*", 0, []),  # empty mailbox
        ("*", 0, []),
    ],
)
def test_seqset_iter(text: str, largest: int, expected: list[int]) -> None:
    s = parse_sequence_set(text)
    assert list(s.iter(largest)) == expected
    for n in range(0, largest + 3):
        assert s.contains(n, largest) == (n in expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("0", "numbers start at 1"),
        ("1:0", "numbers start at 1"),
        ("01", "numbers start at 1"),
        ("1,,2", "empty item"),
        ("1,", "empty item"),
        ("a", "'a' is not a number or *"),
        ("1:2:3", "'2:3' is not a number or *"),
        ("1 2", "is not a number"),
        ("-1", "is not a number"),
        ("4294967296", "above 4294967295"),
        ("١", "is not a number"),  # non-ASCII digit
    ],
)
def test_seqset_errors(text: str, message: str) -> None:
    with pytest.raises(ImapParseError, match=message):
        parse_sequence_set(text)


def test_seqset_large_range_is_cheap() -> None:
    s = parse_sequence_set("1:*")
    assert s.resolved(100_000) == [(1, 100_000)]
    assert sum(1 for _ in s.iter(100_000)) == 100_000
    assert s.contains(99_999, 100_000)
    assert str(parse_sequence_set("5:2,*,*:3,7")) == "5:2,*,*:3,7"
    assert parse_sequence_set("4294967295").contains(4294967295, 4294967295)


def test_format_sequence_set() -> None:
    assert format_sequence_set([1, 2, 3, 5, 9, 10]) == "1:3,5,9:10"
    assert format_sequence_set([]) == ""
    assert format_sequence_set([7]) == "7"
    assert format_sequence_set([4, 5, 1, 2]) == "4:5,1:2"  # order kept (COPYUID pairs)


@given(st.lists(st.integers(1, 60), max_size=30))
def test_format_then_parse(numbers: list[int]) -> None:
    ordered = sorted(set(numbers))
    text = format_sequence_set(ordered)
    if ordered:
        assert list(parse_sequence_set(text).iter(100)) == ordered


_SEQ_ITEM = st.one_of(st.just("*"), st.integers(1, 40).map(str))


@given(st.lists(st.tuples(_SEQ_ITEM, st.one_of(st.none(), _SEQ_ITEM)), min_size=1, max_size=6),
       st.integers(0, 45))
def test_seqset_against_naive(items: list[tuple[str, str | None]], largest: int) -> None:
    text = ",".join(a if b is None else f"{a}:{b}" for a, b in items)
    expected: set[int] = set()
    for a, b in items:
        lo = largest if a == "*" else int(a)
        hi = lo if b is None else (largest if b == "*" else int(b))
        lo, hi = min(lo, hi), max(lo, hi)
        star = a == "*" or b == "*"
        expected |= {n for n in range(lo, hi + 1) if 1 <= n <= largest}
        if star and largest and not (lo <= largest <= hi):
            expected.add(largest)
    s = parse_sequence_set(text)
    assert list(s.iter(largest)) == sorted(expected)
    assert all(s.contains(n, largest) == (n in expected) for n in range(0, 47))


@given(st.text(max_size=20))
def test_seqset_any_input(text: str) -> None:
    try:
        s = parse_sequence_set(text)
    except ImapParseError:
        return
    assert isinstance(s, SequenceSet)
    list(s.iter(50))


# ---------------------------------------------------------------- modified UTF-7 (RFC 3501 §5.1.3)


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Envoyés", "Envoy&AOk-s"),
        ("A&B", "A&-B"),
        ("&", "&-"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
        ("Éé", "&AMkA6Q-"),
        ("\U0001f600", "&2D3eAA-"),
        ("a\tb", "a&AAk-b"),
    ],
)
def test_utf7_known(name: str, wire: str) -> None:
    assert encode_mailbox_name(name) == wire
    assert decode_mailbox_name(wire) == name


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("Envoy&AOk", "unterminated"),
        ("&AGE-", "printable US-ASCII must not be BASE64"),  # "a" encoded
        ("&AOk-&AOk-", "adjacent"),
        ("&AOl-", "padding bits"),
        ("&AO-", "whole UTF-16 units"),
        ("&A-", "whole UTF-16 units"),
        ("&AOk/-", "invalid character"),
        ("&AOk=-", "invalid character"),
        ("&2D0-", "unpaired surrogate"),
        ("Envoyés", "must be BASE64 encoded"),
        ("a\x00b", "must be BASE64 encoded"),
    ],
)
def test_utf7_invalid(wire: str, message: str) -> None:
    with pytest.raises(ImapParseError, match=message):
        decode_mailbox_name(wire)


@given(st.text(max_size=30))
def test_utf7_round_trip(name: str) -> None:
    wire = encode_mailbox_name(name)
    assert wire.isascii()
    assert decode_mailbox_name(wire) == name


@given(st.text(alphabet=st.sampled_from("&-AOk,+/=Zaé2D0 \x00"), max_size=15))
def test_utf7_any_input(wire: str) -> None:
    try:
        name = decode_mailbox_name(wire)
    except ImapParseError:
        return
    assert encode_mailbox_name(name) == wire  # only the canonical form is accepted


# ------------------------------------------------ MIME: ENVELOPE, BODYSTRUCTURE, sections

# Where mss is known to differ from Dovecot (none in this corpus; tests/dovecot_fuzz.py finds
# only HEADER.FIELDS.NOT of encapsulated messages cut short by an enclosing boundary).
_KNOWN_DEVIATIONS: set[tuple[str, str]] = set()


def _ours(raw: bytes) -> dict[str, bytes | None]:
    m = parse_message(raw)
    out: dict[str, bytes | None] = {
        "ENVELOPE": m.envelope(), "BODY": m.bodystructure(False),
        "BODYSTRUCTURE": m.bodystructure(True)}
    for s in SECTIONS:
        out[f"BODY[{s}]"] = m.section(s)
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_same_as_dovecot(name: str) -> None:
    raw = CORPUS[name]
    if name == "bare_lf":  # Dovecot serves a bare-LF message with CRLF: compare that form
        raw = raw.replace(b"\n", b"\r\n")
    reference = REFERENCE[name]
    for key, value in _ours(raw).items():
        if (name, key) in _KNOWN_DEVIATIONS:
            continue
        expected = reference[key]
        # mss: None for a section that does not exist, served as Dovecot's empty literal
        assert (b"" if value is None else value) == expected, (name, key)


def test_bare_lf_sizes_are_the_stored_octets() -> None:
    m = parse_message(CORPUS["bare_lf"])
    assert m.bodystructure(False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1)'
        b'("text" "plain" ("charset" "ISO-8859-1") NIL NIL "base64" 32 0) "mixed")')
    assert m.section("1") == b"one\ntwo"
    assert m.section("2.MIME") == (b"Content-Type: text/plain; charset=ISO-8859-1\n"
                                   b"Content-Transfer-Encoding: base64\n\n")
    assert m.section("HEADER.FIELDS (SUBJECT)") == b"Subject: bare LF\n\r\n"
    assert "Charlotte et philippe" in m.text_for_search()


def test_envelope_exact() -> None:
    # Hand-checked against RFC 3501 §7.4.2 (group syntax: start (NIL NIL name NIL), end all NIL)
    assert parse_message(CORPUS["groups"]).envelope() == (
        b'("Sat, 28 Nov 2026 12:00:00 +0100" "groups" ((NIL NIL "alice" "a.example")) '
        b'((NIL NIL "alice" "a.example")) ((NIL NIL "alice" "a.example")) '
        b'((NIL NIL "Equipe soins" NIL)(NIL NIL "bob" "b.example")'
        b'("Carol" NIL "carol" "c.example")(NIL NIL NIL NIL)(NIL NIL "eve" "e.example")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b'((NIL NIL "secret" "s.example")) NIL "<6@a.example>")')
    # raw UTF-8 names and subject are literals; sender and reply-to default to from
    env = parse_message(CORPUS["raw_utf8"]).envelope()
    assert env.startswith(b'("Fri, 27 Nov 2026 12:00:00 +0100" {28}\r\nR\xc3\xa9union du comit'
                          b'\xc3\xa9 "sant\xc3\xa9" (({13}\r\nZo\xc3\xa9 Lef\xc3\xa8vre NIL "zoe"')
    # missing Date and Message-ID, a mailbox without domain, a source route
    assert parse_message(CORPUS["no_date"]).envelope() == (
        b'(NIL "no date, no id" ((NIL NIL "nobody" "MISSING_DOMAIN")) '
        b'((NIL NIL "sec" "a.example")) ((NIL NIL "replies" "a.example")) '
        b'((NIL "@route.example" "bob" "b.example")) NIL NIL NIL NIL)')


def test_bodystructure_rfc2231_and_extension_data() -> None:
    m = parse_message(CORPUS["rfc2231"])
    assert m.bodystructure(True) == (
        b'(("application" "octet-stream" '
        b'("name*" "utf-8\'\'compte%20rendu%20d%C3%A9taill%C3%A9.bin") NIL NIL "base64" 8 '
        b'NIL ("attachment" ("filename" "compte rendu detaille.bin")) NIL NIL) '
        b'"mixed" ("boundary" "=_b") NIL NIL NIL)')
    params = parse_message(CORPUS["params"]).bodystructure(True)
    assert params == (
        b'("TEXT" "HTML" ("CHARSET" "UTF-8" "Format" "Flowed") "<part1@a.example>" '
        b'"the report" "QUOTED-PRINTABLE" 25 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("inline" ("filename" "r.html" "size" "120")) ("fr" "en-GB") '
        b'"http://a.example/r.html")')


def test_sections_of_encapsulated_message() -> None:
    m = parse_message(CORPUS["rfc822"])
    assert m.section("2.HEADER.FIELDS (SUBJECT)") == b"Subject: Original\r\n\r\n"
    assert m.section("2.1") == b"Original text."
    assert m.section("2.2.MIME") == b"Content-Type: text/html\r\n\r\n"
    assert m.section("2.3") is None
    assert m.section("1.HEADER") is None  # HEADER of a non-message part
    assert m.section(Section((2,), "TEXT")).startswith(b"--b2\r\n")
    assert m.find_part((2, 2)) is not None


def test_header_values_and_search_text() -> None:
    m = parse_message(CORPUS["encoded"])
    assert m.header_values("subject") == ["Résultats d'analyse urgents"]
    assert m.header_values("From") == ["René Dupré <rene@a.example>"]
    assert m.header_values("to") == ['Françoise <francoise@b.example>, "Élodie" '
                                     '<elodie@b.example>']
    assert m.header_values("x-none") == []
    nested = parse_message(CORPUS["nested"])
    text = nested.text_for_search()
    assert "Résultats normaux." in text  # quoted-printable and UTF-8 undone
    assert "JVBERi" not in text  # not a text part
    assert "Original text." in parse_message(CORPUS["rfc822"]).text_for_search()
    assert parse_message(CORPUS["raw_utf8"]).header_values("subject") == [
        'Réunion du comité "santé"']


@pytest.mark.parametrize(
    ("spec", "message"),
    [("1.0", "invalid section part number"), ("BOGUS", "invalid section"),
     ("MIME", "needs a part number"), ("1.", "invalid section"),
     ("HEADER.FIELDS", "needs a list"), ("TEXT (A)", "takes no field list")],
)
def test_section_errors(spec: str, message: str) -> None:
    with pytest.raises(ImapParseError, match=message):
        parse_message(b"").section(spec)


_LINE = st.sampled_from([
    "--b", "--b--", "--c", "--c--", "", "Content-Type: multipart/mixed; boundary=c",
    "Content-Type: message/rfc822", "Content-Type: multipart/digest; boundary=b",
    "Content-Transfer-Encoding: base64", "Subject: =?utf-8?q?x?=", "From: a@b, (c) <d@e>",
    "To: g: h@i;", " folded", "text", "=C3=A9", "Content-Type: text/plain; charset=latin1",
])


@given(st.lists(_LINE, max_size=30), st.booleans())
def test_any_message_parses(lines: list[str], crlf: bool) -> None:
    raw = (("\r\n" if crlf else "\n").join(
        ["Content-Type: multipart/mixed; boundary=b", *lines])).encode()
    m = parse_message(raw)
    assert m.envelope().startswith(b"(")
    assert m.bodystructure(True).startswith(b"(")
    assert m.bodystructure(False).startswith(b"(")
    m.text_for_search()
    for part in m.root.walk():
        assert 0 <= part.start <= part.header_end <= part.body <= part.end <= len(raw)
    for spec in SECTIONS:
        value = m.section(spec)
        assert value is None or isinstance(value, bytes)


_ATOM = st.text(alphabet="abcXYZ019!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=5)
_NAME = st.one_of(
    st.none(), st.lists(_ATOM, min_size=1, max_size=3).map(" ".join),
    st.text(alphabet='ab ,.;:<>@()é\\"\t', max_size=8).map(lambda t: '"' + t + '"'))
_ADDR = st.tuples(_NAME, st.lists(_ATOM, min_size=1, max_size=2).map(".".join),
                  st.lists(_ATOM, min_size=1, max_size=3).map(".".join))


@given(st.lists(_ADDR, min_size=1, max_size=4), st.sampled_from([",", ", ", " ,\t"]))
def test_address_fast_path_agrees_with_parser(addrs: list[tuple[str | None, str, str]],
                                              sep: str) -> None:
    text = sep.join(f"{local}@{domain}" if name is None else f"{name} <{local}@{domain}>"
                    for name, local, domain in addrs)
    value = text.encode()
    assert mime._address_entries(value) == mime._address_entries_full(value)


# ---------------------------------------------------------------- FETCH items (RFC 3501 §6.4.5)

_META = MessageMeta(seq=3, uid=42, flags=("\\Seen", "$Label1"), internal_date=1795424400.0,
                    size=len(CORPUS["simple"]), modseq=7)


def _fetch(arg: Token, raw: bytes | None = CORPUS["simple"], *, add_uid: bool = False) -> bytes:
    return render_fetch(parse_fetch_items(arg), _META, raw, add_uid=add_uid)


def test_fetch_macros_and_metadata() -> None:
    assert _fetch(Atom("FAST"), None) == (
        b'(FLAGS (\\Seen $Label1) INTERNALDATE "23-Nov-2026 09:00:00 +0000" RFC822.SIZE 181)')
    assert [i.name for i in parse_fetch_items(Atom("full"))] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]
    assert _fetch([Atom("MODSEQ"), Atom("UID")], None, add_uid=True) == b"(MODSEQ (7) UID 42)"
    assert _fetch(Atom("FLAGS"), None, add_uid=True) == b"(UID 42 FLAGS (\\Seen $Label1))"
    assert internal_date(1794121200.0) == b'"08-Nov-2026 07:00:00 +0000"'
    assert not needs_content(parse_fetch_items(Atom("FAST")))
    assert needs_content(parse_fetch_items(Atom("ALL")))


def test_fetch_content_items() -> None:
    body = b"Bonjour,\r\nsuite au rendez-vous.\r\n"
    assert _fetch(Atom("BODY", section=(Atom("TEXT"),))) == (
        b"(FLAGS (\\Seen $Label1) BODY[TEXT] {%d}\r\n" % len(body) + body + b")")
    assert _fetch(Atom("BODY.PEEK", section=(Atom("HEADER.FIELDS"), [Atom("from"), b"To"]),
                       partial=(0, 10))) == b"(BODY[HEADER.FIELDS (FROM TO)]<0> {10}\r\nFrom: Alic)"
    assert _fetch(Atom("BODY.PEEK", section=(), partial=(500, 10))) == b"(BODY[]<500> {0}\r\n)"
    assert _fetch(Atom("BODY.PEEK", section=(Atom("3"),))) == b"(BODY[3] {0}\r\n)"
    assert _fetch([Atom("RFC822.HEADER"), Atom("UID")]).startswith(
        b"(RFC822.HEADER {148}\r\nDate: ")
    assert _fetch(Atom("RFC822.TEXT")).startswith(b"(FLAGS (\\Seen $Label1) RFC822.TEXT {33}")
    assert _fetch(Atom("BODY")) == (
        b'(BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 33 2))')
    assert _fetch(Atom("ENVELOPE")) == b"(ENVELOPE " + REFERENCE["simple"]["ENVELOPE"] + b")"


def test_fetch_binary() -> None:
    raw = CORPUS["nested"]
    pdf = render_fetch(parse_fetch_items(Atom("BINARY.PEEK", section=(Atom("2"),))), _META, raw,
                       add_uid=False)
    assert pdf.startswith(b"(BINARY[2] ~{80}\r\n%PDF-1.4")  # literal8: has NUL
    size = render_fetch(parse_fetch_items(Atom("BINARY.SIZE", section=(Atom("1.1"),))), _META,
                        raw, add_uid=False)
    assert size == b"(BINARY.SIZE[1.1] %d)" % len("Résultats normaux.".encode())
    nul = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\nAAE=\r\n")
    assert render_fetch(parse_fetch_items(Atom("BINARY.PEEK", section=(Atom("1"),))), _META, nul,
                        add_uid=False) == b"(BINARY[1] ~{2}\r\n\x00\x01)"
    odd = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    with pytest.raises(UnknownCte):
        render_fetch(parse_fetch_items(Atom("BINARY", section=(Atom("1"),))), _META, odd,
                     add_uid=False)


_QP = (b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
       b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"line one \t \r\nsoft=  \r\nbreak\r\nencoded=20\r\nlast  ")


def test_quoted_printable_drops_line_end_padding() -> None:
    """RFC 2045 §6.7 rule 3: white space ending an encoded line is deleted by the decoder,
    also after a soft line break (rule 5); an encoded =20 stays. BINARY and SEARCH both."""
    decoded = b"line one\r\nsoftbreak\r\nencoded \r\nlast"
    assert render_fetch(parse_fetch_items(Atom("BINARY.PEEK", section=(Atom("1"),))), _META,
                        _QP, add_uid=False) == b"(BINARY[1] {%d}\r\n%s)" % (len(decoded),
                                                                            decoded)
    assert parse_message(_QP).text_for_search() == decoded.decode()
    assert parse_message(_QP).root.decoded_body() == decoded


def _search_hits(key: list[Token], raw: bytes) -> bool:
    return parse_search(key).matches(_META, largest_seq=3, largest_uid=42,
                                     load=lambda: parse_message(raw))


@pytest.mark.parametrize(("header", "query", "hit"), [
    (b"From: <user-from (comment)@ (comment) domain.org>", b"user-from@domain.org", True),
    (b"From: <user-from (comment)@ (comment) domain.org>", b"comment", True),
    (b"From: user-from@domain.org (RealFrom)", b"RealFrom <user-from@domain.org>", True),
    (b"From: =?utf-8?q?Ren=C3=A9?= <rene@x.example>", "René <rene@".encode(), True),
    (b"To: grp: a@x.example, b@y.example;", b"grp:", True),
    (b"From: user-from@domain.org (RealFrom)", b"nobody", False),
])
def test_address_search_matches_the_envelope_form(header: bytes, query: bytes,
                                                  hit: bool) -> None:
    """RFC 3501 §6.4.4: FROM/TO/CC/BCC look in the ENVELOPE's address structure; the field
    text (comments included) matches too."""
    key = header.split(b":", 1)[0].upper().decode()
    assert _search_hits([Atom(key), query], header + b"\r\n\r\nbody\r\n") is hit


def test_fetch_flags_for_audit() -> None:
    items = {repr(t): parse_fetch_items(t)[0] for t in [
        Atom("BODY", section=()), Atom("BODY.PEEK", section=()), Atom("RFC822"),
        Atom("RFC822.HEADER"), Atom("RFC822.TEXT"), Atom("ENVELOPE"), Atom("BINARY.SIZE",
                                                                           section=())]}
    seen = {k for k, v in items.items() if v.sets_seen}
    assert seen == {repr(Atom("BODY", section=())), repr(Atom("RFC822")),
                    repr(Atom("RFC822.TEXT"))}
    content = {k for k, v in items.items() if v.returns_content}
    assert content == {repr(Atom("BODY", section=())), repr(Atom("BODY.PEEK", section=())),
                       repr(Atom("RFC822")), repr(Atom("RFC822.HEADER")),
                       repr(Atom("RFC822.TEXT"))}
    assert parse_fetch_items(Atom("ENVELOPE"))[0].reveals_headers
    assert sets_seen(parse_fetch_items([Atom("FLAGS"), Atom("RFC822")]))


@pytest.mark.parametrize("section", [s for s in SECTIONS if s])
def test_fetch_echo_as_dovecot(section: str) -> None:
    spec, _, flist = section.partition(" ")
    tokens: tuple[Token, ...] = (Atom(spec.lower()),)
    if flist:
        tokens += ([Atom(f.lower()) for f in flist.strip("()").split()],)
    (item,) = parse_fetch_items(Atom("BODY.PEEK", section=tokens))
    assert item.response_name() == REFERENCE["simple"][f"echo {section}"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (Atom("BOGUS"), "unknown FETCH item 'BOGUS'"),
        ([], "empty FETCH item list"),
        ([Atom("ALL")], "must be used alone"),
        (Atom("BODY.PEEK"), "needs a section"),
        (Atom("FLAGS", section=()), "takes no section"),
        (Atom("RFC822", partial=(0, 1)), "partial needs a section"),
        (Atom("BINARY", section=(Atom("1.MIME"),)), "only part numbers"),
        (Atom("BINARY.SIZE", section=(), partial=(0, 1)), "takes no partial"),
        (Atom("BODY", section=(Atom("HEADER.FIELDS"),)), "needs a list"),
        (Atom("BODY", section=(Atom("HEADER.FIELDS"), [])), "empty field list"),
        (Atom("BODY", section=(Atom("HEADER.FIELDS"), [b"a b"])), "invalid header field"),
        (Atom("BODY", section=(Atom("HEADER.FIELDS"), Atom("A"))), "field list is expected"),
        (Atom("BODY", section=(b"TEXT",)), "invalid BODY section"),
        (Atom("BODY", section=(Atom("TEXT"), [Atom("A")])), "takes no field list"),
        (b"FLAGS", "an atom is expected"),
    ],
)
def test_fetch_errors(arg: Token, message: str) -> None:
    with pytest.raises(ImapParseError, match=message):
        parse_fetch_items(arg)


_FETCH_ATOM = st.sampled_from(["FLAGS", "BODY", "BODY.PEEK", "BINARY", "BINARY.SIZE", "ALL",
                               "RFC822", "1", "HEADER.FIELDS", "HEADER", "1.2.MIME", "TEXT",
                               "0", "x", "UID", "1.HEADER.FIELDS.NOT", "MIME", ""])
_FETCH_TOKEN = st.recursive(
    st.one_of(
        st.builds(Atom, _FETCH_ATOM), st.binary(max_size=4),
        st.builds(Atom, _FETCH_ATOM,
                  st.one_of(st.none(), st.lists(st.builds(Atom, _FETCH_ATOM), max_size=2)
                            .map(tuple)),
                  st.one_of(st.none(), st.tuples(st.integers(-1, 9), st.integers(-1, 9))))),
    lambda children: st.lists(children, max_size=3), max_leaves=8)


@given(_FETCH_TOKEN)
def test_fetch_items_any_input(arg: Token) -> None:
    try:
        items = parse_fetch_items(arg)
    except ImapParseError:
        return
    for raw in (CORPUS["nested"], CORPUS["rfc822"]):
        try:
            out = render_fetch(items, _META, raw, add_uid=True)
        except UnknownCte:
            continue
        assert out.startswith(b"(") and b"UID 42" in out and out.endswith(b")")


@given(st.binary(max_size=300))
def test_any_bytes_parse(raw: bytes) -> None:
    m = parse_message(raw)
    m.envelope()
    m.bodystructure(True)
    m.text_for_search()
    m.header_text()
    for spec in ("", "HEADER", "TEXT", "1", "1.MIME", "2.1", "HEADER.FIELDS.NOT (FROM)"):
        m.section(spec)
