"""Pure logic of the IMAP server: login throttling, the notifier, dates, LIST patterns,
sequence-set membership, SEARCH CHARSET, flag operations, UIDVALIDITY allocation."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from mss import db
from mss.mailstore import folders
from mss.mailstore.folders import Folder
from mss.mailstore.messages import FlagsChange, Row, apply_flags
from mss.mailstore.notify import ChangeWatcher, LocalNotifier
from mss.throttle import Throttle
from proxy.imap.cache import EnvelopeCache
from proxy.imap.commands import COMMANDS
from proxy.imap.mailbox_args import parse_date_time
from proxy.imap.mailbox_commands import list_entries, render_status
from proxy.imap.message_commands import (
    FetchPlan,
    FetchSource,
    render_chunk,
    render_search,
    store_modified,
    store_reports,
)
from proxy.imap.names import list_pattern
from proxy.imap.parser import parse_command
from proxy.imap.search import CHARSETS, BadCharset, Numbers, parse_search
from proxy.imap.seqset import STAR, SequenceSet, parse_sequence_set
from proxy.imap.tokens import Atom, ImapParseError, MessageMeta


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


def test_change_watcher_wakes_only_the_folders_another_connection_changed(tmp_path: Path
                                                                          ) -> None:
    """ChangeWatcher + LocalNotifier.poll: a commit of another connection (process) wakes the
    sessions of the folders it moved, deleted or disabled; no query while nothing changed."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(insert(db.domains).values(id=1, name="d.test", created_at=0.0))
        conn.execute(insert(db.mailboxes).values(id=1, address="a@d.test", domain_id=1,
                                                 type="PER", created_at=0.0))
        conn.execute(insert(db.folders), [
            {"id": i, "mailbox_id": 1, "name": f"F{i}", "uidvalidity": 1} for i in (1, 2, 3)])
    reader = db.make_engine(f"sqlite:///{tmp_path / 'n.db'}", writer=False)

    def write(statement: Any) -> None:
        with engine.begin() as conn:
            conn.execute(statement)

    async def run() -> list[tuple[bool, bool, bool]]:
        notifier = LocalNotifier()
        watcher = ChangeWatcher(reader, interval=0.01)
        watcher.add(notifier.poll)
        watches = [notifier.watch(1, folder, False) for folder in (1, 2, 3)]

        async def round_(change: Any) -> tuple[bool, bool, bool]:
            if change is not None:
                write(change)
            watcher.check()
            woken = tuple([await w.wait(0.05) for w in watches])
            with reader.connect() as conn:  # each woken session reads its folder, reports
                states = {r.id: (r.uidnext, r.highestmodseq) for r in conn.execute(
                    select(db.folders.c.id, db.folders.c.uidnext, db.folders.c.highestmodseq))}
            for folder, watch, was_woken in zip((1, 2, 3), watches, woken, strict=True):
                if was_woken:
                    watch.saw(*states.get(folder, (0, 0)))
            return woken  # type: ignore[return-value]
        results = [await round_(None)]  # first sight: everyone looks once
        checks = watcher.checks
        results.append(await round_(None))  # nothing committed: no listener ran
        assert watcher.checks == checks
        folders = db.folders
        results.append(await round_(update(folders).where(folders.c.id == 2)
                                    .values(highestmodseq=folders.c.highestmodseq + 1)))
        results.append(await round_(delete(folders).where(folders.c.id == 3)))
        results.append(await round_(update(db.mailboxes).values(enabled=False)))
        for w in watches:
            w.close()
        watcher._close()
        return results
    assert asyncio.run(run()) == [(True, True, True), (False, False, False),
                                  (False, True, False), (False, False, True),
                                  (True, True, True)]


def test_date_time_of_append() -> None:
    assert parse_date_time("23-Nov-2026 09:00:00 +0100") == parse_date_time(
        "23-Nov-2026 08:00:00 +0000")
    assert parse_date_time(" 1-Jan-2020 00:00:00 +0000") == 1577836800.0
    for bad in ("31-Feb-2020 00:00:00 +0000", "1-Jan-2020 25:00:00 +0000",
                "1-Foo-2020 00:00:00 +0000", "yesterday"):
        with pytest.raises(ImapParseError):
            parse_date_time(bad)


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


def _naive_contains(s: SequenceSet, n: int, largest: int) -> bool:
    """RFC 3501 §9 membership read off the ranges as written (``*`` is ``largest``)."""
    if n < 1 or n > largest:
        return False
    for low, high in s.ranges:
        a = largest if low == STAR else low
        b = largest if high == STAR else high
        if min(a, b) <= n <= max(a, b):
            return True
    return False


_BOUND = st.one_of(st.just(STAR), st.integers(1, 60))


@given(st.lists(st.tuples(_BOUND, _BOUND), min_size=1, max_size=8),
       st.lists(st.integers(0, 70), min_size=1, max_size=6))
def test_contains_same_as_naive(ranges: list[tuple[int, int]], largests: list[int]) -> None:
    s = parse_sequence_set(str(SequenceSet(tuple(ranges))))
    assert s == SequenceSet(tuple(ranges))
    for largest in largests:  # the cached lookup follows a change of largest
        for n in range(-1, 72):
            assert s.contains(n, largest) == _naive_contains(s, n, largest), (s, n, largest)


def test_contains_many_ranges() -> None:
    # UID 1,3,5,...: 15 000 ranges over 30 000 messages, plus reversed and "*" ranges
    text = ",".join(map(str, range(1, 30_000, 2))) + ",30010:29990,*:40000"
    s = parse_sequence_set(text)
    largest = 30_000
    odd = [n for n in range(0, 30_050) if s.contains(n, largest)]
    assert odd == [*range(1, 29_990, 2), *range(29_990, 30_001)]
    sample = range(0, 30_050, 97)
    assert [s.contains(n, largest) for n in sample] == [_naive_contains(s, n, largest)
                                                       for n in sample]
    # through SEARCH: the set is resolved once for the search, not scanned per message
    prog = parse_search([Atom("UID"), text.encode()])
    assert isinstance(prog.key, Numbers)
    hits = [uid for uid in range(1, largest + 1)
            if prog.matches(MessageMeta(uid, uid, (), 0.0, 1, 1), largest_seq=largest,
                            largest_uid=largest, load=lambda: pytest.fail("loaded"))]
    assert hits == odd


def test_search_charset_once() -> None:
    assert parse_search([Atom("CHARSET"), b"utf-8", Atom("ALL")]).charset == "UTF-8"
    assert parse_search([Atom("ALL")]).charset == "US-ASCII"
    for args in ([Atom("CHARSET"), Atom("UTF-8"), Atom("CHARSET"), Atom("UTF-8"), Atom("ALL")],
                 [Atom("CHARSET"), Atom("US-ASCII"), Atom("CHARSET"), Atom("KOI8-R")]):
        with pytest.raises(ImapParseError, match="CHARSET given more than once"):
            parse_search(args)
    with pytest.raises(ImapParseError, match="CHARSET given more than once"):
        parse_search([Atom("CHARSET"), Atom("UTF-8"), Atom("ALL")], charset="UTF-8")
    with pytest.raises(ImapParseError, match="invalid charset"):
        parse_search([Atom("CHARSET"), [Atom("UTF-8")], Atom("ALL")])
    with pytest.raises(BadCharset) as raised:
        parse_search([Atom("CHARSET"), Atom("KOI8-R"), Atom("ALL")])
    assert raised.value.code == "BADCHARSET (" + " ".join(CHARSETS) + ")"
    assert raised.value.code == "BADCHARSET (UTF-8 US-ASCII)"  # as answered before


_FLAG = st.sampled_from(["\\Seen", "\\Answered", "\\Deleted", "$A", "$B"])


@given(st.lists(_FLAG, unique=True), st.lists(_FLAG, unique=True),
       st.lists(_FLAG, unique=True))
def test_flag_operations_commute_between_sessions(old: list[str], one: list[str],
                                                  two: list[str]) -> None:
    """RFC 3501 §6.4.6 on the stored flags: one session's +FLAGS and another's -FLAGS of
    different flags give the same result in either order, and neither loses the other's."""
    adds, removes = tuple(one), tuple(f for f in two if f not in one)
    first = apply_flags("-", apply_flags("+", tuple(old), adds), removes)
    second = apply_flags("+", apply_flags("-", tuple(old), removes), adds)
    assert set(first) == set(second) == (set(old) | set(adds)) - set(removes)
    assert len(first) == len(set(first))
    assert apply_flags("", tuple(old), adds) == adds


def test_uidvalidity_never_repeats_for_a_mailbox(tmp_path: object) -> None:
    """RFC 3501 §2.3.1.1: values from the per-mailbox counter only grow, also when the
    folder holding the highest one is gone and the clock has not moved."""
    from sqlalchemy import insert

    engine = db.make_engine(f"sqlite:///{tmp_path}/u.db")
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(insert(db.domains).values(id=1, name="d.example", created_at=0.0))
        conn.execute(insert(db.mailboxes).values(id=1, address="a@d.example", domain_id=1,
                                                 type="PER", enabled=True, created_at=0.0))
        given_out = [folders.next_uidvalidity(conn, 1) for _ in range(3)]
        given_out.append(folders.next_uidvalidity(conn, 1, 6))  # six at once: 6 values
        given_out.append(folders.next_uidvalidity(conn, 1))
    assert given_out == sorted(set(given_out)) and given_out[-1] - given_out[-2] == 6


def test_change_poll_must_be_positive(tmp_path: Path) -> None:
    from mss.config import ConfigError, parse_config

    assert parse_config({}, tmp_path / "mss.toml").change_poll == 0.2
    with pytest.raises(ConfigError, match="database.change_poll"):
        parse_config({"database": {"change_poll": 0}}, tmp_path / "mss.toml")


# ---------------------------------------------------------------- IMAP commands in three steps

_IMAP = Path(__file__).resolve().parent.parent / "proxy" / "imap"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, inside a function) for each import of a source file."""
    found: list[tuple[str, bool]] = []

    def walk(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, inner))
            walk(child, inner)
    walk(ast.parse(path.read_text()), False)
    return found


def test_command_modules_never_import_the_connection() -> None:
    """The command table and handlers depend on proxy.imap.state (the session Protocol),
    the connection on the table, at module level: no cycle, no lazy import."""
    for path in sorted(_IMAP.glob("*.py")):
        if path.name in ("connection.py", "listeners.py"):
            continue
        assert ("proxy.imap.connection", False) not in _imports(path), path.name
        assert ("proxy.imap.connection", True) not in _imports(path), path.name
    connection = _imports(_IMAP / "connection.py")
    assert ("proxy.imap.commands", False) in connection
    assert not [m for m, nested in connection if nested and m.startswith("proxy.")]


def _folder(fid: int, name: str, subscribed: bool = True, special: str | None = None
            ) -> Folder:
    return Folder(fid, 1, name, special, 7, 10, 3, subscribed)


def _row(uid: int, flags: tuple[str, ...] = (), modseq: int = 1) -> Row:
    return Row(uid, f"id{uid}", flags, 0.0, 10, modseq)


def test_list_entries_are_computed_from_values() -> None:
    """LIST/LSUB answers from the names a user sees (RFC 3501 §6.3.8, §6.3.9, RFC 5258)."""
    names = [("INBOX", _folder(1, "INBOX")), ("Projets", _folder(2, "Projets", False)),
             ("Projets/2026", _folder(3, "Projets/2026")),
             ("Sent", _folder(4, "Sent", special="\\Sent"))]

    def entries(line: bytes) -> list[tuple[str, tuple[str, ...], bool]]:
        args = COMMANDS["LSUB" if b"LSUB" in line else "LIST"].parse(
            parse_command([b"t " + line]))
        return [(e.name, e.attributes, e.childinfo) for e in list_entries(args, names, ["Old"])]
    assert entries(b'LIST "" %') == [("INBOX", ("\\HasNoChildren",), False),
                                     ("Projets", ("\\HasChildren",), False),
                                     ("Sent", ("\\HasNoChildren", "\\Sent"), False)]
    # LSUB "%": the unsubscribed parent of a subscribed name is \Noselect; a deleted folder
    # still subscribed is listed, not selectable
    assert entries(b'LSUB "" %') == [
        ("INBOX", ("\\HasNoChildren", "\\Subscribed"), False),
        ("Projets", ("\\Noselect",), False),
        ("Sent", ("\\HasNoChildren", "\\Sent", "\\Subscribed"), False),
        ("Old", ("\\Noselect", "\\Subscribed"), False)]
    # RFC 5258 §3.5: CHILDINFO for the parent of a subscribed name the pattern misses;
    # §3.4: a subscribed name that does not exist is \NonExistent
    assert [e[1:] for e in entries(b'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')[1:4:2]] == [
        (("\\HasChildren",), True), (("\\NonExistent", "\\Subscribed"), False)]
    assert entries(b'LIST (SPECIAL-USE) "" *') == [
        ("Sent", ("\\HasNoChildren", "\\Sent"), False)]


def test_search_and_status_render_values() -> None:
    esearch = COMMANDS["UID SEARCH"].parse(parse_command([b"t UID SEARCH RETURN (MIN COUNT) ALL"]))
    assert render_search(esearch, "t", [3, 5, 9], 0) == b'ESEARCH (TAG "t") UID MIN 3 COUNT 3'
    plain = COMMANDS["SEARCH"].parse(parse_command([b"t SEARCH MODSEQ 2"]))
    assert render_search(plain, "t", [2, 4], 7) == b"SEARCH 2 4 (MODSEQ 7)"
    assert render_search(plain, "t", [], 0) == b"SEARCH"
    bad = COMMANDS["SEARCH"].parse(parse_command([b"t SEARCH CHARSET KOI8-R ALL"]))
    assert bad.program is None and bad.bad_charset and "BADCHARSET" in bad.bad_charset
    assert render_status("Projets/été", ("UNSEEN", "MESSAGES"), {"MESSAGES": 4, "UNSEEN": 1}
                         ) == b"STATUS Projets/&AOk-t&AOk- (UNSEEN 1 MESSAGES 4)"


def test_store_reports_what_silent_hides() -> None:
    """RFC 3501 §6.4.6: .SILENT answers only where the flags are not what was asked (another
    session's change); RFC 7162 §3.1.3: MODIFIED names the messages that failed."""
    rows = [(1, _row(10, ("\\Seen",))), (2, _row(11, ("\\Seen", "$X"))), (3, _row(12))]
    expected = {10: ("\\Seen",), 11: ("\\Seen",), 12: ("\\Seen",)}
    result = FlagsChange({10: (("\\Seen",), 5), 11: (("\\Seen", "$X"), 5), 12: ((), 1)},
                         {10, 11}, [12], 5)
    silent = COMMANDS["STORE"].parse(parse_command([b"t STORE 1:3 +FLAGS.SILENT (\\Seen)"]))
    assert [q for q, _ in store_reports(silent, rows, expected, result)] == [2]
    loud = COMMANDS["UID STORE"].parse(parse_command([b"t UID STORE 1:* +FLAGS (\\Seen)"]))
    assert [q for q, _ in store_reports(loud, rows, expected, result)] == [1, 2]
    assert store_modified(loud, rows, result) == "MODIFIED 12"
    assert store_modified(silent, rows, result) == "MODIFIED 3"


def test_fetch_chunk_is_a_returned_value() -> None:
    """A FETCH batch renders to a value (lines, messages served, failures), on any thread."""
    args = COMMANDS["UID FETCH"].parse(parse_command([b"t UID FETCH 1:* (FLAGS BODY.PEEK[])"]))
    plan = FetchPlan(list(args.items), add_uid=True, add_modseq=False, content=True,
                     envelope_only=False, audited=True)
    meta = [MessageMeta(seq=i, uid=10 + i, flags=(), internal_date=0.0, size=5, modseq=1)
            for i in (1, 2)]
    done = render_chunk(plan, [FetchSource(meta[0], "a", data=b"x: y\r\n\r\nhi"),
                               FetchSource(meta[1], "b", error="tampered")], EnvelopeCache())
    assert done.payload == (b"* 1 FETCH (UID 11 FLAGS () BODY[] {10}\r\nx: y\r\n\r\nhi)\r\n")
    assert done.served == [[11, "a"]] and done.broken == [12] and done.unknown_cte == []
def test_envelope_cache_is_an_instance_of_each_context_not_a_global() -> None:
    """Issue 13 #2: no process-global ENVELOPES; each IMAP ServerContext owns its cache
    (``ctx.envelopes``), bounded, filled by the message whose ENVELOPE is rendered."""
    import dataclasses

    from proxy.imap import cache as cache_module
    from proxy.imap.cache import CachedEnvelope, EnvelopeCache, RecordingParsed
    from proxy.imap.connection import ServerContext
    from proxy.imap.mime import parse_message

    assert not [name for name, value in vars(cache_module).items()
                if isinstance(value, EnvelopeCache)]
    field = {f.name: f for f in dataclasses.fields(ServerContext)}["envelopes"]
    assert field.default_factory is EnvelopeCache
    assert field.default_factory() is not field.default_factory()  # one per context
    cache = EnvelopeCache(max_entries=2)
    raw = b"Subject: hi\r\nFrom: a@b.example\r\n\r\nbody\r\n"
    rendered = RecordingParsed(raw, "m1", cache).envelope()
    assert rendered == parse_message(raw).envelope() == cache.get("m1")
    assert CachedEnvelope(rendered).envelope() == rendered
    for store_id in ("m2", "m3"):
        cache.put(store_id, b"()")
    assert cache.get("m1") is None and cache.get("m3") == b"()"  # the oldest forgotten
