"""``mss sessions``: the logged-in client sessions of every node and worker (issue 16).

``list`` reads the registry (mss.mailstore.sessions): the sessions of the serving
processes whose heartbeat is recent (a process that died is not shown). ``end`` marks one
session, or every session of a mailbox, ended: each serving process sees the mark at its
next change round (at once on SQLite, where every commit is seen within
database.change_poll; on PostgreSQL the command's NOTIFY asks every node for a round)
and the IMAP session says ``* BYE``; at the latest at its next state check
(imap.enabled_check). Every end is audited (admin.session.end).
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from audit.events import Event
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node

sessions_app = typer.Typer(no_args_is_help=True,
                           help="Logged-in client sessions (every node and worker).")


def _stale_before(heartbeat: float) -> float:
    from mss.mailstore.sessions import STALE_HEARTBEATS

    return time.time() - STALE_HEARTBEATS * heartbeat


COLUMNS = (Column("id", min_width=16),
           Column("where", header="node"),
           Column("protocol", header="proto"),
           Column("remote_addr", header="client"),
           Column("mailbox"),
           Column("started_at", header="since", format=when),
           Column("auth_method", header="auth"))


@sessions_app.command("list")
def sessions_list(ctx: typer.Context,
                  mailbox: Annotated[str | None, typer.Option(
                      "--mailbox", help="Only this mailbox's sessions.")] = None,
                  json_out: JSON_OPTION = False) -> None:
    """Logged-in sessions, oldest first: id (as in the audit records), node/worker,
    protocol, client address, mailbox, since, authentication method."""
    from mss.mailstore import mailboxes, sessions

    with node(ctx) as app, app.reader.connect() as conn:
        mailbox_id = mailboxes.require_mailbox(conn, mailbox).id if mailbox else None
        rows = sessions.live_sessions(conn, _stale_before(app.config.sessions.heartbeat),
                                      mailbox_id)
    out = [{"id": r.id, "node": r.node, "worker": r.worker, "pid": r.pid,
            "where": f"{r.node}/{r.worker}",
            "protocol": r.protocol, "listener": r.listener, "remote_addr": r.remote_addr,
            "mailbox": r.mailbox, "started_at": r.started_at, "auth_method": r.auth_method,
            "ended_at": r.ended_at} for r in rows]
    emit(out, COLUMNS, json_out=json_out, caption=f"{len(out)} session(s)")


@sessions_app.command("end")
def sessions_end(ctx: typer.Context,
                 session_id: Annotated[str | None, typer.Argument(
                     metavar="ID", help="A session id, as 'mss sessions list' shows it.",
                     show_default=False)] = None,
                 mailbox: Annotated[str | None, typer.Option(
                     "--mailbox", help="Every session of this mailbox (on every node, "
                     "listed or not).")] = None) -> None:
    """End a session (IMAP: * BYE within imap.enabled_check), or every session of a
    mailbox."""
    from audit.journal import AuditRecord, append
    from mss.mailstore import mailboxes, sessions
    from mss.mailstore.notify import request_rounds

    if (session_id is None) == (mailbox is None):
        fail("give one session ID or --mailbox ADDRESS")
    now = time.time()
    with node(ctx) as app, app.engine.begin() as conn:
        stale = _stale_before(app.config.sessions.heartbeat)
        if session_id is not None:
            found = sessions.live_sessions(conn, stale, session_id=session_id)
            if not found:
                fail(f"no session {session_id} (see 'mss sessions list')")
            row = found[0]
            if not sessions.end_session(conn, row.id, now):
                fail(f"session {row.id} is already ending")
            append(conn, [AuditRecord(Event.ADMIN_SESSION_END, actor=actor(),
                                      mailbox=row.mailbox, remote_addr=row.remote_addr,
                                      detail={"session": row.id, "node": row.node,
                                              "worker": row.worker, "protocol": row.protocol})])
            message = f"session {row.id} of {row.mailbox} ending"
        else:
            assert mailbox is not None
            target = mailboxes.require_mailbox(conn, mailbox)
            ended = sessions.end_mailbox_sessions(conn, target.id, now)  # the listed ones
            mailboxes.end_sessions(conn, target.id, now)  # and any begun before now
            append(conn, [AuditRecord(Event.ADMIN_SESSION_END, actor=actor(),
                                      mailbox=target.address,
                                      detail={"sessions": len(ended), "ids": ended[:100]})])
            message = f"{len(ended)} session(s) of {target.address} ending"
        request_rounds(conn)
    print(message)
