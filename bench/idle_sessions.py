#!/usr/bin/env python3
"""Idle IMAP sessions benchmark (a script, not a test).

Creates a throw-away node (tests/node.py), starts ``mss serve`` (one worker process by
default), creates --folders folders in bob's mailbox and opens --sessions IMAPS sessions
(bounded concurrency while logging in; source addresses spread over 127.0.0.2..,
--per-address each, in case a per-address connection cap applies), each SELECTing one of the
folders and entering IDLE (RFC 2177). Then it reads the serve process's CPU time from
/proc/PID/stat (utime + stime) over two windows of --seconds: the sessions alone (the cost
of idling), then while timing SMTP submission transactions (alice -> alice, MAIL FROM to
the end of DATA, on one kept session, one every --smtp-every seconds) handled by that same
process. Prints one JSON line and plain text::

    .venv/bin/python bench/idle_sessions.py --sessions 2000 --seconds 20

Every idle client is checked at the end: DONE is answered ``OK IDLE terminated``.
Loopback only; the file descriptor limit is raised to its hard limit for both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import smtplib
import ssl
import statistics
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.node import DOMAIN, PASSWORD, Node, make_node  # noqa: E402

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
TICKS = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (fields 14 and 15 of /proc/PID/stat, after the comm field)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class IdleClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def until(self, tag: bytes) -> bytes:
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed by the server")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return line

    async def command(self, tag: bytes, text: str) -> None:
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        await self.until(tag)

    async def done(self) -> None:
        self.writer.write(b"DONE\r\n")
        await self.until(b"i")
        self.writer.write(b"z LOGOUT\r\n")
        await self.writer.drain()
        self.writer.close()


async def open_idle(node: Node, ctx: ssl.SSLContext, source: str, folder: str,
                    gate: asyncio.Semaphore) -> IdleClient:
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", node.ports["imaps"], ssl=ctx, local_addr=(source, 0)), 60)
        client = IdleClient(reader, writer)
        await reader.readline()  # greeting
        await client.command(b"a", f'LOGIN {BOB} "{PASSWORD}"')
        await client.command(b"s", f'SELECT "{folder}"')
        writer.write(b"i IDLE\r\n")
        line = await reader.readline()
        if not line.startswith(b"+"):
            raise RuntimeError(line.decode(errors="replace"))
        return client


async def open_all(node: Node, n: int, folders: list[str], per_address: int,
                   concurrency: int) -> list[IdleClient]:
    ctx = node.client_context()
    gate = asyncio.Semaphore(concurrency)
    tasks = [open_idle(node, ctx, f"127.0.0.{2 + i // per_address}", folders[i % len(folders)],
                       gate) for i in range(n)]
    return list(await asyncio.gather(*tasks))


async def done_all(clients: list[IdleClient]) -> None:
    await asyncio.gather(*(c.done() for c in clients))


def make_folders(node: Node, count: int) -> list[str]:
    import imaplib

    names = [f"Idle-{i:04d}" for i in range(count)]
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context())
    m.login(BOB, PASSWORD)
    for name in names:
        m.create(name)
    m.logout()
    return names


def smtp_latencies(node: Node, stop: threading.Event, every: float, out: list[float]) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=30) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        i = 0
        while not stop.is_set():
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = ALICE, ALICE, f"latency {i}"
            msg.set_content("Bonjour.\n")
            start = time.perf_counter()
            client.sendmail(ALICE, [ALICE], msg.as_bytes().replace(b"\n", b"\r\n"))
            out.append(time.perf_counter() - start)
            i += 1
            stop.wait(every)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--folders", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--per-address", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--smtp-every", type=float, default=0.5)
    args = p.parse_args()
    raise_fd_limit()  # inherited by mss serve
    with tempfile.TemporaryDirectory(prefix="mss-idle-bench-") as tmp:
        node = make_node(Path(tmp), sending_limits=False)
        node.start()
        try:
            assert node.process is not None
            pid = node.process.pid
            folders = make_folders(node, args.folders)
            started = time.monotonic()
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            clients = loop.run_until_complete(open_all(node, args.sessions, folders,
                                                       args.per_address, args.concurrency))
            setup = time.monotonic() - started
            time.sleep(2.0)  # let the logins' executor work settle
            idle0, i0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            idle1, i1 = cpu_seconds(pid), time.monotonic()
            latencies: list[float] = []
            stop = threading.Event()
            sender = threading.Thread(target=smtp_latencies,
                                      args=(node, stop, args.smtp_every, latencies))
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            sender.start()
            time.sleep(args.seconds)
            stop.set()
            sender.join()
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            loop.run_until_complete(done_all(clients))
            loop.close()
        finally:
            node.stop()
    result = {
        "sessions": args.sessions, "folders": args.folders, "seconds": round(t1 - t0, 1),
        "setup_s": round(setup, 1),
        "idle_cpu_percent": round(100 * (idle1 - idle0) / (i1 - i0), 1),
        "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "smtp_transactions": len(latencies),
        "smtp_median_s": round(statistics.median(latencies), 4) if latencies else None,
        "smtp_max_s": round(max(latencies), 4) if latencies else None,
    }
    print(json.dumps(result))
    print(f"{args.sessions} IDLE sessions over {args.folders} folders: serve process "
          f"{result['idle_cpu_percent']} % of a core idle, {result['cpu_percent']} % with "
          f"SMTP, over {result['seconds']} s each; SMTP "
          f"transaction median {result['smtp_median_s']} s, max {result['smtp_max_s']} s "
          f"({len(latencies)} transactions)")


if __name__ == "__main__":
    main()
