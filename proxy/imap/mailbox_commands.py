"""Authenticated-state commands (RFC 3501 §6.3 and extensions): SELECT, EXAMINE, CREATE,
DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS, NAMESPACE, APPEND, IDLE."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import Connection

from audit.events import Event, Outcome
from audit.journal import append
from mss import sending
from mss.mailstore import deliveries, folders, messages, snapshots
from mss.mailstore.errors import HoldError
from proxy.imap.args import NoArgs, Result
from proxy.imap.mailbox_args import (
    AppendArgs,
    ListArgs,
    MailboxArgs,
    RenameArgs,
    SelectArgs,
    StatusArgs,
    SubscribeArgs,
)
from proxy.imap.names import (
    DELIMITER,
    SHARED_PREFIX,
    Target,
    all_names,
    encode_name,
    list_pattern,
    require_folder,
    resolve,
)
from proxy.imap.parser import Command
from proxy.imap.state import (
    SELECTED,
    ImapSession,
    No,
    Responded,
    Selected,
)


async def select_command(s: ImapSession, cmd: Command, args: SelectArgs) -> Result:
    readonly = args.readonly
    if args.condstore:  # RFC 7162 §3.2.8 SELECT ... (CONDSTORE)
        s.condstore = True
    s.close_selected()  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
    target = await resolve(s, args.name, access=cmd.name)

    def load(conn: Connection) -> tuple[folders.Folder | None, snapshots.Snapshot | None]:
        # one worker-thread round trip; the folder (and its HIGHESTMODSEQ) is read before
        # the rows, so a change in between is reported by the next refresh
        folder = folders.folder_by_name(conn, s.ctx.keyring, target.owner.id, target.folder)
        if folder is None:
            return None, None
        return folder, s.ctx.mailstore.snapshots.get(conn, folder)

    def audit_if_present(conn: Connection
                         ) -> tuple[folders.Folder | None, snapshots.Snapshot | None,
                                    tuple[int, int]]:
        # in the writer's transaction: the folder as last committed, its audit record,
        # its \Recent messages claimed (SELECT, not EXAMINE: RFC 3501 §2.3.2, §6.3.2) and
        # its snapshot when this process holds it (no scan on the writer thread); this
        # session's \Recent UIDs: above the first UID returned, up to the second
        folder = folders.folder_by_name(conn, s.ctx.keyring, target.owner.id, target.folder)
        if folder is None:
            return None, None, (0, 0)
        append(conn, [s.record(Event.IMAP_SELECT, mailbox=target.owner.address,
                               detail={"readonly": readonly, "delegated": target.delegated,
                                       "folder_id": folder.id})])  # never its name
        last = folder.uidnext - 1
        # nothing above the UID claimed last (recent_uid only grows): no claim to write
        claimed = (folder.recent_uid if readonly or last <= folder.recent_uid
                   else folders.claim_recent(conn, folder.id, last))
        return folder, s.ctx.mailstore.snapshots.peek(folder), (claimed, last)

    # One round trip when the snapshot is held; else the rows are read after the commit,
    # on a reader (both before the tagged OK).
    folder, snap, recent = await s.write(audit_if_present)
    if folder is not None and snap is None:
        folder, snap = await s.db(load)
    if folder is None or snap is None:
        raise No("No such mailbox", "NONEXISTENT")
    watch = s.ctx.notifier.watch(target.owner.id, folder.id, target.delegated)
    s.selected = Selected(folder, target.owner, target.delegated, readonly, list(snap.rows),
                          folder.highestmodseq, watch, args.name, keywords=set(snap.keywords),
                          recent=snap.uids_between(*recent))
    s.state = SELECTED
    for line in render_select(folder, snap, len(s.selected.recent), readonly):
        s.untagged(line)
    return (f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE")


def render_select(folder: folders.Folder, snap: snapshots.Snapshot, recent: int,
                  readonly: bool) -> list[bytes]:
    """The untagged answer of SELECT / EXAMINE (RFC 3501 §6.3.1, §6.3.2; RFC 7162 §3.1.2)."""
    flags = " ".join([*messages.SYSTEM_FLAGS, *sorted(snap.keywords)])
    lines = [f"FLAGS ({flags})".encode(),
             b"OK [PERMANENTFLAGS ()] Read-only mailbox" if readonly else
             f"OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted".encode(),
             b"%d EXISTS" % len(snap.rows),
             b"%d RECENT" % recent]
    if snap.first_unseen is not None:
        lines.append(b"OK [UNSEEN %d] First unseen" % snap.first_unseen)
    lines += [b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity,
              b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext,
              b"OK [HIGHESTMODSEQ %d] Highest" % folder.highestmodseq]
    return lines


async def _new_name(s: ImapSession, name: str, access: str) -> Target:
    """The target of a name to be created (CREATE, RENAME's new name). A personal folder
    named like the shared namespace (``Shared``, ``shared/x``, in any case) would shadow
    it (RFC 2342 §5): refused; ``Shared/<granted address>/<folder>`` is the shared box's."""
    if name.split(DELIMITER, 1)[0].casefold() != SHARED_PREFIX[:-1].casefold():
        return await resolve(s, name, access=access)
    try:
        target = await resolve(s, name, access=access)
    except No:
        target = None
    if target is None or not target.delegated:
        raise No("Reserved for the shared namespace", "CANNOT")
    return target


async def create(s: ImapSession, cmd: Command, args: MailboxArgs) -> Result:
    name = args.name
    if not name or name == "INBOX":
        raise No("Mailbox already exists", "ALREADYEXISTS")
    target = await _new_name(s, name, "CREATE")
    parts = target.folder.split(DELIMITER)
    if any(not p for p in parts):
        raise No("Invalid mailbox name", "CANNOT")
    record = s.record(Event.IMAP_FOLDER_CREATE, mailbox=target.owner.address)  # + folder_id

    keyring = s.ctx.keyring

    def work(conn: Connection) -> None:
        # RFC 3501 §6.3.3: create the missing superiors too
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if folders.folder_by_name(conn, keyring, target.owner.id, parent) is None:
                folders.create_folder(conn, keyring, target.owner.id, parent, [])
        folders.create_folder(conn, keyring, target.owner.id, target.folder, [record])
    await s.write(work)
    return "CREATE completed"


async def delete_command(s: ImapSession, cmd: Command, args: MailboxArgs) -> Result:
    target = await resolve(s, args.name, access="DELETE")
    record = s.record(Event.IMAP_FOLDER_DELETE, mailbox=target.owner.address)  # + folder_id
    try:
        deleted = await s.write(lambda conn: folders.delete_folder(
            conn, s.ctx.keyring, target.owner.id, target.folder, [record]))
    except HoldError:  # a folder holding messages, in a mailbox under legal hold
        await s.audit(s.record(Event.IMAP_FOLDER_DELETE, Outcome.MINOR_FAILURE,
                               mailbox=target.owner.address, reason="legal hold"))
        raise
    s.ctx.notifier.changed(target.owner.id)
    sel = s.selected
    if sel is not None and (sel.folder.id, sel.folder.uidvalidity) == deleted:
        s.selection_gone()  # its own selected mailbox: no BYE (RFC 3501 §6.3.4)
    return "DELETE completed"


async def rename(s: ImapSession, cmd: Command, args: RenameArgs) -> Result:
    old = await resolve(s, args.old, access="RENAME")
    new = await _new_name(s, args.new, "RENAME")
    if old.owner.id != new.owner.id:
        raise No("Cannot rename across mailboxes", "CANNOT")
    # + folder_id (rename_folder): names are content, never audited (mss/mailstore/names.py)
    record = s.record(Event.IMAP_FOLDER_RENAME, mailbox=old.owner.address)
    await s.write(lambda conn: folders.rename_folder(conn, s.ctx.keyring, old.owner.id,
                                                     old.folder, new.folder, [record]))
    s.ctx.notifier.changed(old.owner.id)
    return "RENAME completed"


async def subscribe(s: ImapSession, cmd: Command, args: SubscribeArgs) -> Result:
    target = await resolve(s, args.name, access=cmd.name)
    await s.write(lambda conn: folders.set_subscribed(conn, s.ctx.keyring, target.owner.id,
                                                      target.folder, args.subscribe))
    return f"{cmd.name} completed"


# ------------------------------------------------------------------------------ LIST, STATUS

@dataclass(frozen=True)
class ListEntry:
    """One mailbox of a LIST / LSUB answer (RFC 3501 §7.2.2, RFC 5258 §3.4)."""

    name: str
    folder: folders.Folder | None  # None: a \Noselect parent, a deleted subscription
    attributes: tuple[str, ...]
    childinfo: bool  # RFC 5258 §3.5 CHILDINFO ("SUBSCRIBED")


def _childinfo(name: str, subscribed: set[str], matches: Callable[[str], bool]) -> bool:
    """RFC 5258 §3.5 CHILDINFO ("SUBSCRIBED"): a descendant is subscribed but is not listed
    itself (it does not match the patterns)."""
    prefix = name + DELIMITER
    return any(n.startswith(prefix) and not matches(n) for n in subscribed)


def list_entries(args: ListArgs, names: list[tuple[str, folders.Folder | None]],
                 kept: Collection[str]) -> list[ListEntry]:
    """The mailboxes a LIST / LSUB answers, from every name the user sees and the
    subscriptions kept for deleted folders (pure)."""
    patterns = [list_pattern(args.reference, p) for p in args.patterns]

    def matches(name: str) -> bool:
        return any(p.match(name) for p in patterns)
    lsub = args.lsub
    every_name = [n for n, _ in names]
    subscribed_only = lsub or "SUBSCRIBED" in args.selection
    recursive = "RECURSIVEMATCH" in args.selection
    subscribed = {n for n, f in names if f is not None and f.subscribed} | set(kept)
    listed = list(names)
    if subscribed_only:  # deleted folders still subscribed, and the parents of these
        present = set(every_name)
        extra = set(kept) | {n.rsplit(DELIMITER, depth)[0] for n in kept
                             for depth in range(1, n.count(DELIMITER) + 1)}
        listed += [(n, None) for n in sorted(extra - present)]
    entries: list[ListEntry] = []
    for name, folder in listed:
        if not matches(name):
            continue
        special = folder.special_use if folder is not None else None
        if "SPECIAL-USE" in args.selection and not special:
            continue  # RFC 6154 §3: the selection option lists special-use mailboxes only
        childinfo = recursive and _childinfo(name, subscribed, matches)
        attrs: list[str] = []
        if subscribed_only and name not in subscribed and not childinfo:
            # RFC 3501 §6.3.9: LSUB "%" names an unsubscribed parent of a subscribed name
            # that the pattern does not reach, as \Noselect
            if not lsub or not any(d.startswith(name + DELIMITER) and not matches(d)
                                   for d in subscribed):
                continue
            attrs.append("\\Noselect")
        elif subscribed_only and name in kept:  # RFC 5258 §3.4; LSUB: not selectable
            attrs.append("\\Noselect" if lsub else "\\NonExistent")
        else:
            if folder is None:
                attrs.append("\\Noselect")
            children = any(n.startswith(name + DELIMITER) for n in every_name)
            attrs.append("\\HasChildren" if children else "\\HasNoChildren")
            if special:
                attrs.append(special)  # RFC 6154 §2 (with or without RETURN (SPECIAL-USE))
        if name in subscribed and (subscribed_only or "SUBSCRIBED" in args.returns):
            attrs.append("\\Subscribed")
        entries.append(ListEntry(name, folder, tuple(attrs), childinfo))
    return entries


def render_list(args: ListArgs, entry: ListEntry) -> bytes:
    line = b"%s (%s) \"/\" %s" % (b"LSUB" if args.lsub else b"LIST",
                                  " ".join(entry.attributes).encode(), encode_name(entry.name))
    if entry.childinfo:
        line += b' ("CHILDINFO" ("SUBSCRIBED"))'
    return line


def render_status(name: str, items: tuple[str, ...], values: dict[str, int]) -> bytes:
    """RFC 3501 §7.2.4: the items in the order asked."""
    listed = " ".join(f"{item} {values[item]}" for item in items)
    return b"STATUS %s (%s)" % (encode_name(name), listed.encode())


async def status_values(s: ImapSession, folder: folders.Folder, items: tuple[str, ...]
                        ) -> dict[str, int]:
    """The values of the STATUS items asked (one reader round trip)."""
    def read(conn: Connection) -> dict[str, int]:
        messages, unseen, recent = folders.folder_counts(conn, folder)
        values = {"MESSAGES": messages, "RECENT": recent, "UIDNEXT": folder.uidnext,
                  "UIDVALIDITY": folder.uidvalidity, "UNSEEN": unseen,
                  "HIGHESTMODSEQ": folder.highestmodseq}
        if "SIZE" in items:
            values["SIZE"] = folders.folder_size(conn, folder.id)
        return values
    return await s.db(read)


async def list_command(s: ImapSession, cmd: Command, args: ListArgs) -> Result:
    user = s.user
    assert user is not None
    if args.root_only:  # RFC 3501 §6.3.8: the delimiter and root
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return "LIST completed"
    if "HIGHESTMODSEQ" in args.status_items:
        s.enable_condstore()  # RFC 7162 §3.1
    keyring = s.ctx.keyring
    names, kept = await s.db(lambda conn: (all_names(conn, keyring, user),
                                           folders.deleted_subscriptions(conn, keyring, user.id)))
    for entry in list_entries(args, names, kept):
        s.untagged(render_list(args, entry))
        if args.status_items and entry.folder is not None:  # RFC 5819
            values = await status_values(s, entry.folder, args.status_items)
            s.untagged(render_status(entry.name, args.status_items, values))
    return f"{cmd.name} completed"


async def status(s: ImapSession, cmd: Command, args: StatusArgs) -> Result:
    target = await resolve(s, args.name, access="STATUS")
    folder = await require_folder(s, target)
    if "HIGHESTMODSEQ" in args.items:
        s.enable_condstore()  # RFC 7162 §3.1
    values = await status_values(s, folder, args.items)
    s.untagged(render_status(args.name, args.items, values))
    return "STATUS completed"


async def namespace(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    # RFC 2342: personal with no prefix, no other users, shared "Shared/"
    s.untagged(b'NAMESPACE (("" "/")) NIL (("Shared/" "/"))')
    return "NAMESPACE completed"


# ------------------------------------------------------------------------------ APPEND, IDLE

async def append_command(s: ImapSession, cmd: Command, args: AppendArgs) -> Result:
    if not args.message:
        raise No("Empty message", "CANNOT")
    when = time.time() if args.when is None else args.when
    target = await resolve(s, args.name, access="APPEND")
    folder = await s.db(folders.folder_by_name, s.ctx.keyring, target.owner.id, target.folder)
    if folder is None:  # RFC 3501 §6.3.11
        raise No("Mailbox does not exist", "TRYCREATE")
    count = await append_count(s, len(args.message))  # the login's APPEND bytes per window
    copy = await s.thread(deliveries.seal_local, s.ctx.app.keyring, target.owner.id,
                          target.owner.address, args.message)
    record = s.record(Event.IMAP_APPEND, mailbox=target.owner.address,
                      detail={"folder_id": folder.id, "store_id": copy.message_id,
                              "size": copy.size})

    counts: list[sending.Usage] = []

    def commit(conn: Connection) -> tuple[int, int] | None:
        if count is not None:
            usage = sending.bump(conn, count.key, count.window, count.caps,
                                 append_bytes=len(args.message))
            if usage is None:
                return None  # another session took the rest of the window's volume
            counts[:] = [usage]
        return messages.append_message(conn, folder.id, target.owner.id, copy.message_id,
                                       copy.sealed, copy.size, args.flags, when, [record])

    done = await s.write(commit)
    if done is None:
        assert count is not None
        append_refused(s, count)
    validity, uid = done
    if count is not None and counts and s.ctx.sending is not None:
        s.ctx.sending.counted(count.key, count.window, counts[0])
    s.ctx.notifier.changed(target.owner.id)
    return ("APPEND completed", f"APPENDUID {validity} {uid}")  # RFC 4315


async def append_count(s: ImapSession, size: int) -> sending.Count | None:
    """The login's APPEND volume in this window (None: unlimited); NO [LIMIT] when *size*
    more would pass the cap (RFC 9051 §7.1), before the message is sealed."""
    limits, user = s.ctx.sending, s.user
    if limits is None or user is None or not limits.config.append_bytes_per_mailbox:
        return None
    key = sending.mailbox_key(user.address)
    count = await s.thread(limits.count, key, limits.mailbox, user.address)
    if count.caps.over(count.usage, append_bytes=size) is not None:
        append_refused(s, count)
    return count


def append_refused(s: ImapSession, count: sending.Count) -> NoReturn:
    """Audited once per login and window (mss/sending.py), then NO [LIMIT]."""
    limits = s.ctx.sending
    assert limits is not None
    limits.refused(count.key, count.window, "append_bytes", limits.record(
        count.key, count.window, "append_bytes", count.caps, actor=count.actor,
        mailbox=count.actor, remote_addr=s.remote_addr, listener=s.ctx.listener))
    raise No(sending.APPEND_TEXT, "LIMIT")


async def idle(s: ImapSession, cmd: Command, args: NoArgs) -> Result:
    await s.idle(cmd.tag)  # RFC 2177
    raise Responded
