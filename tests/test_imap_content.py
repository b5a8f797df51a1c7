"""Unit tests of the IMAP content side: sequence sets, modified UTF-7, MIME, FETCH, SEARCH."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.imap.seqset import SequenceSet, format_sequence_set, parse_sequence_set
from proxy.imap.tokens import ImapParseError
from proxy.imap.utf7 import decode_mailbox_name, encode_mailbox_name

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
