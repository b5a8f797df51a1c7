"""Message retention (issue 16, docs/retention.md): the rules of ``[[retention.rules]]``
applied to every mailbox not under legal hold.

A round (:func:`run_round`) takes the time it applies the rules at as an argument (the
serving job passes ``time.time()``, tests their own clock). For each mailbox, each of its
folders gets the first rule matching it (file order): by domain (or every domain) and by
folder, named by special-use attribute (RFC 6154, the ``special_use`` column) or by name.
Folder names are sealed at rest (:mod:`mss.mailstore.names`): a rule's name is turned into
the mailbox's lookup value (an HMAC under the mailbox key) and compared with the stored
one, so no name is decrypted and none is logged or audited.

A message's age counts from ``messages.saved_at``, when it entered its folder (delivery,
APPEND, COPY, MOVE: a message moved to Trash today is thirty days from expiry in a
30-day Trash whatever its internal date), or from its internal date for rows stored
before migration 0010. Expired messages go as an EXPUNGE would: in the writer's
transaction, after the writer's lock, the folder's state bumped
(:func:`mss.mailstore.state.bump`: HIGHESTMODSEQ moves, snapshot caches miss), the rows
deleted and one ``retention.expunge`` record appended (mailbox, folder id, rule, counts:
never a name nor a store id list), ``batch`` messages per transaction; after each commit
the mailbox's sessions are woken (``changed``) and report EXPUNGE / VANISHED. The hold is
read again under the lock in every transaction: a hold set during a round stops it for
that mailbox.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, or_, select

from audit.events import Event
from audit.journal import AuditRecord, append
from mss import crypto, db
from mss.config import RetentionConfig, RetentionRule
from mss.mailstore import names
from mss.mailstore.holds import is_held
from mss.mailstore.state import LIVE, bump, lock

DAY = 86400.0

_MAILBOXES = (select(db.mailboxes.c.id, db.mailboxes.c.address, db.mailboxes.c.held_at,
                     db.domains.c.name.label("domain"))
              .join(db.domains, db.domains.c.id == db.mailboxes.c.domain_id)
              .order_by(db.mailboxes.c.id))

_FOLDERS = select(db.folders.c.id, db.folders.c.name, db.folders.c.special_use).where(
    and_(db.folders.c.mailbox_id == bindparam("mailbox"), LIVE)).order_by(db.folders.c.id)

# on ix_messages_folder_saved (folder_id, saved_at, internal_date): no ciphertext page read
_EXPIRED = or_(db.messages.c.saved_at < bindparam("cutoff"),
               and_(db.messages.c.saved_at.is_(None),
                    db.messages.c.internal_date < bindparam("cutoff")))
_EXPIRED_IDS = (select(db.messages.c.id, db.messages.c.size)
                .where(and_(db.messages.c.folder_id == bindparam("folder"), _EXPIRED))
                .limit(bindparam("batch")))  # no ORDER BY: the index alone finds them
_EXPIRED_COUNT = (select(func.count(), func.coalesce(func.sum(db.messages.c.size), 0))
                  .where(and_(db.messages.c.folder_id == bindparam("folder"), _EXPIRED)))


@dataclass(frozen=True)
class Expunged:
    """What a round removed (or, dry, would remove) from one folder."""

    mailbox: str
    folder_id: int
    special_use: str | None
    rule: int  # index in retention.rules
    messages: int
    bytes: int


@dataclass
class Report:
    now: float
    folders: list[Expunged] = field(default_factory=list)
    mailboxes: int = 0  # looked at (not held, a rule of their domain)
    held: int = 0  # skipped: under legal hold
    dry_run: bool = False

    @property
    def messages(self) -> int:
        return sum(f.messages for f in self.folders)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.folders)


def is_special_use(folder: str) -> bool:
    return folder.startswith("\\")


def rule_for(rules: Sequence[RetentionRule], domain: str, special_use: str | None,
             lookup_of: Callable[[str], str], stored_name: str) -> int | None:
    """The index of the first rule matching a folder of a mailbox of *domain*: its
    special-use attribute, or its stored name (``folders.name``) equal to the lookup value
    of the rule's name (*lookup_of*)."""
    for index, rule in enumerate(rules):
        if rule.domain not in ("", domain):
            continue
        if rule.folder == "" or (special_use is not None and rule.folder == special_use) or \
                (not is_special_use(rule.folder) and lookup_of(rule.folder) == stored_name):
            return index
    return None


def _lookup(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
            cache: dict[str, str], name: str) -> str:
    """A rule's folder name as the mailbox stores it: one HMAC per named rule and mailbox,
    nothing decrypted."""
    if name not in cache:
        cache[name] = names.lookup(conn, keyring, mailbox_id, name)
    return cache[name]


@dataclass(frozen=True)
class _Target:
    mailbox_id: int
    address: str
    folder_id: int
    special_use: str | None
    rule: int
    cutoff: float


def _targets(conn: Connection, keyring: crypto.Keyring, rules: Sequence[RetentionRule],
             now: float, report: Report) -> Iterator[_Target]:
    """The folders a rule expires messages of, mailbox by mailbox (held ones counted)."""
    domains = {r.domain for r in rules}
    for mailbox in conn.execute(_MAILBOXES).all():
        if "" not in domains and mailbox.domain not in domains:
            continue
        if mailbox.held_at is not None:
            report.held += 1
            continue
        report.mailboxes += 1
        lookup_of = functools.partial(_lookup, conn, keyring, mailbox.id, {})
        for folder in conn.execute(_FOLDERS, {"mailbox": mailbox.id}).all():
            index = rule_for(rules, mailbox.domain, folder.special_use, lookup_of,
                             folder.name)
            if index is None or rules[index].days == 0:  # days = 0: kept
                continue
            yield _Target(mailbox.id, mailbox.address, folder.id, folder.special_use, index,
                          now - rules[index].days * DAY)


def _expunge_batch(conn: Connection, target: _Target, rule: RetentionRule, batch: int,
                   actor: str) -> tuple[int, int] | None:
    """One transaction's worth: (messages, bytes) removed, or None when the mailbox went
    under legal hold meanwhile (read again after the writer's lock)."""
    lock(conn)
    if is_held(conn, target.mailbox_id):
        return None
    found = conn.execute(_EXPIRED_IDS, {"folder": target.folder_id, "cutoff": target.cutoff,
                                        "batch": batch}).all()
    if not found:
        return 0, 0
    bump(conn, target.folder_id)  # HIGHESTMODSEQ moves: sessions and caches see the change
    conn.execute(delete(db.messages).where(db.messages.c.id.in_([r.id for r in found])))
    size = sum(r.size for r in found)
    append(conn, [AuditRecord(Event.RETENTION_EXPUNGE, actor=actor, mailbox=target.address,
                              detail={"folder_id": target.folder_id,
                                      "special_use": target.special_use,
                                      "rule": target.rule, "days": rule.days,
                                      "cutoff": target.cutoff, "messages": len(found),
                                      "bytes": size})])
    return len(found), size


def run_round(engine: Engine, reader: Engine, keyring: crypto.Keyring, cfg: RetentionConfig,
              now: float | None = None, *, dry_run: bool = False, actor: str = "mss",
              changed: Callable[[int], None] | None = None) -> Report:
    """Apply the rules once, as of *now* (default: the clock). *dry_run*: count what would
    go, change nothing. *changed* is called with a mailbox id after each commit that
    removed some of its messages (the process's notifier: its sessions report them)."""
    report = Report(time.time() if now is None else now, dry_run=dry_run)
    rules = cfg.rules
    if not rules:
        return report
    with reader.connect() as conn:
        targets = list(_targets(conn, keyring, rules, report.now, report))
        if dry_run:
            for t in targets:
                count, size = conn.execute(_EXPIRED_COUNT, {"folder": t.folder_id,
                                                            "cutoff": t.cutoff}).one()
                if count:
                    report.folders.append(Expunged(t.address, t.folder_id, t.special_use,
                                                   t.rule, int(count), int(size)))
            return report
    for t in targets:
        removed = size = 0
        while True:
            with engine.begin() as conn:
                done = _expunge_batch(conn, t, rules[t.rule], cfg.batch, actor)
            if done is None:  # put under hold during the round: left as it is
                break
            removed, size = removed + done[0], size + done[1]
            if done[0] and changed is not None:
                changed(t.mailbox_id)
            if done[0] < cfg.batch:
                break
        if removed:
            report.folders.append(Expunged(t.address, t.folder_id, t.special_use, t.rule,
                                           removed, size))
    return report
