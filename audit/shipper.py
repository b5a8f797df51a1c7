"""Ship the audit trail to syslog receivers (IHE ATNA record repositories).

The journal is the outbox: records are committed with the exchange they describe; this task
reads them afterwards, per destination, from a cursor kept in ``audit_ship_cursor``. Each
record becomes an RFC 5424 message (MSGID ``IHE+RFC-3881``, the DICOM ``AuditMessage`` as
MSG), sent over TLS with octet-counting framing (RFC 5425 §4.3) or over UDP (RFC 5426). A
datagram stays within the 2048 octets RFC 5426 §3.2 lets a sender count on: a longer record
goes reduced (its main participant object only, details cut short), or not at all when even
that is too long (warned, shown by ``mss audit status``): only TLS carries the whole trail.

Delivery is at least once. TCP gives no application acknowledgement, so a record counts as
delivered only after it has sat on a connection that stayed up for ``CONFIRM_AFTER`` seconds;
when a connection breaks, everything after the confirmed cursor is sent again. A receiver
that is down or slow builds a backlog, never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import structlog
from sqlalchemy import Engine, func, insert, select, update

from audit.dicom import Source, to_xml
from audit.journal import query_after
from mss import db
from mss.config import AuditDestination
from mss.lifecycle import BackgroundTask

log = structlog.get_logger("mss.audit.ship")

# runs a named job (a coroutine function) while this process is elected for it
Elect = Callable[[str, Callable[[], Coroutine[Any, Any, None]]], Coroutine[Any, Any, None]]
MSGID = "IHE+RFC-3881"
FACILITY_AUTHPRIV = 10  # RFC 5424 §6.2.1 "security/authorization messages"
CONFIRM_AFTER = 2.0
BOM = b"\xef\xbb\xbf"  # RFC 5424 §6.4: a UTF-8 MSG starts with the BOM
# RFC 5426 §3.2: receivers SHOULD take 2048 octets; a sender should not count on more (no IP
# fragmentation, and a receiver may truncate)
UDP_MAX_OCTETS = 2048


def syslog_message(record: dict[str, Any], source: Source, procid: str, *,
                   reduced: bool = False) -> bytes:
    """RFC 5424 §6: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG."""
    severity = 5 if record["outcome"] == 0 else 4  # notice / warning
    pri = FACILITY_AUTHPRIV * 8 + severity
    # [meta sequenceId] (RFC 5424 §7.3.1) carries the record id: receivers can de-duplicate
    sequence = (int(record["id"]) - 1) % 2147483647 + 1
    header = (f"<{pri}>1 {record['ts']} {source.source_id} mss {procid} {MSGID} "
              f'[meta sequenceId="{sequence}"] ')
    return header.encode("ascii") + BOM + to_xml(record, source, reduced=reduced)


def udp_datagram(record: dict[str, Any], source: Source, procid: str) -> bytes | None:
    """The record within UDP_MAX_OCTETS: whole, else reduced (still a valid AuditMessage:
    :func:`audit.dicom.to_element`), else None: that record cannot go over UDP at all (the
    whole trail needs TLS, RFC 5425)."""
    whole = syslog_message(record, source, procid)
    if len(whole) <= UDP_MAX_OCTETS:
        return whole
    reduced = syslog_message(record, source, procid, reduced=True)
    return reduced if len(reduced) <= UDP_MAX_OCTETS else None


def octet_counted(message: bytes) -> bytes:
    return str(len(message)).encode("ascii") + b" " + message  # RFC 5425 §4.3


class Outbox:
    """Cursor bookkeeping in the database (shared by every node)."""

    def __init__(self, engine: Engine, reader: Engine) -> None:
        self.engine = engine
        self.reader = reader

    def cursor(self, name: str) -> int:
        with self.reader.connect() as conn:
            value = conn.execute(select(db.audit_ship_cursor.c.last_id)
                                 .where(db.audit_ship_cursor.c.destination == name)).scalar()
        return int(value or 0)

    def _upsert(self, name: str, **values: Any) -> None:
        t = db.audit_ship_cursor
        with self.engine.begin() as conn:
            done = conn.execute(update(t).where(t.c.destination == name).values(**values))
            if done.rowcount == 0:
                conn.execute(insert(t).values(destination=name, **values))

    def confirm(self, name: str, last_id: int) -> None:
        self._upsert(name, last_id=last_id, last_success_at=time.time())

    def failed(self, name: str, error: str) -> None:
        self._upsert(name, last_error=error[:500], last_error_at=time.time())

    def fetch(self, after: int, limit: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return list(query_after(conn, after, limit))

    def status(self, names: Sequence[str]) -> list[dict[str, Any]]:
        t = db.audit_ship_cursor
        with self.reader.connect() as conn:
            newest = int(conn.execute(select(func.max(db.audit_log.c.id))).scalar() or 0)
            out = []
            for name in names:
                row = conn.execute(select(t).where(t.c.destination == name)).first()
                info = dict(row._mapping) if row else {"destination": name, "last_id": 0}
                info["backlog"] = int(conn.execute(
                    select(func.count()).select_from(db.audit_log)
                    .where(db.audit_log.c.id > info["last_id"])).scalar() or 0)
                info["newest_id"] = newest
                out.append(info)
        return out


def _checked_name(dest: AuditDestination) -> str:
    """The name the receiver's certificate must carry (config sets server_name for tls)."""
    return dest.server_name or dest.host


class Shipper:
    def __init__(self, outbox: Outbox, destinations: Sequence[AuditDestination],
                 source: Source, interval: float, batch: int, *,
                 elect: Elect | None = None) -> None:
        self.outbox = outbox
        self.elect = elect  # runs one destination's loop while this process leads it
        self.destinations = list(destinations)
        self.source = source
        self.interval = interval
        self.batch = batch
        self.procid = str(os.getpid())
        self._task = BackgroundTask("audit-shipper", self.run)

    async def start(self) -> None:
        """Ship to every destination in the background (one task each, reconnecting)."""
        await self._task.start()

    async def stop(self, deadline: float) -> None:
        """Stop shipping: what is not confirmed yet is sent again at the next start."""
        await self._task.stop(deadline)

    async def run(self) -> None:
        """One loop per destination; under *elect* (``mss serve``: mss.leader.Elector.run),
        each runs in one process of the cluster at a time, the only reader and writer of
        its cursor (job ``audit-ship:<destination>``)."""
        elect = self.elect
        if elect is None:
            await asyncio.gather(*(self._run_one(d) for d in self.destinations))
        else:
            await asyncio.gather(*(elect(f"audit-ship:{d.name}", partial(self._run_one, d))
                                   for d in self.destinations))

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _run_one(self, dest: AuditDestination) -> None:
        backoff = 0.5
        while True:
            try:
                if dest.transport == "udp":
                    await self._ship_udp(dest)
                else:
                    await self._ship_tls(dest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # receiver down: keep the backlog, retry later
                self._log_failure(dest, exc)
                with contextlib.suppress(Exception):
                    await self._in_thread(self.outbox.failed, dest.name, repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 0.5

    @staticmethod
    def _log_failure(dest: AuditDestination, exc: Exception) -> None:
        if isinstance(exc, ssl.SSLCertVerificationError):  # not the receiver configured
            log.error("audit destination refused: its certificate does not verify",
                      destination=dest.name, server_name=_checked_name(dest),
                      reason=exc.verify_message)
        else:
            log.warning("audit shipping failed", destination=dest.name, error=repr(exc))

    def _tls_context(self, dest: AuditDestination) -> ssl.SSLContext:
        # RFC 5425 §4.2.1, §5.2: the receiver's certificate must chain to ca_file *and* name the
        # destination (server_name, default host); any other receiver of the same CA gets
        # nothing, the handshake fails before the first record is written.
        ctx = ssl.create_default_context(cafile=str(dest.ca_file) if dest.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        if dest.cert_file and dest.key_file:
            ctx.load_cert_chain(str(dest.cert_file), str(dest.key_file))
        return ctx

    async def _ship_tls(self, dest: AuditDestination) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            dest.host, dest.port, ssl=self._tls_context(dest),
            server_hostname=_checked_name(dest)), timeout=15)
        log.info("audit destination connected", destination=dest.name)
        closed = asyncio.ensure_future(reader.read())  # receivers never talk: EOF = gone
        confirmed = await self._in_thread(self.outbox.cursor, dest.name)
        sent = confirmed
        in_flight: deque[tuple[int, float]] = deque()
        try:
            while True:
                if closed.done():
                    raise ConnectionError("receiver closed the connection")
                rows = await self._in_thread(self.outbox.fetch, sent, self.batch)
                if rows:
                    writer.write(b"".join(octet_counted(
                        syslog_message(r, self.source, self.procid)) for r in rows))
                    await writer.drain()
                    sent = rows[-1]["id"]
                    in_flight.append((sent, time.monotonic()))
                # a record is delivered once its connection outlived CONFIRM_AFTER
                newest = None
                while in_flight and time.monotonic() - in_flight[0][1] >= CONFIRM_AFTER:
                    newest = in_flight.popleft()[0]
                if newest is not None and not closed.done():
                    await self._in_thread(self.outbox.confirm, dest.name, newest)
                    confirmed = newest
                if not rows:
                    await asyncio.wait([closed], timeout=self.interval)
        finally:
            closed.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _ship_udp(self, dest: AuditDestination) -> None:
        family = socket.AF_INET6 if ":" in dest.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((dest.host, dest.port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            sent = await self._in_thread(self.outbox.cursor, dest.name)
            while True:
                rows = await self._in_thread(self.outbox.fetch, sent, self.batch)
                too_long = []
                for row in rows:  # RFC 5426 §3.1: one message per datagram
                    datagram = udp_datagram(row, self.source, self.procid)
                    if datagram is None:
                        too_long.append(int(row["id"]))
                        continue
                    await loop.sock_sendall(sock, datagram)
                if too_long:
                    log.warning("audit records too long for UDP, not sent", destination=dest.name,
                                records=too_long)
                    await self._in_thread(self.outbox.failed, dest.name, (
                        f"records {too_long[:10]} longer than {UDP_MAX_OCTETS} octets even "
                        "reduced: not sent over UDP (RFC 5426 §3.2); use a TLS destination"))
                if rows:
                    sent = rows[-1]["id"]
                    await self._in_thread(self.outbox.confirm, dest.name, sent)
                else:
                    await asyncio.sleep(self.interval)
