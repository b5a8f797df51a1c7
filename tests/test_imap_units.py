"""Pure logic of the IMAP server: login throttling, the notifier, dates, LIST patterns."""

from __future__ import annotations

import asyncio

import pytest

from mss.throttle import Throttle
from proxy.imap.mailbox_commands import _parse_date_time
from proxy.imap.names import list_pattern
from proxy.imap.notifier import LocalNotifier
from proxy.imap.tokens import ImapParseError


def test_throttle_locks_user_and_address_then_forgets() -> None:
    t = Throttle(failures=3, window=60, lockout=30)
    assert not t.failed("bob", "10.0.0.1", now=0)
    assert not t.failed("bob", "10.0.0.2", now=1)
    assert t.failed("bob", "10.0.0.3", now=2)  # third failure of bob: bob locked
    assert t.blocked("bob", "10.0.0.9", now=3)
    assert not t.blocked("alice", "10.0.0.1", now=3)  # each address failed once only
    assert not t.blocked("bob", "10.0.0.9", now=33)  # lockout over


def test_throttle_window_slides() -> None:
    t = Throttle(failures=3, window=10, lockout=30)
    t.failed("u", "a", now=0)
    t.failed("u", "a", now=5)
    assert not t.failed("u", "a", now=20)  # the first two are out of the window
    assert not t.blocked("u", "a", now=21)


def test_notifier_wakes_watchers_of_that_mailbox_only() -> None:
    async def run() -> tuple[bool, bool, bool]:
        notifier = LocalNotifier()
        mine, other = notifier.watch(1), notifier.watch(2)
        notifier.changed(1)
        woke = await mine.wait(1.0)
        quiet = await other.wait(0.05)
        again = await mine.wait(0.05)  # consumed
        mine.close()
        other.close()
        notifier.changed(1)  # no watcher left: nothing to do
        return woke, quiet, again
    assert asyncio.run(run()) == (True, False, False)


def test_date_time_of_append() -> None:
    assert _parse_date_time("23-Nov-2026 09:00:00 +0100") == _parse_date_time(
        "23-Nov-2026 08:00:00 +0000")
    assert _parse_date_time(" 1-Jan-2020 00:00:00 +0000") == 1577836800.0
    for bad in ("31-Feb-2020 00:00:00 +0000", "1-Jan-2020 25:00:00 +0000",
                "1-Foo-2020 00:00:00 +0000", "yesterday"):
        with pytest.raises(ImapParseError):
            _parse_date_time(bad)


@pytest.mark.parametrize(("reference", "pattern", "name", "matches"), [
    ("", "*", "Projets/2026", True),
    ("", "%", "Projets/2026", False),
    ("", "%", "Projets", True),
    ("", "Projets/%", "Projets/2026", True),
    ("Projets/", "%", "Projets/2026", True),
    ("", "inbox", "INBOX", True),
    ("", "Shared/*", "Shared/secretariat@demo.mssante.fr/INBOX", True),
    ("", "a.b", "axb", False),
])
def test_list_patterns(reference: str, pattern: str, name: str, matches: bool) -> None:
    assert bool(list_pattern(reference, pattern).match(name)) is matches
