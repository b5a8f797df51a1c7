"""Selected-state commands (RFC 3501 §6.4 and extensions): FETCH, STORE, SEARCH, COPY, MOVE,
EXPUNGE, CLOSE, UNSELECT, CHECK and their UID variants."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import AuditRecord
from mss.mailstore import deliveries, folders, messages
from mss.mailstore.errors import HoldError
from proxy.imap.args import NoArgs, Result
from proxy.imap.cache import CachedEnvelope, EnvelopeCache, RecordingParsed
from proxy.imap.fetch import (
    FastRender,
    FetchItem,
    UnknownCte,
    fast_renderer,
    render_fetch,
    sets_seen,
)
from proxy.imap.message_args import CopyArgs, ExpungeArgs, FetchArgs, SearchArgs, StoreArgs
from proxy.imap.mime import ParsedMessage, parse_message
from proxy.imap.names import resolve
from proxy.imap.parser import Command
from proxy.imap.search import SearchProgram
from proxy.imap.seqset import STAR, SequenceSet, format_sequence_set
from proxy.imap.state import ImapSession, No, Selected
from proxy.imap.tokens import ImapParseError, MessageMeta

_BATCH = 250  # messages decrypted per worker-thread round trip
AUDIT_CHUNK = 100  # messages named per audit record


def _sel(s: ImapSession) -> Selected:
    assert s.selected is not None
    return s.selected


def _uid(row: messages.Row) -> int:
    return row.uid


def _rows_for(sel: Selected, sset: SequenceSet, by_uid: bool
              ) -> list[tuple[int, messages.Row]]:
    """(seq, row) for a sequence set (RFC 3501 §9 sequence-set; ``*`` is the largest)."""
    rows = sel.rows
    out: list[tuple[int, messages.Row]] = []
    if by_uid:  # rows are in UID order: bisections, no list of every UID
        for low, high in sset.resolved(rows[-1].uid if rows else 0):
            start = bisect.bisect_left(rows, low, key=_uid)
            end = bisect.bisect_right(rows, high, lo=start, key=_uid)
            out += zip(range(start + 1, end + 1), rows[start:end], strict=True)
    else:
        # RFC 3501 §9 seq-number: a number above the message count (other than "*") is an
        # error, unlike a UID that no longer exists
        beyond = [n for pair in sset.ranges for n in pair if n != STAR and n > len(rows)]
        if beyond:
            raise ImapParseError(f"Invalid sequence set: no message {max(beyond)}")
        for low, high in sset.resolved(len(rows)):
            out += [(i, rows[i - 1]) for i in range(low, high + 1)]
    return out


def _per_messages(s: ImapSession, event: Event, sel: Selected, key: str, items: list[Any],
                  **detail: Any) -> list[AuditRecord]:
    """One record per AUDIT_CHUNK messages: a record stays small enough for any syslog
    transport (a whole-folder FETCH would otherwise make one record of hundreds of KB)."""
    return [s.record(event, mailbox=sel.owner.address,
                     detail={"folder_id": sel.folder.id, "delegated": sel.delegated,
                             key: items[i:i + AUDIT_CHUNK], **detail})
            for i in range(0, len(items), AUDIT_CHUNK)]


def _meta(sel: Selected, seq: int, row: messages.Row) -> MessageMeta:
    return MessageMeta(seq=seq, uid=row.uid, flags=sel.flags_of(row),
                       internal_date=row.internal_date, size=row.size, modseq=row.modseq)


def _tampered(s: ImapSession, sel: Selected, uids: list[int]) -> list[AuditRecord]:
    return [s.record(Event.STORE_TAMPERED, Outcome.MAJOR_FAILURE, mailbox=sel.owner.address,
                     detail={"folder_id": sel.folder.id, "uid": uid}) for uid in uids]


async def _set_seen(s: ImapSession, rows: list[tuple[int, messages.Row]]
                    ) -> list[tuple[int, messages.Row]]:
    """RFC 3501 §6.4.5: BODY[...] (not PEEK) sets \\Seen; *rows* with their new flags."""
    sel = _sel(s)
    unseen = [r.uid for _, r in rows if "\\Seen" not in r.flags]
    if not unseen or sel.readonly:
        return rows
    result = await s.write(lambda conn: messages.store_flags(
        conn, sel.folder.id, unseen, "+", ("\\Seen",), lambda _: []))
    if result.changed:
        s.ctx.notifier.changed(sel.owner.id)
    return _updated(sel, rows, result)


def _updated(sel: Selected, rows: list[tuple[int, messages.Row]],
             result: messages.FlagsChange) -> list[tuple[int, messages.Row]]:
    """*rows* with the flags the database holds after a flag change (another session's
    concurrent changes included); rows no longer in the database are left as they were."""
    out = []
    for seq, row in rows:
        got = result.current.get(row.uid)
        if got is not None and got != (row.flags, row.modseq):
            row = sel.update(seq, *got)
        out.append((seq, row))
    return out


def _inject(rendered: bytes, extra: bytes) -> bytes:
    """Add items to a rendered ``(...)`` FETCH list."""
    return rendered[:-1] + b" " + extra + b")"


@dataclass(frozen=True)
class FetchPlan:
    """How every message of one FETCH is answered (from its arguments and the session)."""

    items: list[FetchItem]
    add_uid: bool  # UID FETCH, or CONDSTORE on and \Seen set (RFC 7162 §3.1)
    add_modseq: bool  # RFC 7162 §3.1.4.1 CHANGEDSINCE, §3.1 CONDSTORE and \Seen set
    content: bool  # an item needs the message (decrypted, or its cached envelope)
    envelope_only: bool  # ENVELOPE is the only content item: the envelope cache answers
    audited: bool  # content or headers are returned: each message served is audited


@dataclass(frozen=True)
class FetchSource:
    """What one message is answered from: its metadata, and its content when needed
    (the decrypted bytes, a cached envelope, or the reason it could not be read)."""

    meta: MessageMeta
    store_id: str
    data: bytes | None = None
    envelope: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class FetchChunk:
    """The rendering of a batch: the untagged FETCH lines and what they reveal."""

    payload: bytes
    served: list[list[Any]]  # [uid, store id] of each message whose content was returned
    broken: list[int]  # UIDs whose content failed its integrity check
    unknown_cte: list[int]  # UIDs with a BINARY of an unknown transfer encoding


def render_chunk(plan: FetchPlan, sources: list[FetchSource], cache: EnvelopeCache
                 ) -> FetchChunk:
    """The ``* n FETCH (...)`` lines of a batch (RFC 3501 §7.4.2); run on a worker thread
    when content is parsed. Envelopes computed are put in *cache*."""
    out = bytearray()
    served: list[list[Any]] = []
    broken: list[int] = []
    unknown_cte: list[int] = []
    for source in sources:
        meta = source.meta
        parsed: ParsedMessage | None = None
        if plan.content:
            if source.envelope is not None:
                parsed = CachedEnvelope(source.envelope)
            elif source.data is None:
                if source.error == "tampered":
                    broken.append(meta.uid)
                continue
            else:
                parsed = RecordingParsed(source.data, source.store_id, cache)
        try:
            rendered = render_fetch(plan.items, meta, source.data, add_uid=plan.add_uid,
                                    parsed=parsed)
        except UnknownCte:
            unknown_cte.append(meta.uid)
            continue
        if plan.add_modseq:
            rendered = _inject(rendered, b"MODSEQ (%d)" % meta.modseq)
        out += b"* %d FETCH " % meta.seq + rendered + b"\r\n"
        if plan.audited:
            served.append([meta.uid, source.store_id])
    return FetchChunk(bytes(out), served, broken, unknown_cte)


def _fetch_plan(s: ImapSession, args: FetchArgs) -> FetchPlan:
    items = list(args.items)
    seen = sets_seen(items)
    # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ in each answer; §3.1: once CONDSTORE is
    # on, a FETCH that sets \Seen answers with UID and MODSEQ
    implied = args.changed_since is not None or (s.condstore and seen)
    content_names = {i.name for i in items if i.needs_content}
    return FetchPlan(items, add_uid=args.by_uid or (s.condstore and seen),
                     add_modseq=implied and not args.asks_modseq,
                     content=bool(content_names), envelope_only=content_names == {"ENVELOPE"},
                     audited=any(i.returns_content or i.reveals_headers for i in items))


async def _fetch_sources(s: ImapSession, sel: Selected, plan: FetchPlan,
                         chunk: list[tuple[int, messages.Row]], cache: EnvelopeCache
                         ) -> list[FetchSource]:
    """The batch's messages with what answers them: cached envelopes, else decrypted (one
    reader round trip for those not cached)."""
    cached: dict[str, bytes] = {}
    if plan.envelope_only:
        for _, r in chunk:
            env = cache.get(r.id)
            if env is not None:
                cached[r.id] = env
    missing = [r.id for _, r in chunk if r.id not in cached]
    opened: dict[str, messages.Opened] = {}
    if plan.content and missing:
        opened = await s.db(messages.open_messages, s.ctx.app.keyring, sel.owner.id, missing)
    sources = []
    for seq, row in chunk:
        got = opened.get(row.id)
        sources.append(FetchSource(_meta(sel, seq, row), row.id,
                                   data=got.data if got else None,
                                   envelope=cached.get(row.id),
                                   error=got.error if got else None))
    return sources


def fast_chunk(plan: FetchPlan, render: FastRender, sel: Selected,
               chunk: list[tuple[int, messages.Row]], cache: EnvelopeCache
               ) -> FetchChunk | None:
    """The batch rendered on the event loop from metadata and cached envelopes alone (no
    decryption, no thread hand-off); None when an envelope is not cached (the batch then
    takes the decrypting path, which caches them)."""
    envelopes = cache.get_many([r.id for _, r in chunk]) if plan.content else {}
    if plan.content and len(envelopes) < len(chunk):
        return None
    out = bytearray()
    recent = sel.recent
    get = envelopes.get
    for seq, row in chunk:
        flags = (*row.flags, "\\Recent") if row.uid in recent else row.flags  # flags_of
        out += b"* %d FETCH " % seq + render(row.uid, flags, row.internal_date, row.size,
                                            row.modseq, get(row.id)) + b"\r\n"
    served = [[r.uid, r.id] for _, r in chunk] if plan.audited else []
    return FetchChunk(bytes(out), served, [], [])


async def fetch(s: ImapSession, cmd: Command, args: FetchArgs) -> Result:
    sel = _sel(s)
    rows = _rows_for(sel, args.sequence, args.by_uid)
    if args.changed_since is not None or args.asks_modseq:
        s.enable_condstore()  # RFC 7162 §3.1
    if args.changed_since is not None:
        rows = [(q, r) for q, r in rows if r.modseq > args.changed_since]
    plan = _fetch_plan(s, args)
    if sets_seen(plan.items):
        rows = await _set_seen(s, rows)
    broken: list[int] = []
    unknown_cte: list[int] = []
    cache = s.ctx.envelopes
    fast = (fast_renderer(plan.items, add_uid=plan.add_uid, add_modseq=plan.add_modseq)
            if not plan.content or plan.envelope_only else None)
    for start in range(0, len(rows), _BATCH):
        chunk = [(q, r) for q, r in rows[start:start + _BATCH] if r.uid not in sel.gone]
        done = fast_chunk(plan, fast, sel, chunk, cache) if fast is not None else None
        if done is None:
            sources = await _fetch_sources(s, sel, plan, chunk, cache)
            done = (await s.thread(render_chunk, plan, sources, cache) if plan.content
                    else render_chunk(plan, sources, cache))
        broken += done.broken
        unknown_cte += done.unknown_cte
        # committed before these bytes leave (Session.flush), in as few commits as flushes
        if done.served:
            s.unaudited += _per_messages(s, Event.IMAP_FETCH, sel, "messages", done.served)
        s.unaudited += _tampered(s, sel, done.broken)
        s.send(done.payload)
        await s.maybe_flush()
    await s.commit_unaudited()  # before the tagged reply
    if broken:
        raise No(f"Message(s) could not be read (UID {' '.join(map(str, broken))})",
                 "SERVERBUG")
    if unknown_cte:  # RFC 3516 §4.3
        raise No("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
    if any(r.uid in sel.gone for _, r in rows):
        raise No("Some messages were expunged", "EXPUNGEISSUED")  # RFC 5530
    return f"{cmd.name} completed"


async def store_command(s: ImapSession, cmd: Command, args: StoreArgs) -> Result:
    sel = _sel(s)
    if args.unchanged_since is not None:
        s.enable_condstore()  # RFC 7162 §3.1
    if sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    rows = [(q, r) for q, r in _rows_for(sel, args.sequence, args.by_uid)
            if r.uid not in sel.gone]
    expected = {r.uid: messages.apply_flags(args.sign, r.flags, args.flags) for _, r in rows}

    def audit_for(deleted: list[int]) -> list[AuditRecord]:  # \Deleted newly set
        return _per_messages(s, Event.IMAP_STORE_DELETED, sel, "uids", deleted) if deleted else []
    # applied to the rows' current flags in the writer's transaction, not to this
    # session's copy: another session's concurrent change is kept
    result = await s.write(lambda conn: messages.store_flags(
        conn, sel.folder.id, [r.uid for _, r in rows], args.sign, args.flags, audit_for,
        args.unchanged_since)) if rows else messages.FlagsChange({}, set(), [], 0)
    if result.changed:
        s.ctx.notifier.changed(sel.owner.id)
    rows = [(q, r) for q, r in _updated(sel, rows, result) if r.uid in result.current]
    # RFC 3501 §7.2.6: a keyword is announced in FLAGS before a FETCH shows it
    s.announce_keywords(tuple(f for _, r in rows for f in r.flags))
    for seq, row in store_reports(args, rows, expected, result):
        s.untagged(s.flags_fetch(seq, row, args.by_uid))
    if result.failed:
        return (f"Conditional {cmd.name} failed", store_modified(args, rows, result))
    return f"{cmd.name} completed"


def store_reports(args: StoreArgs, rows: list[tuple[int, messages.Row]],
                  expected: dict[int, tuple[str, ...]], result: messages.FlagsChange
                  ) -> list[tuple[int, messages.Row]]:
    """The messages a STORE answers with an untagged FETCH (RFC 3501 §6.4.6): all of
    those changed, but for .SILENT only those whose flags are not what the client asked
    for (another session changed them) or whose new MODSEQ CONDSTORE must report (RFC
    7162 §3.1.3); none that failed the UNCHANGEDSINCE test."""
    failed = set(result.failed)
    return [(seq, row) for seq, row in rows if row.uid not in failed and not (
        args.silent and row.flags == expected[row.uid] and not (
            args.unchanged_since is not None and row.uid in result.changed))]


def store_modified(args: StoreArgs, rows: list[tuple[int, messages.Row]],
                   result: messages.FlagsChange) -> str:
    """RFC 7162 §3.1.3: the MODIFIED response code, UIDs or sequence numbers of the
    messages that failed the UNCHANGEDSINCE test."""
    failed = set(result.failed)
    return "MODIFIED " + format_sequence_set(
        sorted(failed) if args.by_uid else [q for q, r in rows if r.uid in failed])


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[tuple[int, messages.Row]]
    broken: list[int]  # UIDs whose content failed its integrity check


def run_search(conn: Connection, keyring: Any, owner_id: int, program: SearchProgram,
               metas: list[tuple[MessageMeta, messages.Row]], largest_seq: int,
               largest_uid: int) -> SearchOutcome:
    """The messages matching *program* (RFC 3501 §6.4.4), content decrypted by batches of
    _BATCH at the first message of a batch that needs it; on a worker thread."""
    hits: list[tuple[int, messages.Row]] = []
    broken: list[int] = []
    for start in range(0, len(metas), _BATCH):
        chunk = metas[start:start + _BATCH]
        opened: dict[str, messages.Opened] = {}

        def load(row: messages.Row, chunk: list[tuple[MessageMeta, messages.Row]] = chunk,
                 opened: dict[str, messages.Opened] = opened) -> ParsedMessage:
            if not opened:  # the whole chunk at once
                opened.update(messages.open_messages(conn, keyring, owner_id,
                                                    [r.id for _, r in chunk]))
            got = opened[row.id]
            if got.data is None:
                if got.error == "tampered":
                    broken.append(row.uid)
                raise LookupError(row.uid)
            return parse_message(got.data)

        for meta, row in chunk:
            try:
                if program.matches(meta, largest_seq=largest_seq, largest_uid=largest_uid,
                                   load=functools.partial(load, row)):
                    hits.append((meta.seq, row))
            except LookupError:
                continue
    return SearchOutcome(hits, broken)


def render_search(args: SearchArgs, tag: str, numbers: list[int], modseq: int) -> bytes:
    """``SEARCH n...`` (RFC 3501 §7.2.5) or, with RETURN, ``ESEARCH`` (RFC 4731 §3.1);
    *modseq* 0: no MODSEQ (RFC 7162 §3.1.5)."""
    returns = args.returns
    if returns is None:
        line = ("SEARCH " + " ".join(map(str, numbers))).strip()
        if modseq:
            line += f" (MODSEQ {modseq})"
        return line.encode()
    parts = [f'ESEARCH (TAG "{tag}")']  # RFC 4731 §3.1 (tag quoted)
    if args.by_uid:
        parts.append("UID")
    if numbers and "MIN" in returns:
        parts.append(f"MIN {min(numbers)}")
    if numbers and "MAX" in returns:
        parts.append(f"MAX {max(numbers)}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if numbers and "ALL" in returns:
        parts.append(f"ALL {format_sequence_set(numbers)}")
    if modseq:
        parts.append(f"MODSEQ {modseq}")
    return " ".join(parts).encode()


async def search(s: ImapSession, cmd: Command, args: SearchArgs) -> Result:
    sel = _sel(s)
    program = args.program
    if program is None:
        raise No("Unsupported charset", args.bad_charset)
    if program.has_modseq:
        s.enable_condstore()  # RFC 7162 §3.1
    metas = [(_meta(sel, q, r), r) for q, r in enumerate(sel.rows, 1) if r.uid not in sel.gone]
    found = await s.db(run_search, s.ctx.app.keyring, sel.owner.id, program, metas,
                       len(sel.rows), sel.rows[-1].uid if sel.rows else 0)
    if found.broken:
        await s.audit(*_tampered(s, sel, found.broken))
    numbers = [r.uid if args.by_uid else q for q, r in found.hits]
    modseq = _search_modseq(found.hits, numbers, args.returns) if program.has_modseq else 0
    s.untagged(render_search(args, cmd.tag, numbers, modseq))
    return f"{cmd.name} completed"


def _search_modseq(hits: list[tuple[int, messages.Row]], numbers: list[int],
                   returns: tuple[str, ...] | None) -> int:
    """RFC 7162 §3.1.5: the highest mod-sequence of the messages found; with RETURN of only
    MIN and/or MAX (RFC 4731 §3.2), of the messages returned (0: no MODSEQ answer)."""
    if not hits:
        return 0
    if returns is not None and set(returns) <= {"MIN", "MAX"}:
        wanted = ({min(numbers)} if "MIN" in returns else set()) | (
            {max(numbers)} if "MAX" in returns else set())
        return max(r.modseq for (_, r), n in zip(hits, numbers, strict=True) if n in wanted)
    return max(r.modseq for _, r in hits)


async def _expunge(s: ImapSession, only: list[int] | None, *, quiet: bool = False) -> None:
    sel = _sel(s)
    if sel.readonly:
        if quiet:
            return
        raise No("Mailbox is read-only", "READ-ONLY")

    def audit_for(gone: list[tuple[int, str]]) -> list[AuditRecord]:
        if not gone:
            return []
        return _per_messages(s, Event.IMAP_EXPUNGE, sel, "messages", [list(g) for g in gone])
    try:
        gone = await s.write(lambda conn: messages.expunge(conn, sel.folder.id, only,
                                                           audit_for))
    except HoldError:
        if quiet:  # CLOSE: closes, removes nothing (as from a read-only selection)
            return
        await s.audit(_held(s, sel, Event.IMAP_EXPUNGE))
        raise
    if gone:
        s.ctx.notifier.changed(sel.owner.id)
    if not quiet:
        s.report_expunged({u for u, _ in gone} | sel.gone)
        sel.gone = set()


def _held(s: ImapSession, sel: Selected, event: Event) -> AuditRecord:
    """The refusal of a removal from a mailbox under legal hold (mss.mailstore.holds)."""
    return s.record(event, Outcome.MINOR_FAILURE, mailbox=sel.owner.address,
                    reason="legal hold", detail={"folder_id": sel.folder.id,
                                                 "delegated": sel.delegated})


async def expunge_command(s: ImapSession, cmd: Command, args: ExpungeArgs) -> Result:
    if args.uids is not None:  # RFC 4315 §2.1
        rows = _rows_for(_sel(s), args.uids, True)
        await _expunge(s, [r.uid for _, r in rows])
    else:
        await _expunge(s, None)
    return f"{cmd.name} completed"


async def close(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    await _expunge(s, None, quiet=True)  # RFC 3501 §6.4.2: no untagged EXPUNGE
    s.close_selected()
    return "CLOSE completed"


async def unselect(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    s.close_selected()  # RFC 3691
    return "UNSELECT completed"


async def check(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    return "CHECK completed"


async def copy_move(s: ImapSession, cmd: Command, args: CopyArgs) -> Result:
    by_uid, moving = args.by_uid, args.moving
    sel = _sel(s)
    if moving and sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    rows = [(q, r) for q, r in _rows_for(sel, args.sequence, by_uid) if r.uid not in sel.gone]
    target = await resolve(s, args.name, access=cmd.name)
    dest = await s.db(folders.folder_by_name, s.ctx.keyring, target.owner.id, target.folder)
    if dest is None:
        raise No("Mailbox does not exist", "TRYCREATE")
    if not rows:
        return f"{cmd.name} completed"
    src_uids = [r.uid for _, r in rows]
    event = Event.IMAP_MOVE if moving else Event.IMAP_COPY
    records = _per_messages(s, event, sel, "messages", [[r.uid, r.id] for _, r in rows],
                            to_mailbox=target.owner.address, to_folder_id=dest.id)
    if moving and target.owner.id == sel.owner.id:
        validity, new_uids = await s.write(lambda conn: messages.move_messages(
            conn, sel.folder.id, dest.id, [(r.uid, r.id) for _, r in rows], records))
    else:
        opened = await s.db(messages.open_messages, s.ctx.app.keyring, sel.owner.id,
                            [r.id for _, r in rows])
        broken = [r.uid for _, r in rows if opened[r.id].error == "tampered"]
        if broken:
            await s.audit(*_tampered(s, sel, broken))
            raise No(f"Message(s) could not be read (UID {' '.join(map(str, broken))})",
                     "SERVERBUG")

        def reseal() -> list[messages.CopySource]:
            keyring = s.ctx.app.keyring
            out = []
            for _, r in rows:
                data = opened[r.id].data
                assert data is not None
                c = deliveries.seal_local(keyring, target.owner.id, target.owner.address, data)
                out.append(messages.CopySource(c.message_id, c.sealed, c.size, r.flags,
                                              r.internal_date))
            return out
        sources = await s.thread(reseal)

        def work(conn: Connection) -> tuple[int, list[int]]:
            result = messages.copy_messages(conn, dest.id, target.owner.id, sources, records)
            if moving:
                messages.remove_messages(conn, sel.folder.id, [r.id for _, r in rows])
            return result
        try:
            validity, new_uids = await s.write(work)
        except HoldError:  # MOVE out of a mailbox under legal hold: nothing copied
            await s.audit(_held(s, sel, Event.IMAP_MOVE))
            raise
    s.ctx.notifier.changed(target.owner.id)
    if target.owner.id != sel.owner.id:
        s.ctx.notifier.changed(sel.owner.id)
    code = (f"COPYUID {validity} {format_sequence_set(src_uids)} "
            f"{format_sequence_set(new_uids)}")
    if not moving:
        return (f"{cmd.name} completed", code)
    s.untagged(f"OK [{code}] Moved".encode())  # RFC 6851 §4.3
    s.report_expunged(set(src_uids) | (sel.gone if by_uid else set()))
    if by_uid:
        sel.gone = set()
    return f"{cmd.name} completed"


