"""Sequence sets (RFC 3501 §9 "sequence-set"): ``1:3,5,*``, ``5:2``, ``*:4``.

A set is kept as ranges (never expanded) so ``1:*`` over 100 000 messages costs a few
operations. ``*`` is resolved only when the largest number in use is known (§6.4.8: for UID
sets, the largest UID; for message sets, the number of messages).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from proxy.imap.tokens import ImapParseError

STAR = 0  # stands for "*" in a range bound (0 is never a valid seq-number, §9)
_MAX = 2**32 - 1  # nz-number is a 32-bit unsigned integer (§9 "number")


@dataclass(frozen=True)
class SequenceSet:
    """Ranges as ``(low, high)`` pairs, bounds as written; :data:`STAR` is ``*``."""

    ranges: tuple[tuple[int, int], ...]
    # (largest, lows, highs) of the last :meth:`contains`: a SEARCH tests every message
    # against the same largest, so the set is resolved once, not once per message
    _lookup: tuple[int, list[int], list[int]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def resolved(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ranges within ``1..largest`` (empty when largest is 0).

        ``*`` is ``largest``; a range ``a:*`` with ``a > largest`` still covers ``largest``
        (RFC 3501 §6.4.8: "*:4" and "4:*" are the same range, and ``*`` is the largest number
        in use), while a lone number above ``largest`` is dropped.
        """
        if largest <= 0:
            return []
        spans: list[tuple[int, int]] = []
        for low, high in self.ranges:
            a = largest if low == STAR else low
            b = largest if high == STAR else high
            if a > b:
                a, b = b, a
            b = min(b, largest)
            if a <= b:
                spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def iter(self, largest: int) -> Iterator[int]:
        """The numbers of the set in ascending order, each once."""
        for a, b in self.resolved(largest):
            yield from range(a, b + 1)

    def contains(self, n: int, largest: int) -> bool:
        """``n`` is in the set once ``*`` is ``largest`` (same numbers as :meth:`iter`);
        O(log ranges), the set being resolved once per value of ``largest``."""
        lookup = self._lookup
        if lookup is None or lookup[0] != largest:
            spans = self.resolved(largest)
            lookup = (largest, [a for a, _ in spans], [b for _, b in spans])
            object.__setattr__(self, "_lookup", lookup)  # a cache, not part of the value
        _, lows, highs = lookup
        i = bisect_right(lows, n) - 1
        return i >= 0 and n <= highs[i]

    def __str__(self) -> str:
        def bound(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(bound(a) if a == b else f"{bound(a)}:{bound(b)}" for a, b in self.ranges)


def _number(text: str, whole: str) -> int:
    if text == "*":
        return STAR
    if not text.isascii() or not text.isdigit():
        raise ImapParseError(f"invalid sequence set {whole!r}: {text!r} is not a number or *")
    if text[0] == "0":
        raise ImapParseError(f"invalid sequence set {whole!r}: numbers start at 1")
    value = int(text)
    if value > _MAX:
        raise ImapParseError(f"invalid sequence set {whole!r}: {text} is above 4294967295")
    return value


def parse_sequence_set(text: str) -> SequenceSet:
    """Parse ``seq-number / seq-range`` items separated by commas (RFC 3501 §9)."""
    if not text:
        raise ImapParseError("invalid sequence set: empty")
    if len(text) > 100_000:
        raise ImapParseError("invalid sequence set: too long")
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        if not item:
            raise ImapParseError(f"invalid sequence set {text!r}: empty item")
        low, sep, high = item.partition(":")
        if sep:
            ranges.append((_number(low, text), _number(high, text)))
        else:
            n = _number(low, text)
            ranges.append((n, n))
    return SequenceSet(tuple(ranges))


def format_sequence_set(numbers: Iterable[int]) -> str:
    """Compact form of numbers, ``1:3,5,9:10`` (COPYUID of RFC 4315, ESEARCH ALL of RFC 4731).

    Runs of consecutive ascending numbers become ranges; the order given is kept, since
    COPYUID pairs its source and destination sets element by element (RFC 4315 §3).
    """
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
