"""IMAP command handlers (RFC 3501 §6 and the extensions listed in docs/imap.md).

A handler receives the session and the parsed command. It returns the text of the tagged
``OK`` (optionally ``(text, code)``), raises :class:`No` / ``BackendError`` for ``NO``, or
``ImapParseError`` for ``BAD``. Untagged updates for other sessions' changes are added by the
session before the tagged reply.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import calendar
import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection, select

from audit.events import Outcome
from audit.journal import AuditRecord
from mss import db, store
from proxy.imap import backend, wire
from proxy.imap.auth import check_login
from proxy.imap.cache import ENVELOPES, CachedEnvelope, RecordingParsed
from proxy.imap.connection import (
    AUTHENTICATED,
    LOGOUT,
    NOT_AUTHENTICATED,
    SELECTED,
    No,
    Responded,
    Selected,
    Session,
)
from proxy.imap.mime import ParsedMessage
from proxy.imap.parser import Command
from proxy.imap.tokens import Atom, ImapParseError, MessageMeta, Token

Result = str | tuple[str, str | None] | None
Handler = Callable[[Session, Command], Awaitable[Result]]

SHARED_PREFIX = "Shared/"
DELIMITER = "/"
_SYSTEM = {f.upper(): f for f in backend.SYSTEM_FLAGS}
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_BATCH = 250  # messages decrypted per worker-thread round trip


# ------------------------------------------------------------------------------ tokens

def _args(cmd: Command, low: int, high: int | None = None) -> list[Token]:
    high = low if high is None else high
    if not low <= len(cmd.args) <= high:
        raise ImapParseError("Wrong number of arguments")
    return cmd.args


def astring(token: Token) -> bytes:
    if isinstance(token, bytes):
        return token
    if isinstance(token, Atom) and token.section is None:
        return token.value.encode()
    raise ImapParseError("Expected a string")


def atom(token: Token) -> str:
    if isinstance(token, Atom) and token.section is None:
        return token.value
    raise ImapParseError("Expected an atom")


def number(token: Token) -> int:
    text = atom(token)
    if not text.isdigit() or len(text) > 20:
        raise ImapParseError("Expected a number")
    return int(text)


def mailbox_name(token: Token) -> str:
    """A mailbox argument, decoded from modified UTF-7 (RFC 3501 §5.1.3); INBOX in any case
    is INBOX (§5.1)."""
    from proxy.imap.utf7 import decode_mailbox_name

    raw = astring(token)
    try:
        name = decode_mailbox_name(raw.decode("ascii") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise ImapParseError("Mailbox name must be 7-bit (modified UTF-7)") from None
    name = str(name).rstrip(DELIMITER)
    if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
        name = "INBOX" + name[5:]
    return name


def encode_name(name: str) -> bytes:
    from proxy.imap.utf7 import encode_mailbox_name

    return wire.astring(encode_mailbox_name(name))


def flag_list(tokens: list[Token]) -> tuple[str, ...]:
    flags: list[str] = []
    for token in tokens:
        text = atom(token)
        if text.startswith("\\"):
            canonical = _SYSTEM.get(text.upper())
            if canonical is None:
                raise ImapParseError(f"Invalid system flag {text}")
            text = canonical
        elif not re.fullmatch(r"[!#$&'+-\[^-~]+", text):
            raise ImapParseError(f"Invalid keyword {text}")
        if text not in flags:
            flags.append(text)
    return tuple(flags)


def seq_set(token: Token) -> Any:
    from proxy.imap.seqset import parse_sequence_set

    return parse_sequence_set(atom(token))


# ------------------------------------------------------------------------------ any state

async def capability(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    s.untagged(f"CAPABILITY {s.capabilities()}".encode())
    return "CAPABILITY completed"


async def noop(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    return "NOOP completed"


async def logout(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    s.untagged(b"BYE mss IMAP4rev1 server logging out")
    s.tagged(cmd.tag, "OK", "LOGOUT completed")
    s.state = LOGOUT
    await s.flush()
    raise Responded


async def id_command(s: Session, cmd: Command) -> Result:
    _args(cmd, 1)  # RFC 2971: the client's parameters are not logged (may identify a user)
    s.untagged(b'ID ("name" "mss" "vendor" "mss")')
    return "ID completed"


async def enable(s: Session, cmd: Command) -> Result:
    if not cmd.args:
        raise ImapParseError("Missing capability")
    enabled = []
    for token in cmd.args:
        if atom(token).upper() == "CONDSTORE":  # RFC 5161; RFC 7162 §3.1
            s.condstore = True
            enabled.append("CONDSTORE")
    s.untagged(("ENABLED " + " ".join(enabled)).strip().encode())
    return "ENABLE completed"


# ------------------------------------------------------------------------------ not authenticated

async def starttls(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    if s.tls:
        raise ImapParseError("TLS already active")
    s.tagged(cmd.tag, "OK", "Begin TLS negotiation now")
    await s.flush()
    s.input.buffer.clear()  # RFC 3501 §6.2.1: nothing sent before the handshake is kept
    await s.writer.start_tls(s.ctx.tls)
    s.tls = True
    raise Responded


async def _login(s: Session, cmd: Command, login: str, password: str, mechanism: str) -> None:
    throttle = s.ctx.throttle
    if throttle.blocked(login, s.remote_addr):
        await s.audit(s.record("imap.login", Outcome.MINOR_FAILURE, actor=login[:320],
                               reason="throttled", detail={"mechanism": mechanism}))
        raise No("Too many failed logins, try again later", "UNAVAILABLE")
    mailbox, reason = await s.db(check_login, login, password)
    if mailbox is None:
        locked = throttle.failed(login, s.remote_addr)
        await s.audit(s.record("imap.login", Outcome.SERIOUS_FAILURE, actor=login[:320],
                               reason=reason + ("; now throttled" if locked else ""),
                               detail={"mechanism": mechanism}))
        raise No("Authentication failed", "AUTHENTICATIONFAILED")
    throttle.succeeded(login, s.remote_addr)

    def setup(conn: Connection) -> None:
        backend.ensure_default_folders(conn, mailbox.id)
        from audit.journal import append
        append(conn, [s.record("imap.login", actor=mailbox.address, mailbox=mailbox.address,
                               detail={"mechanism": mechanism})])
    await s.write(setup)
    s.user = mailbox
    s.state = AUTHENTICATED
    s.commands.max_literal = s.ctx.config.max_literal_size
    s.commands.max_command = s.ctx.config.max_literal_size + 1024 * 1024
    s.tagged(cmd.tag, "OK", "Logged in", f"CAPABILITY {s.capabilities()}")
    raise Responded


async def login(s: Session, cmd: Command) -> Result:
    user, password = _args(cmd, 2)
    if not s.tls:  # RFC 3501 §6.2.3 LOGINDISABLED
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    await _login(s, cmd, astring(user).decode("utf-8", "replace"),
                 astring(password).decode("utf-8", "replace"), "LOGIN")
    return None


async def authenticate(s: Session, cmd: Command) -> Result:
    args = _args(cmd, 1, 2)
    if atom(args[0]).upper() != "PLAIN":
        raise No("Unsupported mechanism", "CANNOT")
    if not s.tls:
        raise No("Use STARTTLS first", "PRIVACYREQUIRED")
    if len(args) == 2:  # RFC 4959 SASL-IR
        response = astring(args[1])
        if response == b"=":
            response = b""
    else:
        s.send(b"+ \r\n")
        await s.flush()
        line = await s.input.readline(s.ctx.config.max_line_length)
        if line is None:
            s.state = LOGOUT
            raise Responded
        response = line.strip()
    if response == b"*":  # RFC 3501 §6.2.2: the client cancelled
        s.bad(cmd.tag, "Authentication cancelled")
        raise Responded
    try:
        decoded = base64.b64decode(response, validate=True)
        _authzid, authcid, password = decoded.split(b"\0")  # RFC 4616
    except (binascii.Error, ValueError):
        s.bad(cmd.tag, "Invalid SASL PLAIN response")
        raise Responded from None
    if _authzid and _authzid != authcid:
        raise No("Authorization identity must be empty or the same", "AUTHORIZATIONFAILED")
    await _login(s, cmd, authcid.decode("utf-8", "replace"),
                 password.decode("utf-8", "replace"), "PLAIN")
    return None


# ------------------------------------------------------------------------------ names

class Target:
    """A resolved mailbox name: which mailbox holds it, and the folder name inside it."""

    def __init__(self, owner: store.Mailbox, folder: str, delegated: bool) -> None:
        self.owner = owner
        self.folder = folder
        self.delegated = delegated


def _grants(conn: Connection, user_id: int) -> list[store.Mailbox]:
    ids = list(conn.execute(select(db.mailbox_grants.c.mailbox_id)
                            .where(db.mailbox_grants.c.grantee_id == user_id)).scalars())
    if not ids:
        return []
    rows = conn.execute(select(db.mailboxes).where(db.mailboxes.c.id.in_(ids)))
    return [store._mailbox_of(r) for r in rows if r.enabled]


async def resolve(s: Session, name: str, *, access: str) -> Target:
    """The mailbox and folder behind a client's name; delegated access is audited."""
    assert s.user is not None
    if not name.startswith(SHARED_PREFIX):
        return Target(s.user, name, False)
    rest = name[len(SHARED_PREFIX):]
    address, _, folder = rest.partition(DELIMITER)
    granted = {m.address: m for m in await s.db(_grants, s.user.id)}
    owner = granted.get(address.lower())
    if owner is None or not folder:
        raise No("No such mailbox", "NONEXISTENT")
    await s.audit(s.record("imap.delegated", mailbox=owner.address,
                           detail={"command": access, "folder": folder}))
    return Target(owner, folder, True)


async def _folder(s: Session, target: Target) -> backend.Folder:
    folder = await s.db(backend.folder_by_name, target.owner.id, target.folder)
    if folder is None:
        raise No("No such mailbox", "NONEXISTENT")
    return folder


def _client_name(target: Target) -> str:
    if target.delegated:
        return f"{SHARED_PREFIX}{target.owner.address}/{target.folder}"
    return target.folder


# ------------------------------------------------------------------------------ authenticated

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

    def load(conn: Connection) -> tuple[backend.Folder | None, list[backend.Row], set[str],
                                        int | None]:
        # one worker-thread round trip; the folder (and its HIGHESTMODSEQ) is read before
        # the rows, so a change in between is reported by the next refresh
        folder = backend.folder_by_name(conn, target.owner.id, target.folder)
        if folder is None:
            return None, [], set(), None
        rows = backend.rows(conn, folder.id)
        keywords = {f for r in rows for f in r.flags if not f.startswith("\\")}
        unseen = next((i for i, r in enumerate(rows, 1) if "\\Seen" not in r.flags), None)
        return folder, rows, keywords, unseen

    folder, rows, keywords, unseen = await s.db(load)
    if folder is None:
        raise No("No such mailbox", "NONEXISTENT")
    watch = s.ctx.notifier.watch(target.owner.id)
    s.selected = Selected(folder, target.owner, target.delegated, readonly, rows,
                          folder.highestmodseq, watch, name, keywords=keywords)
    s.state = SELECTED
    flags = " ".join([*backend.SYSTEM_FLAGS, *sorted(keywords)])
    s.untagged(f"FLAGS ({flags})".encode())
    s.untagged(f"OK [PERMANENTFLAGS ({'' if readonly else flags + ' '}\\*)] Flags permitted"
               .encode() if not readonly else b"OK [PERMANENTFLAGS ()] Read-only mailbox")
    s.untagged(b"%d EXISTS" % len(rows))
    s.untagged(b"0 RECENT")
    if unseen is not None:
        s.untagged(b"OK [UNSEEN %d] First unseen" % unseen)
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % folder.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] Predicted next UID" % folder.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % folder.highestmodseq)
    s.audit_later(s.record("imap.select", mailbox=target.owner.address,
                           detail={"folder": target.folder, "readonly": readonly,
                                   "delegated": target.delegated}))
    return (f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE")


async def create(s: Session, cmd: Command) -> Result:
    name = mailbox_name(_args(cmd, 1)[0])
    if not name or name == "INBOX":
        raise No("Mailbox already exists", "ALREADYEXISTS")
    target = await resolve(s, name, access="CREATE")
    parts = target.folder.split(DELIMITER)
    if any(not p for p in parts):
        raise No("Invalid mailbox name", "CANNOT")
    record = s.record("imap.folder.create", mailbox=target.owner.address,
                      detail={"folder": target.folder})

    def work(conn: Connection) -> None:
        # RFC 3501 §6.3.3: create the missing superiors too
        for depth in range(1, len(parts)):
            parent = DELIMITER.join(parts[:depth])
            if backend.folder_by_name(conn, target.owner.id, parent) is None:
                backend.create_folder(conn, target.owner.id, parent, [])
        backend.create_folder(conn, target.owner.id, target.folder, [record])
    await s.write(work)
    return "CREATE completed"


async def delete_command(s: Session, cmd: Command) -> Result:
    name = mailbox_name(_args(cmd, 1)[0])
    target = await resolve(s, name, access="DELETE")
    record = s.record("imap.folder.delete", mailbox=target.owner.address,
                      detail={"folder": target.folder})
    await s.write(lambda conn: backend.delete_folder(conn, target.owner.id, target.folder,
                                                     [record]))
    s.ctx.notifier.changed(target.owner.id)
    return "DELETE completed"


async def rename(s: Session, cmd: Command) -> Result:
    old_token, new_token = _args(cmd, 2)
    old = await resolve(s, mailbox_name(old_token), access="RENAME")
    new = await resolve(s, mailbox_name(new_token), access="RENAME")
    if old.owner.id != new.owner.id:
        raise No("Cannot rename across mailboxes", "CANNOT")
    record = s.record("imap.folder.rename", mailbox=old.owner.address,
                      detail={"folder": old.folder, "to": new.folder})
    await s.write(lambda conn: backend.rename_folder(conn, old.owner.id, old.folder,
                                                     new.folder, [record]))
    s.ctx.notifier.changed(old.owner.id)
    return "RENAME completed"


async def subscribe(s: Session, cmd: Command) -> Result:
    target = await resolve(s, mailbox_name(_args(cmd, 1)[0]), access=cmd.name)
    value = cmd.name == "SUBSCRIBE"
    await s.write(lambda conn: backend.set_subscribed(conn, target.owner.id, target.folder,
                                                      value))
    return f"{cmd.name} completed"


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter."""
    text = reference + pattern
    out = []
    for char in text:
        out.append(".*" if char == "*" else "[^/]*" if char == "%" else re.escape(char))
    regex = "".join(out)
    if text.upper().startswith("INBOX"):
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex + r"\Z")


def _all_names(conn: Connection, user: store.Mailbox) -> list[tuple[str, backend.Folder | None]]:
    own = sorted(backend.folders(conn, user.id), key=lambda f: (f.name != "INBOX", f.name))
    names: list[tuple[str, backend.Folder | None]] = [(f.name, f) for f in own]
    shared = _grants(conn, user.id)
    if shared:
        names.append(("Shared", None))
        for owner in shared:
            names.append((f"{SHARED_PREFIX}{owner.address}", None))
            names += [(f"{SHARED_PREFIX}{owner.address}/{f.name}", f)
                      for f in backend.folders(conn, owner.id)]
    return names


async def list_command(s: Session, cmd: Command) -> Result:
    assert s.user is not None
    args = list(cmd.args)
    selection: list[str] = []
    returns: list[str] = []
    status_items: list[Token] = []
    if args and isinstance(args[0], list):  # RFC 5258 selection options
        selection = [atom(t).upper() for t in args[0]]
        args = args[1:]
    if len(args) >= 2 and isinstance(args[-2], Atom) and args[-2].upper() == "RETURN":
        ret = args.pop()
        args.pop()
        if not isinstance(ret, list):
            raise ImapParseError("RETURN needs a list")
        i = 0
        while i < len(ret):
            option = atom(ret[i]).upper()
            if option == "STATUS":  # RFC 5819
                i += 1
                if i >= len(ret) or not isinstance(ret[i], list):
                    raise ImapParseError("STATUS needs a list")
                status_items = ret[i]  # type: ignore[assignment]
            returns.append(option)
            i += 1
    if len(args) != 2:
        raise ImapParseError("Wrong number of arguments")
    reference = mailbox_name(args[0]) if astring(args[0]) else ""
    if reference and not reference.endswith(DELIMITER):
        reference += DELIMITER
    pattern_tokens = args[1] if isinstance(args[1], list) else [args[1]]
    raw_patterns = [astring(p).decode("utf-8", "replace") for p in pattern_tokens]
    lsub = cmd.name == "LSUB"
    if raw_patterns == [""] and not lsub:  # RFC 3501 §6.3.8: the delimiter and root
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return "LIST completed"
    from proxy.imap.utf7 import decode_mailbox_name
    patterns = [_pattern(reference, decode_mailbox_name(p)) for p in raw_patterns]
    names = await s.db(_all_names, s.user)
    all_names = [n for n, _ in names]
    subscribed_only = lsub or "SUBSCRIBED" in selection
    for name, folder in names:
        if not any(p.match(name) for p in patterns):
            continue
        subscribed = folder is not None and folder.subscribed
        if subscribed_only and not subscribed:
            continue
        attrs: list[str] = []
        if folder is None:
            attrs.append("\\Noselect")
        children = any(n.startswith(name + DELIMITER) for n in all_names)
        attrs.append("\\HasChildren" if children else "\\HasNoChildren")
        if folder is not None and folder.special_use:
            attrs.append(folder.special_use)  # RFC 6154 §2
        if subscribed and (subscribed_only or "SUBSCRIBED" in returns):
            attrs.append("\\Subscribed")
        s.untagged(b"%s (%s) \"/\" %s" % (b"LSUB" if lsub else b"LIST",
                                           " ".join(attrs).encode(), encode_name(name)))
        if status_items and folder is not None:
            s.untagged(await _status_line(s, name, folder, status_items))
    return f"{cmd.name} completed"


async def _status_line(s: Session, name: str, folder: backend.Folder,
                       items: list[Token]) -> bytes:
    messages, unseen, recent = await s.db(backend.folder_counts, folder.id)
    values: list[str] = []
    for token in items:
        item = atom(token).upper()
        value = {"MESSAGES": messages, "RECENT": recent, "UIDNEXT": folder.uidnext,
                 "UIDVALIDITY": folder.uidvalidity, "UNSEEN": unseen,
                 "HIGHESTMODSEQ": folder.highestmodseq}.get(item)
        if item == "SIZE":
            value = await s.db(backend.folder_size, folder.id)
        if value is None:
            raise ImapParseError(f"Unknown STATUS item {item}")
        values.append(f"{item} {value}")
    return b"STATUS %s (%s)" % (encode_name(name), " ".join(values).encode())


async def status(s: Session, cmd: Command) -> Result:
    name_token, items = _args(cmd, 2)
    if not isinstance(items, list) or not items:
        raise ImapParseError("STATUS needs a list of items")
    name = mailbox_name(name_token)
    target = await resolve(s, name, access="STATUS")
    folder = await _folder(s, target)
    s.untagged(await _status_line(s, name, folder, items))
    return "STATUS completed"


async def namespace(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)  # RFC 2342: personal with no prefix, no other users, shared "Shared/"
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
        stamp = calendar.timegm((int(year), _MONTHS[found.group(2).upper()], int(day),
                                 int(hh), int(mm), int(ss)))
        time.gmtime(stamp)
    except (ValueError, OverflowError):
        raise ImapParseError("Invalid date-time") from None
    offset = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == "+" else -1)
    return float(stamp - offset)


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
    folder = await s.db(backend.folder_by_name, target.owner.id, target.folder)
    if folder is None:  # RFC 3501 §6.3.11
        raise No("Mailbox does not exist", "TRYCREATE")
    copy = await s.thread(store.seal_local, s.ctx.app.keyring, target.owner.id,
                          target.owner.address, message)
    record = s.record("imap.append", mailbox=target.owner.address,
                      detail={"folder": target.folder, "store_id": copy.message_id,
                              "size": copy.size})
    validity, uid = await s.write(lambda conn: backend.append_message(
        conn, folder.id, target.owner.id, copy.message_id, copy.sealed, copy.size, flags,
        when, [record]))
    s.ctx.notifier.changed(target.owner.id)
    return ("APPEND completed", f"APPENDUID {validity} {uid}")  # RFC 4315


async def idle(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    await s.idle(cmd.tag)
    raise Responded


# ------------------------------------------------------------------------------ selected

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
        for low, high in sset.resolved(len(rows)):
            out += [(i, rows[i - 1]) for i in range(low, high + 1)]
    return out


def _meta(seq: int, row: backend.Row) -> MessageMeta:
    return MessageMeta(seq=seq, uid=row.uid, flags=row.flags, internal_date=row.internal_date,
                       size=row.size, modseq=row.modseq)


def _tampered(s: Session, sel: Selected, uids: list[int]) -> list[AuditRecord]:
    return [s.record("store.tampered", Outcome.MAJOR_FAILURE, mailbox=sel.owner.address,
                     detail={"folder": sel.folder.name, "uid": uid}) for uid in uids]


async def _set_seen(s: Session, rows: list[tuple[int, backend.Row]]) -> set[int]:
    """RFC 3501 §6.4.5: BODY[...] (not PEEK) sets \\Seen; returns the UIDs changed."""
    sel = _sel(s)
    changes = {r.uid: (*r.flags, "\\Seen") for _, r in rows if "\\Seen" not in r.flags}
    if not changes or sel.readonly:
        return set()
    _, written, _ = await s.write(lambda conn: backend.set_flags(conn, sel.folder.id, changes,
                                                                []))
    for _, row in rows:
        if row.uid in written:
            row.flags = changes[row.uid]
            row.modseq = written[row.uid]
    s.ctx.notifier.changed(sel.owner.id)
    return set(written)


def _inject(rendered: bytes, extra: bytes) -> bytes:
    """Add items to a rendered ``(...)`` FETCH list."""
    return rendered[:-1] + b" " + extra + b")"


async def fetch(s: Session, cmd: Command) -> Result:
    from proxy.imap.fetch import UnknownCte, parse_fetch_items, render_fetch, sets_seen

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
        s.condstore = True
    rows = _rows_for(s, cmd.args[0], by_uid)
    if changed_since is not None:
        rows = [(q, r) for q, r in rows if r.modseq > changed_since]
    # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ in each answer
    add_modseq = changed_since is not None and not any(i.name == "MODSEQ" for i in items)
    if sets_seen(items):
        await _set_seen(s, rows)
    content_names = {i.name for i in items if i.needs_content}
    envelope_only = content_names == {"ENVELOPE"}  # answerable from the envelope cache
    audited = any(i.returns_content or i.reveals_headers for i in items)
    broken: list[int] = []
    unknown_cte: list[int] = []
    served: list[list[Any]] = []
    cache = ENVELOPES
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

        def render(chunk: list[tuple[int, backend.Row]] = chunk,
                   opened: dict[str, backend.Opened] = opened,
                   cached: dict[str, bytes] = cached) -> bytes:
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
                    rendered = render_fetch(items, _meta(seq, row), raw, add_uid=by_uid,
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

        s.send(await s.thread(render) if content_names else render())
        await s.maybe_flush()
    records = []
    if audited and served:
        records.append(s.record("imap.fetch", mailbox=sel.owner.address,
                                detail={"folder": sel.folder.name, "messages": served,
                                        "delegated": sel.delegated}))
    records += _tampered(s, sel, broken)
    if records:
        await s.audit(*records)
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
        s.condstore = True
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
    rows = _rows_for(s, args[0], by_uid)
    sign, silent = found.group(1), bool(found.group(2))
    changes: dict[int, tuple[str, ...]] = {}
    for _, row in rows:
        if row.uid in sel.gone:
            continue
        if sign == "+":
            new = row.flags + tuple(f for f in flags if f not in row.flags)
        elif sign == "-":
            new = tuple(f for f in row.flags if f not in flags)
        else:
            new = flags
        if new != row.flags or unchanged_since is not None:
            changes[row.uid] = new
    deleted = [u for u, f in changes.items()
               if "\\Deleted" in f and "\\Deleted" not in _row_flags(rows, u)]
    audit = []
    if deleted:
        audit.append(s.record("imap.store.deleted", mailbox=sel.owner.address,
                              detail={"folder": sel.folder.name, "uids": deleted,
                                      "delegated": sel.delegated}))
    failed: list[int] = []
    if changes:
        _, written, failed = await s.write(lambda conn: backend.set_flags(
            conn, sel.folder.id, changes, audit, unchanged_since))
        for _, row in rows:
            if row.uid in written:
                row.flags = changes[row.uid]
                row.modseq = written[row.uid]
        s.ctx.notifier.changed(sel.owner.id)
    s.announce_keywords(flags)
    if not silent or unchanged_since is not None:
        for seq, row in rows:
            if row.uid in failed or row.uid in sel.gone:
                continue
            if silent and row.uid not in changes:
                continue
            s.untagged(s.flags_fetch(seq, row, by_uid))
    if failed:
        from proxy.imap.seqset import format_sequence_set
        code = "MODIFIED " + format_sequence_set(
            failed if by_uid else [q for q, r in rows if r.uid in failed])
        return (f"Conditional {cmd.name} failed", code)
    return f"{cmd.name} completed"


def _row_flags(rows: list[tuple[int, backend.Row]], uid: int) -> tuple[str, ...]:
    for _, row in rows:
        if row.uid == uid:
            return row.flags
    return ()


async def search(s: Session, cmd: Command) -> Result:
    from proxy.imap.mime import parse_message
    from proxy.imap.search import BadCharset, parse_search

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
    charset = None
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
        charset = astring(args[1]).decode("ascii", "replace")
        args = args[2:]
    try:
        program = parse_search(args, charset=charset)
    except BadCharset:
        raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)") from None
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
                    if program.matches(_meta(seq, row), largest_seq=largest_seq,
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
    # RFC 7162 §3.1.5: with a MODSEQ key, the highest mod-sequence of the matches
    modseq = max((r.modseq for _, r in hits), default=0) if program.has_modseq else 0
    if returns is None:
        line = ("SEARCH " + " ".join(map(str, numbers))).strip()
        if modseq:
            line += f" (MODSEQ {modseq})"
        s.untagged(line.encode())
    else:
        from proxy.imap.seqset import format_sequence_set
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


async def _expunge(s: Session, only: list[int] | None, *, quiet: bool = False) -> None:
    sel = _sel(s)
    if sel.readonly:
        if quiet:
            return
        raise No("Mailbox is read-only", "READ-ONLY")

    def audit_for(gone: list[tuple[int, str]]) -> list[AuditRecord]:
        if not gone:
            return []
        return [s.record("imap.expunge", mailbox=sel.owner.address,
                         detail={"folder": sel.folder.name, "messages": [list(g) for g in gone],
                                 "delegated": sel.delegated})]
    gone = await s.write(lambda conn: backend.expunge(conn, sel.folder.id, only, audit_for))
    if gone:
        s.ctx.notifier.changed(sel.owner.id)
    if not quiet:
        s.report_expunged({u for u, _ in gone} | sel.gone)
        sel.gone = set()


async def expunge_command(s: Session, cmd: Command) -> Result:
    if cmd.name == "UID EXPUNGE":  # RFC 4315 §2.1
        rows = _rows_for(s, _args(cmd, 1)[0], True)
        await _expunge(s, [r.uid for _, r in rows])
    else:
        _args(cmd, 0)
        await _expunge(s, None)
    return f"{cmd.name} completed"


async def close(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    await _expunge(s, None, quiet=True)  # RFC 3501 §6.4.2: no untagged EXPUNGE
    s.close_selected()
    return "CLOSE completed"


async def unselect(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)  # RFC 3691
    s.close_selected()
    return "UNSELECT completed"


async def check(s: Session, cmd: Command) -> Result:
    _args(cmd, 0)
    return "CHECK completed"


async def copy_move(s: Session, cmd: Command) -> Result:
    by_uid = cmd.name.startswith("UID ")
    moving = cmd.name.endswith("MOVE")
    set_token, name_token = _args(cmd, 2)
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
    record = s.record(event, mailbox=sel.owner.address,
                      detail={"folder": sel.folder.name, "to_mailbox": target.owner.address,
                              "to_folder": target.folder,
                              "messages": [[r.uid, r.id] for _, r in rows]})
    if moving and target.owner.id == sel.owner.id:
        validity, new_uids = await s.write(lambda conn: backend.move_messages(
            conn, sel.folder.id, dest.id, [(r.uid, r.id) for _, r in rows], [record]))
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
                flags = r.flags if not moving else r.flags
                out.append(backend.CopySource(r.uid, c.message_id, c.sealed, c.size, flags,
                                              r.internal_date))
            return out
        sources = await s.thread(reseal)

        def work(conn: Connection) -> tuple[int, list[int]]:
            result = backend.copy_messages(conn, dest.id, target.owner.id, sources, [record])
            if moving:
                backend.remove_messages(conn, sel.folder.id, [r.id for _, r in rows])
            return result
        validity, new_uids = await s.write(work)
    s.ctx.notifier.changed(target.owner.id)
    if target.owner.id != sel.owner.id:
        s.ctx.notifier.changed(sel.owner.id)
    from proxy.imap.seqset import format_sequence_set
    code = (f"COPYUID {validity} {format_sequence_set(src_uids)} "
            f"{format_sequence_set(new_uids)}")
    if not moving:
        return (f"{cmd.name} completed", code)
    s.untagged(f"OK [{code}] Moved".encode())  # RFC 6851 §4.3
    s.report_expunged(set(src_uids) | (sel.gone if by_uid else set()))
    if by_uid:
        sel.gone = set()
    return f"{cmd.name} completed"


# ------------------------------------------------------------------------------ table

ANY = (NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
AUTH = (AUTHENTICATED, SELECTED)
SEL = (SELECTED,)

COMMANDS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "CAPABILITY": (capability, ANY),
    "NOOP": (noop, ANY),
    "LOGOUT": (logout, ANY),
    "ID": (id_command, ANY),
    "STARTTLS": (starttls, (NOT_AUTHENTICATED,)),
    "LOGIN": (login, (NOT_AUTHENTICATED,)),
    "AUTHENTICATE": (authenticate, (NOT_AUTHENTICATED,)),
    "ENABLE": (enable, AUTH),
    "SELECT": (select_command, AUTH),
    "EXAMINE": (select_command, AUTH),
    "CREATE": (create, AUTH),
    "DELETE": (delete_command, AUTH),
    "RENAME": (rename, AUTH),
    "SUBSCRIBE": (subscribe, AUTH),
    "UNSUBSCRIBE": (subscribe, AUTH),
    "LIST": (list_command, AUTH),
    "LSUB": (list_command, AUTH),
    "STATUS": (status, AUTH),
    "NAMESPACE": (namespace, AUTH),
    "APPEND": (append_command, AUTH),
    "IDLE": (idle, AUTH),
    "CHECK": (check, SEL),
    "CLOSE": (close, SEL),
    "UNSELECT": (unselect, SEL),
    "EXPUNGE": (expunge_command, SEL),
    "UID EXPUNGE": (expunge_command, SEL),
    "SEARCH": (search, SEL),
    "UID SEARCH": (search, SEL),
    "FETCH": (fetch, SEL),
    "UID FETCH": (fetch, SEL),
    "STORE": (store_command, SEL),
    "UID STORE": (store_command, SEL),
    "COPY": (copy_move, SEL),
    "UID COPY": (copy_move, SEL),
    "MOVE": (copy_move, SEL),
    "UID MOVE": (copy_move, SEL),
}
