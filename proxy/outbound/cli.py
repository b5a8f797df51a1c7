"""``mss queue``: the outbound queue for operators. Never prints a message body: only the
envelope, sizes, attempts and errors. Every change is audited in its own transaction.

``hold DOMAIN`` / ``release DOMAIN`` (issue 16): the workers of every node claim no row of
a held domain until its release; held rows do not expire (proxy/outbound/claims.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Annotated, Any

import typer

from audit.events import Event
from audit.journal import AuditRecord, append
from mss.cli_output import JSON_OPTION, Column, emit, print_json, when
from mss.cli_support import actor, fail, node
from mss.mailstore import deliveries, domains
from proxy.outbound import claims
from proxy.outbound.notify import dsn_copy
from proxy.outbound.worker import write_final
from trustspace.registry import load_active

queue_app = typer.Typer(no_args_is_help=True, help="Outbound queue (delivery to operators).")
STATUSES = ("queued", "held", "delivered", "bounced", "expired")  # held: queued, domain held


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _row(conn: Any, queue_id: str) -> dict[str, Any]:
    row = claims.get(conn, queue_id)
    if row is None and len(claims.matching(conn, queue_id, 2)) > 1:
        fail(f"{queue_id!r} names several queue rows (one message, several recipients): "
             "give a row's full id, as 'mss queue show' prints it")
    if row is None:
        fail(f"no queue row {queue_id!r} (give the id shown by 'mss queue list', "
             "at least 8 characters)")
    return row


@queue_app.command("list")
def queue_list(ctx: typer.Context,
               status: Annotated[str | None, typer.Option(
                   "--status", help="queued, delivered, bounced or expired.")] = None,
               limit: Annotated[int, typer.Option("--limit", min=1,
                                                  help="Rows shown at most.")] = 200,
               json_out: JSON_OPTION = False) -> None:
    """Queue rows, oldest first: id, status ("held" for a queued row of a held domain),
    sender, recipient, size, attempts, next attempt, last error (--json: every field of
    each row, "held" among them, the full id, epoch seconds)."""
    if status is not None and status not in STATUSES:
        fail(f"unknown status {status!r}: use {', '.join(STATUSES)}")
    with node(ctx) as app, app.reader.connect() as conn:
        rows = claims.listing(conn, status, limit)
    if json_out:
        emit(rows, QUEUE_COLUMNS, json_out=True)
        return
    for r in rows:  # the table's cells (a row's id: its first 16 characters name it)
        r["short_id"] = r["id"][:16]
        r["next"] = r["next_attempt_at"] if r["status"] == "queued" else None
        if r["held"] and r["status"] == "queued":
            r["status"], r["next"] = "held", None
    emit(rows, QUEUE_COLUMNS, json_out=False)
    print(f"{len(rows)} row(s)")


QUEUE_COLUMNS = (Column("short_id", header="id", min_width=16),
                 Column("status"),
                 Column("mail_from", header="from", format=lambda v: str(v or "<>")),
                 Column("rcpt", header="to"), Column("size", justify="right"),
                 Column("attempts", justify="right"),
                 Column("next", header="next attempt", format=when, min_width=10),
                 Column("last_error", header="last error", overflow="ellipsis", min_width=12))


@queue_app.command("show")
def queue_show(ctx: typer.Context, queue_id: str, json_out: JSON_OPTION = False) -> None:
    """A row: envelope, size, attempts, dates, last error and remote reply (no body). The
    id of an SMTP reply ("queued as ID") shows every row of that message (--json: a list
    of the rows, each with its next hop)."""
    with node(ctx) as app, app.reader.connect() as conn:
        rows = claims.matching(conn, queue_id) or [_row(conn, queue_id)]
        hops = {r["domain"]: domains.relay_of(conn, r["domain"]) for r in rows}
        held = {r["domain"]: claims.holds(conn, r["domain"]) for r in rows}
    if json_out:
        print_json([{**r, "next_hop": hops[r["domain"]], "held": bool(held[r["domain"]])}
                    for r in rows])
        return
    for n, r in enumerate(rows):
        if n:
            print()
        hold = held[r["domain"]]
        _show_row(r, hops[r["domain"]], hold[0] if hold else None)


def _show_row(r: dict[str, Any], relay: str | None, held: claims.Hold | None) -> None:
    leased = r["lease_until"] is not None and r["lease_until"] > time.time()
    status = r["status"] + (" (being delivered)" if leased else "")
    if held is not None and r["status"] == "queued":
        status += f" (held since {_when(held.held_at)}: mss queue release {held.domain})"
    for label, value in (
            ("id", r["id"]), ("status", status),
            ("from", r["mail_from"] or "<>"), ("to", r["rcpt"]), ("domain", r["domain"]),
            ("next hop", relay or "MX of the domain"), ("message-id", r["message_id"] or "-"),
            ("size", f"{r['size']} bytes"), ("attempts", str(r["attempts"])),
            ("queued at", _when(r["created_at"])),
            ("next attempt", _when(r["next_attempt_at"]) if r["status"] == "queued" else "-"),
            ("updated at", _when(r["updated_at"])), ("last error", r["last_error"] or "-"),
            ("remote reply", r["remote_reply"] or "-")):
        print(f"{label + ':':14}{value}")


@queue_app.command("retry")
def queue_retry(ctx: typer.Context, queue_id: Annotated[str | None, typer.Argument()] = None,
                all_rows: Annotated[bool, typer.Option(
                    "--all", help="Every row not delivered.")] = False) -> None:
    """Try a row again now (a bounced or expired one is queued again, attempts reset)."""
    if (queue_id is None) == (not all_rows):
        fail("give one queue id or --all")
    with node(ctx) as app, app.engine.begin() as conn:
        full_id = _row(conn, queue_id)["id"] if queue_id else None
        changed = claims.retry(conn, full_id, time.time())
        append(conn, [AuditRecord(Event.ADMIN_QUEUE_RETRY, actor=actor(), rcpt=c.rcpt,
                                  mail_from=c.mail_from, message_id=c.message_id,
                                  detail={"queue_id": c.id}) for c in changed])
    with node(ctx) as app, app.reader.connect() as conn:
        held = {h.domain for h in claims.holds(conn)}
    waiting = sum(1 for c in changed if c.domain in held)
    print(f"{len(changed)} row(s) due now"
          + (f", {waiting} of them held (mss queue release DOMAIN)" if waiting else ""))


@queue_app.command("bounce")
def queue_bounce(ctx: typer.Context, queue_id: str) -> None:
    """Give up on a queued row: bounced, DSN to its sender."""
    with node(ctx) as app:
        with app.reader.connect() as conn:
            row = _row(conn, queue_id)
            if row["status"] != "queued":
                fail(f"queue row {row['id'][:16]} is {row['status']}, not queued")
            if row["lease_until"] is not None and row["lease_until"] > time.time():
                fail(f"queue row {row['id'][:16]} is being delivered; try again in a moment")
            c = claims.as_claim(row)
            data = deliveries.read_queued(conn, app.keyring, c.id)
            reason = f"bounced by the operator ({actor()})"
            copy, why = dsn_copy(conn, app.keyring, app.config.smtp.hostname, c, data,
                                 "5.0.0", reason, None, None, load_active(conn))
        with app.engine.begin() as conn:
            if not write_final(conn, c, "bounced", f"{reason} ({why})", None, copy,
                               time.time(), False, actor()):
                fail(f"queue row {c.id[:16]} is no longer queued")
    print(f"queue row {c.id[:16]} bounced ({why})")


@queue_app.command("purge")
def queue_purge(ctx: typer.Context,
                delivered: Annotated[bool, typer.Option("--delivered")] = False,
                bounced: Annotated[bool, typer.Option(
                    "--bounced", help="Bounced and expired rows.")] = False) -> None:
    """Delete finished rows (both kinds when no option is given); never queued ones."""
    statuses: tuple[str, ...] = ()
    if delivered or not bounced:
        statuses += ("delivered",)
    if bounced or not delivered:
        statuses += ("bounced", "expired")
    with node(ctx) as app, app.engine.begin() as conn:
        count = claims.purge(conn, statuses)
        append(conn, [AuditRecord(Event.ADMIN_QUEUE_PURGE, actor=actor(),
                                  detail={"statuses": list(statuses), "rows": count})])
    print(f"{count} row(s) purged")


# --------------------------------------------------------------------------- holds

def _domain(name: str) -> str:
    from mss.addresses import normalize_domain

    try:
        return normalize_domain(name)
    except ValueError as exc:
        fail(f"invalid domain {name!r}: {exc}")


@queue_app.command("hold")
def queue_hold(ctx: typer.Context, domain: str,
               reason: Annotated[str | None, typer.Option(
                   "--reason", help="Why (kept in the audit record and 'queue holds').")]
               = None) -> None:
    """Hold the delivery of a destination domain: no worker of any node claims its queued
    rows (nor those queued later) until 'mss queue release DOMAIN'; held rows do not
    expire. A row being delivered finishes its attempt."""
    name = _domain(domain)
    if reason is not None and (len(reason) > 500 or not reason.isprintable()):
        fail("--reason: at most 500 printable characters")
    who = actor()
    with node(ctx) as app, app.engine.begin() as conn:
        already = claims.holds(conn, name)
        if already:
            fail(f"domain {name} is already held (since {_when(already[0].held_at)})")
        rows = claims.hold(conn, name, who, reason, time.time())
        append(conn, [AuditRecord(Event.ADMIN_QUEUE_HOLD, actor=who, reason=reason,
                                  detail={"domain": name, "rows": rows})])
    print(f"domain {name} held: {rows} queued row(s) wait for 'mss queue release {name}'")


@queue_app.command("release")
def queue_release(ctx: typer.Context, domain: str) -> None:
    """Release a held domain: its queued rows are due now (the time held does not count
    towards delivery.max_age)."""
    name = _domain(domain)
    now = time.time()
    with node(ctx) as app, app.engine.begin() as conn:
        held = claims.holds(conn, name)
        if not held:
            fail(f"domain {name} is not held (see 'mss queue holds')")
        rows = claims.release_hold(conn, held[0], now)
        append(conn, [AuditRecord(Event.ADMIN_QUEUE_RELEASE, actor=actor(),
                                  detail={"domain": name, "rows": rows,
                                          "held_seconds": round(now - held[0].held_at, 3)})])
    print(f"domain {name} released: {rows} row(s) due now")


@queue_app.command("holds")
def queue_holds(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
    """Held domains: since when, by whom, why, queued rows waiting."""
    with node(ctx) as app, app.reader.connect() as conn:
        rows = [dataclasses.asdict(h) for h in claims.holds(conn)]
    emit(rows, (Column("domain"), Column("held_at", header="since", format=when),
                Column("held_by", header="by"), Column("rows", justify="right"),
                Column("reason", overflow="ellipsis")), json_out=json_out,
         caption=f"{len(rows)} held domain(s)")
