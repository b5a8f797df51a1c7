"""Selected-state commands (RFC 3501 §6.4 and extensions): FETCH, STORE, SEARCH, COPY, MOVE,
EXPUNGE, CLOSE, UNSELECT, CHECK and their UID variants."""

from __future__ import annotations

import bisect
import functools
import re
from typing import Any

from sqlalchemy import Connection

from audit.events import Outcome
from audit.journal import AuditRecord
from mss import store
from proxy.imap import backend
from proxy.imap.args import Result, atom, flag_list, nargs, number, seq_set
from proxy.imap.cache import CachedEnvelope, RecordingParsed
from proxy.imap.connection import (
    No,
    Selected,
    Session,
)
from proxy.imap.fetch import UnknownCte, parse_fetch_items, render_fetch, sets_seen
from proxy.imap.mime import ParsedMessage, parse_message
from proxy.imap.names import mailbox_name, resolve
from proxy.imap.parser import Command
from proxy.imap.search import BadCharset, parse_search
from proxy.imap.seqset import STAR, format_sequence_set
from proxy.imap.tokens import Atom, ImapParseError, MessageMeta, Token

_BATCH = 250  # messages decrypted per worker-thread round trip
AUDIT_CHUNK = 100  # messages named per audit record


def _sel(s: Session) -> Selected:
    assert s.selected is not None
    return s.selected


def _rows_for(s: Session, token: Token, by_uid: bool) -> list[tuple[int, backend.Row]]:
    """(seq, row) for a sequence set (RFC 3501 §9 sequence-set; ``*`` is the largest)."""
    sel = _sel(s)
    sset = seq_set(token)
    rows = sel.rows
    out: list[tuple[int, backend.Row]] = []
    if by_uid:
        uids = [r.uid for r in rows]
        for low, high in sset.resolved(uids[-1] if uids else 0):
            start = bisect.bisect_left(uids, low)
            end = bisect.bisect_right(uids, high)
            out += [(i + 1, rows[i]) for i in range(start, end)]
    else:
        # RFC 3501 §9 seq-number: a number above the message count (other than "*") is an
        # error, unlike a UID that no longer exists
        beyond = [n for pair in sset.ranges for n in pair if n != STAR and n > len(rows)]
        if beyond:
            raise ImapParseError(f"Invalid sequence set: no message {max(beyond)}")
        for low, high in sset.resolved(len(rows)):
            out += [(i, rows[i - 1]) for i in range(low, high + 1)]
    return out


def _per_messages(s: Session, event: str, sel: Selected, key: str, items: list[Any],
                  **detail: Any) -> list[AuditRecord]:
    """One record per AUDIT_CHUNK messages: a record stays small enough for any syslog
    transport (a whole-folder FETCH would otherwise make one record of hundreds of KB)."""
    return [s.record(event, mailbox=sel.owner.address,
                     detail={"folder_id": sel.folder.id, "delegated": sel.delegated,
                             key: items[i:i + AUDIT_CHUNK], **detail})
            for i in range(0, len(items), AUDIT_CHUNK)]


def _meta(sel: Selected, seq: int, row: backend.Row) -> MessageMeta:
    return MessageMeta(seq=seq, uid=row.uid, flags=sel.flags_of(row),
                       internal_date=row.internal_date, size=row.size, modseq=row.modseq)


def _tampered(s: Session, sel: Selected, uids: list[int]) -> list[AuditRecord]:
    return [s.record("store.tampered", Outcome.MAJOR_FAILURE, mailbox=sel.owner.address,
                     detail={"folder_id": sel.folder.id, "uid": uid}) for uid in uids]


async def _set_seen(s: Session, rows: list[tuple[int, backend.Row]]
                    ) -> list[tuple[int, backend.Row]]:
    """RFC 3501 §6.4.5: BODY[...] (not PEEK) sets \\Seen; *rows* with their new flags."""
    sel = _sel(s)
    unseen = [r.uid for _, r in rows if "\\Seen" not in r.flags]
    if not unseen or sel.readonly:
        return rows
    result = await s.write(lambda conn: backend.store_flags(
        conn, sel.folder.id, unseen, "+", ("\\Seen",), lambda _: []))
    if result.changed:
        s.ctx.notifier.changed(sel.owner.id)
    return _updated(sel, rows, result)


def _updated(sel: Selected, rows: list[tuple[int, backend.Row]],
             result: backend.FlagsChange) -> list[tuple[int, backend.Row]]:
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


async def fetch(s: Session, cmd: Command) -> Result:
    by_uid = cmd.name == "UID FETCH"
    if len(cmd.args) not in (2, 3):
        raise ImapParseError("Wrong number of arguments")
    sel = _sel(s)
    items = parse_fetch_items(cmd.args[1])
    changed_since: int | None = None
    if len(cmd.args) == 3:  # RFC 7162 §3.1.4 FETCH modifiers
        mods = cmd.args[2]
        if not isinstance(mods, list) or len(mods) != 2 or atom(mods[0]).upper() != \
                "CHANGEDSINCE":
            raise ImapParseError("Unknown FETCH modifier")
        changed_since = number(mods[1])
    rows = _rows_for(s, cmd.args[0], by_uid)
    asks_modseq = any(i.name == "MODSEQ" for i in items)
    if changed_since is not None or asks_modseq:
        s.enable_condstore()  # RFC 7162 §3.1
    if changed_since is not None:
        rows = [(q, r) for q, r in rows if r.modseq > changed_since]
    seen = sets_seen(items)
    # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ in each answer; §3.1: once CONDSTORE is
    # on, a FETCH that sets \Seen answers with UID and MODSEQ
    implied = changed_since is not None or (s.condstore and seen)
    add_modseq = implied and not asks_modseq
    add_uid = by_uid or (s.condstore and seen)
    if seen:
        rows = await _set_seen(s, rows)
    content_names = {i.name for i in items if i.needs_content}
    envelope_only = content_names == {"ENVELOPE"}  # answerable from the envelope cache
    audited = any(i.returns_content or i.reveals_headers for i in items)
    broken: list[int] = []
    unknown_cte: list[int] = []
    cache = s.ctx.envelopes
    for start in range(0, len(rows), _BATCH):
        chunk = [(q, r) for q, r in rows[start:start + _BATCH] if r.uid not in sel.gone]
        opened: dict[str, backend.Opened] = {}
        cached: dict[str, bytes] = {}
        if envelope_only:
            for _, r in chunk:
                env = cache.get(r.id)
                if env is not None:
                    cached[r.id] = env
        missing = [r.id for _, r in chunk if r.id not in cached]
        if content_names and missing:
            opened = await s.db(backend.open_messages, s.ctx.app.keyring, sel.owner.id,
                                missing)

        served: list[list[Any]] = []
        reported = len(broken)

        def render(chunk: list[tuple[int, backend.Row]] = chunk,
                   opened: dict[str, backend.Opened] = opened,
                   cached: dict[str, bytes] = cached,
                   served: list[list[Any]] = served) -> bytes:
            out = bytearray()
            for seq, row in chunk:
                parsed: ParsedMessage | None = None
                raw = None
                if content_names:
                    env = cached.get(row.id)
                    if env is not None:
                        parsed = CachedEnvelope(env)
                    else:
                        got = opened[row.id]
                        if got.data is None:
                            if got.error == "tampered":
                                broken.append(row.uid)
                            continue
                        raw = got.data
                        parsed = RecordingParsed(raw, row.id, cache)
                try:
                    rendered = render_fetch(items, _meta(sel, seq, row), raw, add_uid=add_uid,
                                            parsed=parsed)
                except UnknownCte:
                    unknown_cte.append(row.uid)
                    continue
                if add_modseq:
                    rendered = _inject(rendered, b"MODSEQ (%d)" % row.modseq)
                out += b"* %d FETCH " % seq + rendered + b"\r\n"
                if audited:
                    served.append([row.uid, row.id])
            return bytes(out)

        payload = await s.thread(render) if content_names else render()
        # committed before these bytes leave (Session.flush), in as few commits as flushes
        if audited and served:
            s.unaudited += _per_messages(s, "imap.fetch", sel, "messages", served)
        s.unaudited += _tampered(s, sel, broken[reported:])
        s.send(payload)
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


async def store_command(s: Session, cmd: Command) -> Result:
    by_uid = cmd.name == "UID STORE"
    args = list(cmd.args)
    if len(args) < 3:
        raise ImapParseError("Wrong number of arguments")
    sel = _sel(s)
    unchanged_since: int | None = None
    mods = args[1]
    if isinstance(mods, list):  # RFC 7162 §3.1.3 (UNCHANGEDSINCE n)
        del args[1]
        if len(mods) != 2 or atom(mods[0]).upper() != "UNCHANGEDSINCE":
            raise ImapParseError("Unknown STORE modifier")
        unchanged_since = number(mods[1])
        s.enable_condstore()
    operation = atom(args[1]).upper()
    found = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", operation)
    if found is None:
        raise ImapParseError("Invalid STORE operation")
    tokens = args[2:]
    if len(tokens) == 1 and isinstance(tokens[0], list):
        tokens = tokens[0]
    flags = flag_list(tokens)
    if sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    rows = [(q, r) for q, r in _rows_for(s, args[0], by_uid) if r.uid not in sel.gone]
    sign, silent = found.group(1), bool(found.group(2))
    expected = {r.uid: backend.apply_flags(sign, r.flags, flags) for _, r in rows}

    def audit_for(deleted: list[int]) -> list[AuditRecord]:  # \Deleted newly set
        return _per_messages(s, "imap.store.deleted", sel, "uids", deleted) if deleted else []
    # applied to the rows' current flags in the writer's transaction, not to this
    # session's copy: another session's concurrent change is kept
    result = await s.write(lambda conn: backend.store_flags(
        conn, sel.folder.id, [r.uid for _, r in rows], sign, flags, audit_for,
        unchanged_since)) if rows else backend.FlagsChange({}, set(), [], 0)
    if result.changed:
        s.ctx.notifier.changed(sel.owner.id)
    rows = [(q, r) for q, r in _updated(sel, rows, result) if r.uid in result.current]
    failed = set(result.failed)
    # RFC 3501 §7.2.6: a keyword is announced in FLAGS before a FETCH shows it
    s.announce_keywords(tuple(f for _, r in rows for f in r.flags))
    for seq, row in rows:
        if row.uid in failed:
            continue
        # .SILENT: no FETCH, unless the flags are not what the client asked for (another
        # session changed them) or CONDSTORE needs the new MODSEQ (RFC 7162 §3.1.3)
        if silent and row.flags == expected[row.uid] and not (
                unchanged_since is not None and row.uid in result.changed):
            continue
        s.untagged(s.flags_fetch(seq, row, by_uid))
    if failed:
        code = "MODIFIED " + format_sequence_set(
            sorted(failed) if by_uid else [q for q, r in rows if r.uid in failed])
        return (f"Conditional {cmd.name} failed", code)
    return f"{cmd.name} completed"


async def search(s: Session, cmd: Command) -> Result:
    by_uid = cmd.name == "UID SEARCH"
    sel = _sel(s)
    args = list(cmd.args)
    returns: list[str] | None = None
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "RETURN":
        if not isinstance(args[1], list):
            raise ImapParseError("RETURN needs a list")
        returns = [atom(t).upper() for t in args[1]] or ["ALL"]  # RFC 4731 §3.1
        if set(returns) - {"MIN", "MAX", "COUNT", "ALL"}:
            raise ImapParseError("Unknown RETURN option")
        args = args[2:]
    try:
        program = parse_search(args)  # with its CHARSET (RFC 3501 §6.4.4)
    except BadCharset as exc:
        raise No("Unsupported charset", exc.code) from None
    if program.has_modseq:
        s.enable_condstore()  # RFC 7162 §3.1
    rows = [(q, r) for q, r in enumerate(sel.rows, 1) if r.uid not in sel.gone]
    largest_seq = len(sel.rows)
    largest_uid = sel.rows[-1].uid if sel.rows else 0
    broken: list[int] = []

    def run(conn: Connection) -> list[tuple[int, backend.Row]]:
        hits = []
        for start in range(0, len(rows), _BATCH):
            chunk = rows[start:start + _BATCH]
            opened: dict[str, backend.Opened] = {}

            def load(row: backend.Row, chunk: list[tuple[int, backend.Row]] = chunk,
                     opened: dict[str, backend.Opened] = opened) -> Any:
                # the whole chunk is decrypted at its first message that needs content
                if not opened:
                    opened.update(backend.open_messages(
                        conn, s.ctx.app.keyring, sel.owner.id, [r.id for _, r in chunk]))
                got = opened[row.id]
                if got.data is None:
                    if got.error == "tampered":
                        broken.append(row.uid)
                    raise LookupError(row.uid)
                return parse_message(got.data)

            for seq, row in chunk:
                try:
                    if program.matches(_meta(sel, seq, row), largest_seq=largest_seq,
                                       largest_uid=largest_uid,
                                       load=functools.partial(load, row)):
                        hits.append((seq, row))
                except LookupError:
                    continue
        return hits

    hits = await s.db(run)
    if broken:
        await s.audit(*_tampered(s, sel, broken))
    numbers = [r.uid if by_uid else q for q, r in hits]
    modseq = _search_modseq(hits, numbers, returns) if program.has_modseq else 0
    if returns is None:
        line = ("SEARCH " + " ".join(map(str, numbers))).strip()
        if modseq:
            line += f" (MODSEQ {modseq})"
        s.untagged(line.encode())
    else:
        parts = [f'ESEARCH (TAG "{cmd.tag}")']  # RFC 4731 §3.1 (tag quoted)
        if by_uid:
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
        s.untagged(" ".join(parts).encode())
    return f"{cmd.name} completed"


def _search_modseq(hits: list[tuple[int, backend.Row]], numbers: list[int],
                   returns: list[str] | None) -> int:
    """RFC 7162 §3.1.5: the highest mod-sequence of the messages found; with RETURN of only
    MIN and/or MAX (RFC 4731 §3.2), of the messages returned (0: no MODSEQ answer)."""
    if not hits:
        return 0
    if returns is not None and set(returns) <= {"MIN", "MAX"}:
        wanted = ({min(numbers)} if "MIN" in returns else set()) | (
            {max(numbers)} if "MAX" in returns else set())
        return max(r.modseq for (_, r), n in zip(hits, numbers, strict=True) if n in wanted)
    return max(r.modseq for _, r in hits)


async def _expunge(s: Session, only: list[int] | None, *, quiet: bool = False) -> None:
    sel = _sel(s)
    if sel.readonly:
        if quiet:
            return
        raise No("Mailbox is read-only", "READ-ONLY")

    def audit_for(gone: list[tuple[int, str]]) -> list[AuditRecord]:
        if not gone:
            return []
        return _per_messages(s, "imap.expunge", sel, "messages", [list(g) for g in gone])
    gone = await s.write(lambda conn: backend.expunge(conn, sel.folder.id, only, audit_for))
    if gone:
        s.ctx.notifier.changed(sel.owner.id)
    if not quiet:
        s.report_expunged({u for u, _ in gone} | sel.gone)
        sel.gone = set()


async def expunge_command(s: Session, cmd: Command) -> Result:
    if cmd.name == "UID EXPUNGE":  # RFC 4315 §2.1
        rows = _rows_for(s, nargs(cmd, 1)[0], True)
        await _expunge(s, [r.uid for _, r in rows])
    else:
        nargs(cmd, 0)
        await _expunge(s, None)
    return f"{cmd.name} completed"


async def close(s: Session, cmd: Command) -> Result:
    nargs(cmd, 0)
    await _expunge(s, None, quiet=True)  # RFC 3501 §6.4.2: no untagged EXPUNGE
    s.close_selected()
    return "CLOSE completed"


async def unselect(s: Session, cmd: Command) -> Result:
    nargs(cmd, 0)  # RFC 3691
    s.close_selected()
    return "UNSELECT completed"


async def check(s: Session, cmd: Command) -> Result:
    nargs(cmd, 0)
    return "CHECK completed"


async def copy_move(s: Session, cmd: Command) -> Result:
    by_uid = cmd.name.startswith("UID ")
    moving = cmd.name.endswith("MOVE")
    set_token, name_token = nargs(cmd, 2)
    sel = _sel(s)
    if moving and sel.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    rows = [(q, r) for q, r in _rows_for(s, set_token, by_uid) if r.uid not in sel.gone]
    target = await resolve(s, mailbox_name(name_token), access=cmd.name)
    dest = await s.db(backend.folder_by_name, target.owner.id, target.folder)
    if dest is None:
        raise No("Mailbox does not exist", "TRYCREATE")
    if not rows:
        return f"{cmd.name} completed"
    src_uids = [r.uid for _, r in rows]
    event = "imap.move" if moving else "imap.copy"
    records = _per_messages(s, event, sel, "messages", [[r.uid, r.id] for _, r in rows],
                            to_mailbox=target.owner.address, to_folder_id=dest.id)
    if moving and target.owner.id == sel.owner.id:
        validity, new_uids = await s.write(lambda conn: backend.move_messages(
            conn, sel.folder.id, dest.id, [(r.uid, r.id) for _, r in rows], records))
    else:
        opened = await s.db(backend.open_messages, s.ctx.app.keyring, sel.owner.id,
                            [r.id for _, r in rows])
        broken = [r.uid for _, r in rows if opened[r.id].error == "tampered"]
        if broken:
            await s.audit(*_tampered(s, sel, broken))
            raise No(f"Message(s) could not be read (UID {' '.join(map(str, broken))})",
                     "SERVERBUG")

        def reseal() -> list[backend.CopySource]:
            keyring = s.ctx.app.keyring
            out = []
            for _, r in rows:
                data = opened[r.id].data
                assert data is not None
                c = store.seal_local(keyring, target.owner.id, target.owner.address, data)
                out.append(backend.CopySource(c.message_id, c.sealed, c.size, r.flags,
                                              r.internal_date))
            return out
        sources = await s.thread(reseal)

        def work(conn: Connection) -> tuple[int, list[int]]:
            result = backend.copy_messages(conn, dest.id, target.owner.id, sources, records)
            if moving:
                backend.remove_messages(conn, sel.folder.id, [r.id for _, r in rows])
            return result
        validity, new_uids = await s.write(work)
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


