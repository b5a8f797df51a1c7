"""``mss peer block|unblock|list``: local blocks of peer operators on top of the national
whitelist (trustspace/blocks.py; docs/trust-space.md "Local blocks")."""

from __future__ import annotations

import datetime as dt
import re
import time
from types import MappingProxyType
from typing import Annotated

import typer

from audit.events import Event
from audit.journal import AuditRecord, append
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node
from trustspace import blocks

peer_app = typer.Typer(no_args_is_help=True,
                       help="Local blocks of peer operators, on top of the whitelist.")

_DURATION = re.compile(r"\+?(\d+)\s*([smhdw])")
_UNIT = MappingProxyType({"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800})

DomainArg = Annotated[str | None, typer.Argument(
    metavar="[DOMAIN]", help="The peer domain.", show_default=False)]
CertDnOpt = Annotated[str | None, typer.Option(
    "--cert-dn", help="An operator certificate's subject DN (RFC 4514), instead of a "
    "domain.")]


def parse_until(text: str, now: float) -> float:
    """``--until``: a duration from now (``30m``, ``2h``, ``7d``, ``+1w``) or an ISO 8601
    date or time (UTC unless it says otherwise); epoch seconds."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found:
        return now + int(found.group(1)) * _UNIT[found.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"--until: not a duration (30m, 2h, 7d) nor an ISO 8601 date or time: {text!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _target(domain: str | None, cert_dn: str | None) -> tuple[str | None, str | None]:
    if (domain is None) == (cert_dn is None):
        fail("name a DOMAIN or a --cert-dn (one of them)")
    try:
        if domain is not None:
            return blocks.parse_domain(domain), None
        assert cert_dn is not None
        return None, blocks.parse_cert_dn(cert_dn)[0]
    except blocks.BlockError as exc:
        fail(str(exc))


def _detail(block: blocks.PeerBlock) -> dict[str, object]:
    detail: dict[str, object] = {"block": block.id}
    if block.domain:
        detail["domain"] = block.domain
    else:
        detail["cert_dn"] = block.cert_dn
    if block.until is not None:
        detail["until"] = round(block.until, 3)
    if block.reason:
        detail["reason"] = block.reason
    return detail


@peer_app.command("block")
def peer_block(
    ctx: typer.Context,
    domain: DomainArg = None,
    cert_dn: CertDnOpt = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="When the block ends by itself: a duration (30m, 2h, 7d) or an ISO "
        "8601 time; the MX then answers 450 4.7.1 (the peer retries) and queued mail waits. "
        "Without it: 550 5.7.1 until 'mss peer unblock'.")] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why (one line, kept with the block and audited).")] = None,
) -> None:
    """Refuse a peer domain or operator certificate DN locally, whatever the national
    whitelist says: on the MX (MAIL FROM), at RCPT on submission and relay, and by the
    delivery worker. Running nodes apply it within whitelist.reload_interval."""
    from mss.mailstore.domains import is_hosted_domain

    name, dn = _target(domain, cert_dn)
    now = time.time()
    end = parse_until(until, now) if until is not None else None
    with node(ctx) as app, app.engine.begin() as conn:
        if name is not None and is_hosted_domain(conn, name):
            fail(f"domain {name} is hosted here: a local block is for peers "
                 "(mss domain suspend is for a hosted domain)")
        try:
            block = blocks.block(conn, actor=actor(), domain=name, cert_dn=dn, until=end,
                                 reason=reason, now=now)
        except blocks.BlockError as exc:
            fail(str(exc))
        append(conn, [AuditRecord(Event.ADMIN_PEER_BLOCK, actor=actor(), reason=block.reason,
                                  detail=_detail(block))])
    print(f"{block.target} blocked (block #{block.id}, "
          + (f"until {when(block.until)})" if block.until is not None else "until unblocked)"))


@peer_app.command("unblock")
def peer_unblock(ctx: typer.Context, domain: DomainArg = None,
                 cert_dn: CertDnOpt = None) -> None:
    """End the local block of a peer domain or certificate DN; the mail the delivery
    worker held for it is tried again at once."""
    from proxy.outbound.claims import release_held

    name, dn = _target(domain, cert_dn)
    now = time.time()
    with node(ctx) as app, app.engine.begin() as conn:
        try:
            block = blocks.unblock(conn, actor=actor(), domain=name, cert_dn=dn, now=now)
        except blocks.BlockError as exc:
            fail(str(exc))
        released = release_held(conn, now, name)
        append(conn, [AuditRecord(Event.ADMIN_PEER_UNBLOCK, actor=actor(),
                                  detail={**_detail(block), "released": released})])
    print(f"{block.target} unblocked (block #{block.id}); {released} queued row(s) due now")


def _ends(block: blocks.PeerBlock) -> str:
    return when(block.until) if block.until is not None else "unblock"


@peer_app.command("list")
def peer_list(
    ctx: typer.Context,
    every: Annotated[bool, typer.Option(
        "--all", help="The history too: ended and expired blocks.")] = False,
    json_out: JSON_OPTION = False,
) -> None:
    """The local blocks in force (--all: every block ever made): id, target, state, until,
    reason (--json: every field, since and by whom too, epoch seconds)."""
    now = time.time()
    with node(ctx) as app, app.reader.connect() as conn:
        found = blocks.list_blocks(conn, include_ended=every, now=now)
    rows = [{"id": b.id, "domain": b.domain, "cert_dn": b.cert_dn,
             "target": b.domain or b.cert_dn, "state": b.state(now),
             "created_at": b.created_at, "until": b.until, "ends": _ends(b),
             "created_by": b.created_by, "reason": b.reason, "ended_at": b.ended_at,
             "ended_by": b.ended_by} for b in found]
    emit(rows, (Column("id", justify="right"), Column("target", header="domain or DN"),
                Column("state"), Column("ends", header="until"),
                Column("reason", format=lambda v: str(v or "-"))),
         json_out=json_out, json_skip=("target", "ends"),
         caption=f"{len(rows)} block(s)")
