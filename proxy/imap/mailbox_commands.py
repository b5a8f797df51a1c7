"""Authenticated-state commands (RFC 3501 §6.3 and extensions): SELECT, EXAMINE, CREATE,
DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS, NAMESPACE, APPEND, IDLE."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from audit.journal import append
from mss.mailstore import deliveries, folders, messages, snapshots
from proxy.imap.args import Result, astring, atom, flag_list, nargs
from proxy.imap.connection import (
    SELECTED,
    No,
    Responded,
    Selected,
    Session,
)
from proxy.imap.names import (
    DELIMITER,
    SHARED_PREFIX,
    Target,
    all_names,
    encode_name,
    list_pattern,
    mailbox_name,
    require_folder,
    resolve,
)
from proxy.imap.parser import Command
from proxy.imap.tokens import MONTH_NUMBERS as _MONTHS
from proxy.imap.tokens import Atom, ImapParseError, Token
from proxy.imap.utf7 import decode_mailbox_name


async def select_command(s: Session, cmd: Command) -> Result:
    if not 1 <= len(cmd.args) <= 2:
        raise ImapParseError("Wrong number of arguments")
    readonly = cmd.name == "EXAMINE"
    if len(cmd.args) == 2:  # RFC 7162 §3.2.8 SELECT ... (CONDSTORE)
        params = cmd.args[1]
        if not isinstance(params, list) or [atom(p).upper() for p in params] != ["CONDSTORE"]:
            raise ImapParseError("Unknown SELECT parameter")
        s.condstore = True
    name = mailbox_name(cmd.args[0])
    s.close_selected()  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
    target = await resolve(s, name, access=cmd.name)

    def load(conn: Connection) -> tuple[folders.Folder | None, snapshots.Snapshot | None]:
        # one worker-thread round trip; the folder (and its HIGHESTMODSEQ) is read before
        # the rows, so a change in between is reported by the next refresh
        folder = folders.folder_by_name(conn, target.owner.id, target.folder)
        if folder is None:
            return None, None
        return folder, s.ctx.mailstore.snapshots.get(conn, folder)

    record = s.record("imap.select", mailbox=target.owner.address,
                      detail={"readonly": readonly, "delegated": target.delegated})

    recent = (0, 0)  # this session's \Recent UIDs: above the first, up to the second

    def audit_if_present(conn: Connection
                         ) -> tuple[folders.Folder | None, snapshots.Snapshot | None]:
        # in the writer's transaction: the folder as last committed, its audit record,
        # its \Recent messages claimed (SELECT, not EXAMINE: RFC 3501 §2.3.2, §6.3.2) and
        # its snapshot when this process holds it (no scan on the writer thread)
        nonlocal recent
        folder = folders.folder_by_name(conn, target.owner.id, target.folder)
        if folder is None:
            return None, None
        record.detail["folder_id"] = folder.id  # never its name (mss/mailstore/names.py)
        append(conn, [record])
        last = folder.uidnext - 1
        recent = (folder.recent_uid if readonly
                  else folders.claim_recent(conn, folder.id, last), last)
        return folder, s.ctx.mailstore.snapshots.peek(folder)

    # One round trip when the snapshot is held; else the rows are read after the commit,
    # on a reader (both before the tagged OK).
    folder, snap = await s.write(audit_if_present)
    if folder is not None and snap is None:
        folder, snap = await s.db(load)
    if folder is None or snap is None:
        raise No("No such mailbox", "NONEXISTENT")
    keywords = set(snap.keywords)
    watch = s.ctx.notifier.watch(target.owner.id, folder.id, target.delegated)
    s.selected = Selected(folder, target.owner, target.delegated, readonly, list(snap.rows),
                          folder.highestmodseq, watch, name, keywords=keywords,
                          recent={r.uid for r in snap.rows if recent[0] < r.uid <= recent[1]})
    s.state = SELECTED
    flags = " ".join([*messages.SYSTEM_FLAGS, *sorted(keywords)])
    s.untagged(f"FLAGS ({flags})".encode())
    s.untagged(f"OK [PERMANENTFLAGS ({'' if readonly else flags + ' '}\\*)] Flags permitted"
               .encode() if not readonly else b"OK [PERMANENTFLAGS ()] Read-only mailbox")
    s.untagged(b"%d EXISTS" % len(snap.rows))
    s.untagged(b"%d RECENT" % len(s.selected.recent))
    if snap.first_unseen is not None:
        s.untagged(b"OK [UNSEEN %d] First unseen" % snap.first_unseen)
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % folder.highestmodseq)
    return (f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE")


async def _new_name(s: Session, name: str, access: str) -> Target:
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


async def create(s: Session, cmd: Command) -> Result:
    name = mailbox_name(nargs(cmd, 1)[0])
    if not name or name == "INBOX":
        raise No("Mailbox already exists", "ALREADYEXISTS")
    target = await _new_name(s, name, "CREATE")
    parts = target.folder.split(DELIMITER)
    if any(not p for p in parts):
        raise No("Invalid mailbox name", "CANNOT")
    record = s.record("imap.folder.create", mailbox=target.owner.address)  # + folder_id

    def work(conn: Connection) -> None:
        # RFC 3501 §6.3.3: create the missing superiors too
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if folders.folder_by_name(conn, target.owner.id, parent) is None:
                folders.create_folder(conn, target.owner.id, parent, [])
        folders.create_folder(conn, target.owner.id, target.folder, [record])
    await s.write(work)
    return "CREATE completed"


async def delete_command(s: Session, cmd: Command) -> Result:
    name = mailbox_name(nargs(cmd, 1)[0])
    target = await resolve(s, name, access="DELETE")
    record = s.record("imap.folder.delete", mailbox=target.owner.address)  # + folder_id
    deleted = await s.write(lambda conn: folders.delete_folder(
        conn, target.owner.id, target.folder, [record]))
    s.ctx.notifier.changed(target.owner.id)
    sel = s.selected
    if sel is not None and (sel.folder.id, sel.folder.uidvalidity) == deleted:
        s.selection_gone()  # its own selected mailbox: no BYE (RFC 3501 §6.3.4)
    return "DELETE completed"


async def rename(s: Session, cmd: Command) -> Result:
    old_token, new_token = nargs(cmd, 2)
    old = await resolve(s, mailbox_name(old_token), access="RENAME")
    new = await _new_name(s, mailbox_name(new_token), "RENAME")
    if old.owner.id != new.owner.id:
        raise No("Cannot rename across mailboxes", "CANNOT")
    # + folder_id (rename_folder): names are content, never audited (mss/mailstore/names.py)
    record = s.record("imap.folder.rename", mailbox=old.owner.address)
    await s.write(lambda conn: folders.rename_folder(conn, old.owner.id, old.folder,
                                                     new.folder, [record]))
    s.ctx.notifier.changed(old.owner.id)
    return "RENAME completed"


async def subscribe(s: Session, cmd: Command) -> Result:
    target = await resolve(s, mailbox_name(nargs(cmd, 1)[0]), access=cmd.name)
    value = cmd.name == "SUBSCRIBE"
    await s.write(lambda conn: folders.set_subscribed(conn, target.owner.id, target.folder,
                                                      value))
    return f"{cmd.name} completed"



# RFC 5258 §3.1 selection options (REMOTE: there are no remote mailboxes), RFC 6154 §3
_SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
# RFC 5258 §3.2 return options, RFC 5819 STATUS, RFC 6154 §3 SPECIAL-USE
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"})


@dataclass
class _ListOptions:
    selection: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status_items: list[Token] = field(default_factory=list)


def _list_options(cmd: Command) -> tuple[_ListOptions, list[Token]]:
    """The LIST-EXTENDED options (RFC 5258 §3) and the remaining (reference, patterns)."""
    args = list(cmd.args)
    opts = _ListOptions()
    extended = False
    first = args[0] if args else None
    if isinstance(first, list):
        opts.selection = {atom(t).upper() for t in first}
        del args[0]
        extended = True
        unknown = opts.selection - _SELECTION_OPTIONS
        if unknown:  # RFC 5258 §3.1: an unrecognised selection option is BAD
            raise ImapParseError(f"Unknown LIST selection option {sorted(unknown)[0]}")
        if "RECURSIVEMATCH" in opts.selection and "SUBSCRIBED" not in opts.selection:
            # RFC 5258 §3.1: never alone (nor with REMOTE only); CHILDINFO is defined for
            # SUBSCRIBED only here (RFC 6154 §3 gives none for SPECIAL-USE)
            raise ImapParseError("RECURSIVEMATCH needs the SUBSCRIBED selection option")
    if len(args) >= 2 and isinstance(args[-2], Atom) and args[-2].upper() == "RETURN":
        ret = args.pop()
        args.pop()
        extended = True
        if not isinstance(ret, list):
            raise ImapParseError("RETURN needs a list")
        i = 0
        while i < len(ret):
            option = atom(ret[i]).upper()
            if option not in _RETURN_OPTIONS:
                raise ImapParseError(f"Unknown LIST return option {option}")
            if option == "STATUS":  # RFC 5819
                i += 1
                if i >= len(ret) or not isinstance(ret[i], list):
                    raise ImapParseError("STATUS needs a list")
                opts.status_items = ret[i]  # type: ignore[assignment]
            opts.returns.add(option)
            i += 1
    if extended and cmd.name == "LSUB":
        raise ImapParseError("LSUB takes no LIST-EXTENDED options")
    if len(args) != 2:
        raise ImapParseError("Wrong number of arguments")
    return opts, args


def _childinfo(name: str, subscribed: set[str], matches: Callable[[str], bool]) -> bool:
    """RFC 5258 §3.5 CHILDINFO ("SUBSCRIBED"): a descendant is subscribed but is not listed
    itself (it does not match the patterns)."""
    prefix = name + DELIMITER
    return any(n.startswith(prefix) and not matches(n) for n in subscribed)


async def list_command(s: Session, cmd: Command) -> Result:
    assert s.user is not None
    opts, args = _list_options(cmd)
    reference = mailbox_name(args[0]) if astring(args[0]) else ""
    if reference and not reference.endswith(DELIMITER):
        reference += DELIMITER
    pattern_tokens = args[1] if isinstance(args[1], list) else [args[1]]
    raw_patterns = [astring(p).decode("utf-8", "replace") for p in pattern_tokens]
    lsub = cmd.name == "LSUB"
    if raw_patterns == [""] and not lsub:  # RFC 3501 §6.3.8: the delimiter and root
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return "LIST completed"
    if _asks_highestmodseq(opts.status_items):
        s.enable_condstore()  # RFC 7162 §3.1
    patterns = [list_pattern(reference, decode_mailbox_name(p)) for p in raw_patterns]

    def matches(name: str) -> bool:
        return any(p.match(name) for p in patterns)
    user = s.user
    names, kept = await s.db(lambda conn: (all_names(conn, user),
                                           folders.deleted_subscriptions(conn, user.id)))
    every_name = [n for n, _ in names]
    subscribed_only = lsub or "SUBSCRIBED" in opts.selection
    recursive = "RECURSIVEMATCH" in opts.selection
    subscribed = {n for n, f in names if f is not None and f.subscribed} | set(kept)
    listed = list(names)
    if subscribed_only:  # deleted folders still subscribed, and the parents of these
        present = set(every_name)
        extra = set(kept) | {n.rsplit(DELIMITER, depth)[0] for n in kept
                             for depth in range(1, n.count(DELIMITER) + 1)}
        listed += [(n, None) for n in sorted(extra - present)]
    for name, folder in listed:
        if not matches(name):
            continue
        special = folder.special_use if folder is not None else None
        if "SPECIAL-USE" in opts.selection and not special:
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
        if name in subscribed and (subscribed_only or "SUBSCRIBED" in opts.returns):
            attrs.append("\\Subscribed")
        line = b"%s (%s) \"/\" %s" % (b"LSUB" if lsub else b"LIST", " ".join(attrs).encode(),
                                      encode_name(name))
        if childinfo:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.untagged(line)
        if opts.status_items and folder is not None:
            s.untagged(await _status_line(s, name, folder, opts.status_items))
    return f"{cmd.name} completed"


async def _status_line(s: Session, name: str, folder: folders.Folder,
                       items: list[Token]) -> bytes:
    messages, unseen, recent = await s.db(folders.folder_counts, folder)
    values: list[str] = []
    for token in items:
        item = atom(token).upper()
        value = {"MESSAGES": messages, "RECENT": recent, "UIDNEXT": folder.uidnext,
                 "UIDVALIDITY": folder.uidvalidity, "UNSEEN": unseen,
                 "HIGHESTMODSEQ": folder.highestmodseq}.get(item)
        if item == "SIZE":
            value = await s.db(folders.folder_size, folder.id)
        if value is None:
            raise ImapParseError(f"Unknown STATUS item {item}")
        values.append(f"{item} {value}")
    return b"STATUS %s (%s)" % (encode_name(name), " ".join(values).encode())


def _asks_highestmodseq(items: list[Token]) -> bool:
    return any(isinstance(t, Atom) and t.upper() == "HIGHESTMODSEQ" for t in items)


async def status(s: Session, cmd: Command) -> Result:
    name_token, items = nargs(cmd, 2)
    if not isinstance(items, list) or not items:
        raise ImapParseError("STATUS needs a list of items")
    name = mailbox_name(name_token)
    target = await resolve(s, name, access="STATUS")
    folder = await require_folder(s, target)
    if _asks_highestmodseq(items):
        s.enable_condstore()  # RFC 7162 §3.1
    s.untagged(await _status_line(s, name, folder, items))
    return "STATUS completed"


async def namespace(s: Session, cmd: Command) -> Result:
    nargs(cmd, 0)  # RFC 2342: personal with no prefix, no other users, shared "Shared/"
    s.untagged(b'NAMESPACE (("" "/")) NIL (("Shared/" "/"))')
    return "NAMESPACE completed"


def _parse_date_time(text: str) -> float:
    """RFC 3501 date-time ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` as POSIX seconds."""
    found = re.fullmatch(
        r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", text)
    if found is None or found.group(2).upper() not in _MONTHS:
        raise ImapParseError("Invalid date-time")
    day, _, year, hh, mm, ss, sign, zh, zm = found.groups()
    try:
        zone = dt.timezone((1 if sign == "+" else -1) * dt.timedelta(hours=int(zh),
                                                                     minutes=int(zm)))
        when = dt.datetime(int(year), _MONTHS[found.group(2).upper()], int(day), int(hh),
                           int(mm), int(ss), tzinfo=zone)
    except ValueError:  # 31-Feb, 25:00, a zone beyond 24 h
        raise ImapParseError("Invalid date-time") from None
    return when.timestamp()


async def append_command(s: Session, cmd: Command) -> Result:
    if not 2 <= len(cmd.args) <= 4:
        raise ImapParseError("Wrong number of arguments")
    name = mailbox_name(cmd.args[0])
    rest = cmd.args[1:]
    message = rest.pop()
    if not isinstance(message, bytes):
        raise ImapParseError("Message must be a literal")
    flags: tuple[str, ...] = ()
    when = time.time()
    for token in rest:
        if isinstance(token, list):
            flags = flag_list(token)
        elif isinstance(token, bytes):
            when = _parse_date_time(token.decode("ascii", "replace"))
        else:
            raise ImapParseError("Invalid APPEND argument")
    if not message:
        raise No("Empty message", "CANNOT")
    target = await resolve(s, name, access="APPEND")
    folder = await s.db(folders.folder_by_name, target.owner.id, target.folder)
    if folder is None:  # RFC 3501 §6.3.11
        raise No("Mailbox does not exist", "TRYCREATE")
    copy = await s.thread(deliveries.seal_local, s.ctx.app.keyring, target.owner.id,
                          target.owner.address, message)
    record = s.record("imap.append", mailbox=target.owner.address,
                      detail={"folder_id": folder.id, "store_id": copy.message_id,
                              "size": copy.size})
    validity, uid = await s.write(lambda conn: messages.append_message(
        conn, folder.id, target.owner.id, copy.message_id, copy.sealed, copy.size, flags,
        when, [record]))
    s.ctx.notifier.changed(target.owner.id)
    return ("APPEND completed", f"APPENDUID {validity} {uid}")  # RFC 4315


async def idle(s: Session, cmd: Command) -> Result:
    nargs(cmd, 0)
    await s.idle(cmd.tag)
    raise Responded


