"""SEARCH: SearchProgram.matches against a reference evaluation written differently.

The reference reads messages with the standard library's email package (compat32 parser,
email.header for RFC 2047, get_payload(decode=True) for transfer encodings) and evaluates the
search tokens directly, without the Key tree. Hypothesis generates both messages and
programs (RFC 3501 §6.4.4).
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.message
import email.utils
import quopri
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.imap.mime import parse_message
from proxy.imap.search import BadCharset, parse_search
from proxy.imap.tokens import Atom, ImapParseError, MessageMeta, Token
from tests.imap_corpus import CORPUS, SEARCHES
from tests.imap_dovecot_reference import SEARCH_REFERENCE

WORDS = ["alpha", "Bravo", "charlie", "délta", "écho", "foxtrot", "GOLF", "hôtel"]
FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Label1"]
DAYS = [dt.date(2026, 11, d) for d in (1, 2, 3, 20, 21)]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


# ---------------------------------------------------------------- generated messages


def _encode_phrase(text: str, how: str) -> str:
    if text.isascii() or how == "raw":
        return text
    if how == "b":
        return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="
    q = quopri.encodestring(text.encode(), header=True).decode()
    return "=?utf-8?q?" + q + "?="


def _body(text: str, cte: str) -> tuple[str, bytes]:
    data = text.encode()
    if cte == "base64":
        return cte, base64.encodebytes(data)
    if cte == "quoted-printable":
        return cte, quopri.encodestring(data)
    return ("8bit" if not text.isascii() else "7bit"), data


@dataclass
class Generated:
    raw: bytes
    meta: MessageMeta


@st.composite
def messages(draw: st.DrawFn) -> Generated:
    def phrase(lo: int = 1, hi: int = 3) -> str:
        return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=lo, max_size=hi)))

    how = draw(st.sampled_from(["b", "q", "raw"]))
    subject = _encode_phrase(phrase(), how)
    sender = _encode_phrase(phrase(1, 2), how)
    day = draw(st.sampled_from(DAYS))
    lines = [f"From: {sender} <{draw(st.sampled_from(WORDS[:3])).lower()}@a.example>",
             f"To: {draw(st.sampled_from(WORDS)).lower()}@b.example",
             f"Subject: {subject}", "MIME-Version: 1.0"]
    if draw(st.booleans()):
        lines.insert(0, "Date: " + email.utils.format_datetime(
            dt.datetime(day.year, day.month, day.day, draw(st.integers(0, 23)), 5,
                        tzinfo=dt.timezone(dt.timedelta(hours=draw(st.integers(-5, 5)))))))
    if draw(st.booleans()):
        lines.append(f"Cc: {draw(st.sampled_from(WORDS)).lower()}@c.example")
    shape = draw(st.sampled_from(["single", "alternative", "attachment"]))
    cte, body = _body(phrase(1, 6) + "\n", draw(st.sampled_from(["7bit", "base64",
                                                                "quoted-printable"])))
    head = "\r\n".join(lines).encode() + b"\r\n"
    text_head = f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}"
    if shape == "single":
        raw = head + text_head.encode() + b"\r\n\r\n" + body
    else:
        sub = "alternative" if shape == "alternative" else "mixed"
        if shape == "alternative":
            second = (b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>" +
                      phrase().encode() + b"</p>\r\n")
        else:
            second = (b"Content-Type: application/octet-stream\r\n"
                      b"Content-Transfer-Encoding: base64\r\n\r\n" +
                      base64.encodebytes(phrase().encode()))
        raw = (head + f"Content-Type: multipart/{sub}; boundary=zz\r\n\r\n--zz\r\n".encode() +
               text_head.encode() + b"\r\n\r\n" + body + b"\r\n--zz\r\n" + second +
               b"\r\n--zz--\r\n")
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    internal = dt.datetime.combine(draw(st.sampled_from(DAYS)), dt.time(draw(st.integers(0, 23))),
                                   dt.UTC).timestamp()
    seq = draw(st.integers(1, 20))
    meta = MessageMeta(seq=seq, uid=seq * 3, flags=tuple(draw(st.sets(st.sampled_from(FLAGS)))),
                       internal_date=internal, size=len(raw), modseq=draw(st.integers(1, 50)))
    return Generated(raw, meta)


# ---------------------------------------------------------------- generated programs


def _date_token(day: dt.date) -> Atom:
    return Atom(f"{day.day}-{MONTHS[day.month - 1]}-{day.year}")


def _word() -> st.SearchStrategy[bytes]:
    return st.sampled_from(WORDS + ["", "ALP", "o b", "a.example", "x-none"]).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w[1:]])).map(lambda w: w.encode())


_LEAF: st.SearchStrategy[list[Token]] = st.one_of(
    st.sampled_from(["ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED",
                     "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"]).map(lambda k: [Atom(k)]),
    st.tuples(st.sampled_from(["KEYWORD", "UNKEYWORD"]), st.sampled_from(["$Label1", "$label1",
                                                                          "Other"])).map(
        lambda t: [Atom(t[0]), Atom(t[1])]),
    st.tuples(st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 900)).map(
        lambda t: [Atom(t[0]), Atom(str(t[1]))]),
    st.tuples(st.sampled_from(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]),
              st.sampled_from(DAYS)).map(lambda t: [Atom(t[0]), _date_token(t[1])]),
    st.tuples(st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"]),
              _word()).map(lambda t: [Atom(t[0]), t[1]]),
    st.tuples(st.sampled_from(["Subject", "X-None", "mime-version", "CC"]), _word()).map(
        lambda t: [Atom("HEADER"), t[0].encode(), t[1]]),
    st.sampled_from(["1:5", "*", "2,4:*", "7:3"]).map(lambda s: [Atom(s)]),
    st.sampled_from(["1:15", "*", "30:*", "9,12"]).map(lambda s: [Atom("UID"), Atom(s)]),
    st.integers(1, 50).map(lambda n: [Atom("MODSEQ"), Atom(str(n))]),
)


def _programs() -> st.SearchStrategy[list[Token]]:
    return st.recursive(
        _LEAF,
        lambda inner: st.one_of(
            inner.map(lambda k: [Atom("NOT"), *k]),
            st.tuples(inner, inner).map(lambda t: [Atom("OR"), *t[0], *t[1]]),
            st.lists(inner, min_size=1, max_size=3).map(
                lambda ks: [[tok for k in ks for tok in k]]),
            st.lists(inner, min_size=2, max_size=3).map(lambda ks: [tok for k in ks for tok in k]),
        ),
        max_leaves=6)


# ---------------------------------------------------------------- the reference


def _decoded(value: str) -> str:
    # raw UTF-8 header bytes come back surrogate-escaped from message_from_bytes (RFC 6532)
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    parts = email.header.decode_header(value)
    if len(parts) == 1 and isinstance(parts[0][0], str):
        return parts[0][0]
    return str(email.header.make_header(parts))


class Reference:
    def __init__(self, raw: bytes, meta: MessageMeta, largest_seq: int, largest_uid: int):
        self.msg = email.message_from_bytes(raw)
        self.meta, self.largest_seq, self.largest_uid = meta, largest_seq, largest_uid

    def headers(self, name: str) -> list[str]:
        return [_decoded(v) for k, v in self.msg.raw_items() if k.lower() == name.lower()]

    def body(self) -> str:
        texts = []
        for part in self.msg.walk():
            if part.get_content_maintype() == "text" and not part.is_multipart():
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
        return "\n".join(texts)

    def in_set(self, text: str, n: int, largest: int) -> bool:
        for item in text.split(","):
            lo, _, hi = item.partition(":")
            a = largest if lo == "*" else int(lo)
            b = a if not hi else (largest if hi == "*" else int(hi))
            if min(a, b) <= n <= max(a, b):
                return True
        return False

    def run(self, tokens: list[Token]) -> bool:
        self.tokens, self.pos = tokens, 0
        result = True
        while self.pos < len(self.tokens):
            result = self.one() and result
        return result

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def text(self) -> str:
        tok = self.take()
        return tok.value if isinstance(tok, Atom) else bytes(tok).decode()  # type: ignore[arg-type]

    def one(self) -> bool:
        tok = self.take()
        if isinstance(tok, list):
            saved = (self.tokens, self.pos)
            result = self.run(tok)
            self.tokens, self.pos = saved
            return result
        assert isinstance(tok, Atom)
        key = tok.value.upper()
        flags = {f.lower() for f in self.meta.flags}
        simple = {"ANSWERED": "\\answered", "DELETED": "\\deleted", "DRAFT": "\\draft",
                  "FLAGGED": "\\flagged", "SEEN": "\\seen"}
        if key == "ALL":
            return True
        if key in simple:
            return simple[key] in flags
        if key.startswith("UN") and key[2:] in simple:
            return simple[key[2:]] not in flags
        if key in ("KEYWORD", "UNKEYWORD"):
            return (self.text().lower() in flags) == (key == "KEYWORD")
        if key == "LARGER":
            return self.meta.size > int(self.text())
        if key == "SMALLER":
            return self.meta.size < int(self.text())
        if key in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            wanted = dt.datetime.strptime(self.text(), "%d-%b-%Y").date()
            if key.startswith("SENT"):
                date = self.msg.get("Date")  # none: 1-Jan-1970, as Dovecot
                day = (dt.date(1970, 1, 1) if date is None
                       else email.utils.parsedate_to_datetime(date).date())
                key = key[4:]
            else:
                day = dt.datetime.fromtimestamp(self.meta.internal_date, dt.UTC).date()
            return {"BEFORE": day < wanted, "ON": day == wanted, "SINCE": day >= wanted}[key]
        if key in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            needle = self.text().lower()
            return any(needle in v.lower() for v in self.headers(key))
        if key == "HEADER":
            name = self.text()
            needle = self.text().lower()
            return any(needle in v.lower() for v in self.headers(name))
        if key == "BODY":
            return self.text().lower() in self.body().lower()
        if key == "TEXT":
            needle = self.text().lower()
            header = "\n".join(f"{k}: {_decoded(v)}" for part in self.msg.walk()
                               for k, v in part.raw_items()).lower()  # all parts, as Dovecot
            return needle in header or needle in self.body().lower()
        if key == "NOT":
            return not self.one()
        if key == "OR":
            left = self.one()
            right = self.one()
            return left or right
        if key == "UID":
            return self.in_set(self.text(), self.meta.uid, self.largest_uid)
        if key == "MODSEQ":
            return self.meta.modseq >= int(self.text())
        return self.in_set(tok.value, self.meta.seq, self.largest_seq)


@settings(max_examples=400, deadline=None)
@given(messages(), _programs())
def test_matches_reference(message: Generated, program: list[Token]) -> None:
    largest_seq, largest_uid = 20, 60
    loaded: list[bool] = []

    def load() -> object:
        loaded.append(True)
        return parse_message(message.raw)

    prog = parse_search(program, charset="UTF-8")
    got = prog.matches(message.meta, largest_seq=largest_seq, largest_uid=largest_uid,
                       load=load)  # type: ignore[arg-type]
    expected = Reference(message.raw, message.meta, largest_seq, largest_uid).run(program)
    assert got == expected
    if not prog.needs_content:
        assert not loaded  # metadata keys never decrypt the message
    assert len(loaded) <= 1


# the corpus messages with a Subject field (the others have no subject to search for)
WITH_SUBJECT = sorted(name for name, raw in CORPUS.items()
                      if email.message_from_bytes(raw).get_all("subject"))


def test_most_of_the_corpus_has_a_subject() -> None:
    assert len(WITH_SUBJECT) >= 20, WITH_SUBJECT


@pytest.mark.parametrize("name", WITH_SUBJECT)
def test_corpus_subjects_found(name: str) -> None:
    raw = CORPUS[name]
    ref = Reference(raw, MessageMeta(1, 1, (), 0.0, len(raw), 1), 1, 1)
    subjects = ref.headers("subject")
    assert subjects, name
    for subject in subjects:
        words = subject.split()[:3]
        assert words, (name, subject)
        for word in words:
            prog = parse_search([Atom("SUBJECT"), word.encode()], charset="UTF-8")
            assert prog.matches(ref.meta, largest_seq=1, largest_uid=1,
                                load=lambda: parse_message(raw))


@pytest.mark.parametrize(("program", "expected"), list(zip(SEARCHES, SEARCH_REFERENCE,
                                                            strict=True)))
def test_same_as_dovecot(program: list[str], expected: list[str]) -> None:
    # Dovecot 2.3 answers recorded by tests/dovecot_reference.py on the corpus stored with CRLF
    tokens: list[Token] = [Atom(w) if w.isupper() and w.isascii() else w.encode()
                           for w in program]
    prog = parse_search(tokens, charset="UTF-8")
    names = sorted(CORPUS)
    found = []
    for uid, name in enumerate(names, 1):
        raw = CORPUS[name].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        meta = MessageMeta(uid, uid, (), 1795428000.0, len(raw), 1)
        if prog.matches(meta, largest_seq=len(names), largest_uid=len(names),
                        load=lambda raw=raw: parse_message(raw)):
            found.append(name)
    assert found == expected


# ---------------------------------------------------------------- parser


def test_parse_search_examples() -> None:
    prog = parse_search([Atom("CHARSET"), Atom("utf-8"), Atom("TEXT"), "é".encode()])
    assert prog.charset == "UTF-8" and prog.needs_content and not prog.needs_headers_only
    assert parse_search([Atom("FROM"), b"x", Atom("UNSEEN")]).needs_headers_only
    assert not parse_search([Atom("1:*"), Atom("SINCE"), Atom("1-Feb-1994")]).needs_content
    assert parse_search([Atom("SENTON"), b"01-Feb-1994"]).needs_headers_only
    assert parse_search([Atom("MODSEQ"), b"/flags/\\draft", Atom("all"), Atom("620162338")]
                        ).has_modseq
    with pytest.raises(BadCharset):
        parse_search([Atom("CHARSET"), Atom("ISO-8859-1"), Atom("ALL")])
    with pytest.raises(BadCharset):
        parse_search([Atom("ALL")], charset="KOI8-R")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no search key"),
        ([Atom("BOGUS")], "unknown search key 'BOGUS'"),
        ([Atom("SINCE"), Atom("32-Jan-2020")], "invalid date"),
        ([Atom("SINCE"), Atom("1-Foo-2020")], "expected like 1-Feb-1994"),
        ([Atom("LARGER"), Atom("-1")], "invalid size"),
        ([Atom("OR"), Atom("ALL")], "missing search key"),
        ([Atom("FROM")], "missing string after FROM"),
        ([Atom("0:4")], "numbers start at 1"),
        ([Atom("UID"), Atom("1:x")], "not a number"),
        ([[]], "empty parenthesised list"),
        ([b"ALL"], "a search key is expected"),
        ([Atom("HEADER"), b"a b", b"x"], "invalid header field name"),
        ([Atom("KEYWORD"), Atom("\\Seen")], "invalid keyword"),
        ([Atom("MODSEQ"), b"/flags/x", Atom("bogus"), Atom("1")], "invalid MODSEQ entry"),
        ([Atom("CHARSET")], "missing charset"),
        ([Atom("SUBJECT"), b"\xff"], "not valid US-ASCII"),
    ],
)
def test_parse_search_errors(args: list[Token], message: str) -> None:
    with pytest.raises(ImapParseError, match=message):
        parse_search(args)


_ANY_TOKEN = st.recursive(
    st.one_of(st.sampled_from(["ALL", "OR", "NOT", "UID", "1:*", "FROM", "HEADER", "SINCE",
                               "1-Feb-1994", "LARGER", "12", "CHARSET", "MODSEQ", "x", "*",
                               "KEYWORD", "0"]).map(Atom), st.binary(max_size=5)),
    lambda children: st.lists(children, max_size=4), max_leaves=10)


@given(st.lists(_ANY_TOKEN, max_size=6), st.sampled_from([None, "UTF-8", "Latin1"]))
def test_parse_search_any_input(args: list[Token], charset: str | None) -> None:
    try:
        prog = parse_search(args, charset=charset)
    except (ImapParseError, BadCharset):
        return
    raw = CORPUS["nested"]
    meta = MessageMeta(1, 1, ("\\Seen",), 0.0, len(raw), 1)
    prog.matches(meta, largest_seq=1, largest_uid=1, load=lambda: parse_message(raw))
