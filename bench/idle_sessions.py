#!/usr/bin/env python3
"""Idle IMAP sessions benchmark (a script, not a test): memory, idle CPU, wake-up latency.

Creates a throw-away node (tests/node.py) listening on 127.0.53.1, starts ``mss serve``
(--workers processes), gives bob an IMAP app password (a login without scrypt, so that
10 000 logins take seconds) and opens --sessions IMAPS sessions from --clients client
processes (the client side's CPU and memory are not the server's; source addresses
127.0.53.2.., --per-address each, to stay within the ephemeral ports and the per-address
caps, which the script raises to --sessions). Each session logs in, SELECTs INBOX and enters
IDLE (RFC 2177). Then it measures, on the serving processes (the serve process and its
workers, /proc):

1. RSS before the sessions and with them (per session: the difference / --sessions);
2. CPU time (utime + stime) over --seconds while nothing happens (the cost of idling);
3. one message submitted to bob (alice -> bob on submission, on a session logged in
   before): the time from its MAIL FROM until each session reads its ``* n EXISTS`` (p50,
   p99, max, missed);
4. optionally (--smtp-seconds > 0) CPU while timing SMTP submissions alice -> alice.

Every session is checked at the end: DONE is answered ``OK IDLE terminated``. Prints one
JSON line and plain text::

    .venv/bin/python bench/idle_sessions.py --sessions 10000 --clients 4 --seconds 20

CPU figures are CPU time, not wall time (the machine is shared). Loopback only; file
descriptor limits are raised to their hard limit on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.idle_connections import raise_caps  # noqa: E402
from tests.node import DOMAIN, PASSWORD, Node, make_node  # noqa: E402

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.53.1"  # this benchmark's loopback range: 127.0.53.0/24


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tree(pid: int) -> list[int]:
    """*pid* and its descendants (the serve process's workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(k) for k in kids]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid*'s process tree (fields 14 and 15 of /proc/PID/stat)."""
    total = 0.0
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text(),
                              re.M)
        except OSError:
            continue
        total += int(found.group(1)) if found else 0
    return total


# ---------------------------------------------------------------------- client process
class IdleClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.seen: float | None = None  # time.monotonic() of the first EXISTS in IDLE
        self.ok = False

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

    async def watch(self) -> None:
        """Read untagged updates during IDLE until the tagged end (after DONE)."""
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if line.startswith(b"* ") and line.rstrip().endswith(b"EXISTS") \
                    and self.seen is None:
                self.seen = time.monotonic()
            elif line.startswith(b"i "):
                self.ok = line.startswith(b"i OK IDLE terminated")
                return

    async def done(self, watcher: asyncio.Task[None]) -> None:
        self.writer.write(b"DONE\r\n")
        await asyncio.wait_for(watcher, 60)
        self.writer.write(b"z LOGOUT\r\n")
        await self.writer.drain()
        self.writer.close()


async def open_idle(port: int, ctx: ssl.SSLContext, source: str, secret: str,
                    gate: asyncio.Semaphore) -> IdleClient | None:
    try:
        return await _open_idle(port, ctx, source, secret, gate)
    except (OSError, RuntimeError, TimeoutError) as exc:  # counted: "failed"
        print(f"session failed: {exc!r}", file=sys.stderr)
        return None


async def _open_idle(port: int, ctx: ssl.SSLContext, source: str, secret: str,
                     gate: asyncio.Semaphore) -> IdleClient:
    async with gate:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            HOST, port, ssl=ctx, local_addr=(source, 0)), 120)
        client = IdleClient(reader, writer)
        await reader.readline()  # greeting
        await client.command(b"a", f'LOGIN {BOB} "{secret}"')
        await client.command(b"s", "SELECT INBOX")
        writer.write(b"i IDLE\r\n")
        line = await reader.readline()
        if not line.startswith(b"+"):
            raise RuntimeError(line.decode(errors="replace"))
        return client


async def client_main(port: int, first: int, count: int, per_address: int, secret: str,
                      cafile: str, concurrency: int) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    gate = asyncio.Semaphore(concurrency)
    opened = await asyncio.gather(*(
        open_idle(port, ctx, f"127.0.53.{2 + (first + i) // per_address}", secret, gate)
        for i in range(count)))
    clients = [c for c in opened if c is not None]
    watchers = [asyncio.create_task(c.watch()) for c in clients]
    loop = asyncio.get_running_loop()
    print(f"ready {count - len(clients)}", flush=True)  # sessions that failed
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent says: finish
    await asyncio.gather(*(c.done(w) for c, w in zip(clients, watchers, strict=True)))
    print(json.dumps({"seen": [c.seen for c in clients],
                      "done_ok": sum(c.ok for c in clients)}), flush=True)


# ---------------------------------------------------------------------- parent
def app_password(node: Node) -> str:
    out = node.cli("mailbox", "app-password", "add", BOB, "--label", "bench",
                   "--scope", "imap").stdout
    return out.strip().splitlines()[-1]


def submit(node: Node, sender: str, rcpt: str, subject: str,
           client: smtplib.SMTP | None = None) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg.set_content("Bonjour.\n")
    data = msg.as_bytes().replace(b"\n", b"\r\n")
    if client is not None:
        client.sendmail(sender, [rcpt], data)
        return
    with smtplib.SMTP(HOST, node.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=node.client_context())
        smtp.login(sender, PASSWORD)
        smtp.sendmail(sender, [rcpt], data)


def smtp_latencies(node: Node, stop: threading.Event, every: float, out: list[float]) -> None:
    with smtplib.SMTP(HOST, node.ports["submission"], timeout=30) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            submit(node, ALICE, ALICE, f"latency {i}", client)
            out.append(time.perf_counter() - start)
            i += 1
            stop.wait(every)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--workers", type=int, default=1, help="server.workers")
    p.add_argument("--seconds", type=float, default=20.0, help="idle CPU window")
    p.add_argument("--smtp-seconds", type=float, default=0.0)
    p.add_argument("--per-address", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=16, help="logins at once per client")
    p.add_argument("--smtp-every", type=float, default=0.5)
    p.add_argument("--profile-wake", metavar="FILE", help="py-spy (on PATH or --py-spy) "
                   "records the serve process from the delivery on, 4 s, raw stacks to FILE")
    p.add_argument("--py-spy", default="py-spy")
    p.add_argument("--client", nargs=6, metavar=("PORT", "FIRST", "COUNT", "PER_ADDRESS",
                                                 "SECRET", "CAFILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    raise_fd_limit()  # inherited by mss serve
    if args.client:
        port, first, count, per_address, secret, cafile = args.client
        asyncio.run(client_main(int(port), int(first), int(count), int(per_address), secret,
                                cafile, args.concurrency))
        return
    with tempfile.TemporaryDirectory(prefix="mss-idle-bench-") as tmp:
        node = make_node(Path(tmp), host=HOST, sending_limits=False)
        text = node.config.read_text()  # [server] workers (SO_REUSEPORT)
        node.config.write_text(text.replace('data_dir = "."',
                                            f'data_dir = "."\nworkers = {args.workers}', 1))
        raise_caps(node, "imaps", args.sessions + 10)
        node.start()
        procs: list[subprocess.Popen[str]] = []
        try:
            assert node.process is not None
            pid = node.process.pid
            secret = app_password(node)
            time.sleep(2.0)
            rss0 = rss_kib(pid)
            started = time.monotonic()
            share = -(-args.sessions // args.clients)
            failed = 0
            for k in range(args.clients):
                first, count = k * share, min(share, args.sessions - k * share)
                if count <= 0:
                    break
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, "--concurrency", str(args.concurrency),
                     "--client", str(node.ports["imaps"]), str(first), str(count),
                     str(args.per_address), secret, str(node.ca_file)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().split()
                if not line or line[0] != "ready":
                    raise RuntimeError(f"client process failed: {line!r}")
                failed += int(line[1])
            setup = time.monotonic() - started
            time.sleep(3.0)  # let the logins' executor work settle
            rss1 = rss_kib(pid)
            idle0, i0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.seconds)
            idle1, i1 = cpu_seconds(pid), time.monotonic()
            spy = None
            with smtplib.SMTP(HOST, node.ports["submission"], timeout=30) as smtp:
                smtp.starttls(context=node.client_context())
                smtp.login(ALICE, PASSWORD)
                if args.profile_wake:
                    flags = os.environ.get("PYSPY_FLAGS", "").split()  # e.g. --native
                    spy = subprocess.Popen([args.py_spy, "record", "-p", str(pid), "-d", "4",
                                            *flags, "-r", "500", "-f", "raw",
                                            "-o", args.profile_wake])
                    time.sleep(1.0)  # attached
                w0 = cpu_seconds(pid)
                t0 = time.monotonic()  # MAIL FROM .. the end of DATA: stored
                submit(node, ALICE, BOB, "wake up", smtp)
                stored = time.monotonic() - t0
            time.sleep(max(3.0, 10 * stored))  # every session has seen it by then
            if spy is not None:
                spy.wait(30)
            # the server's CPU for the delivery and every session's wake-up, less idling's
            wake_cpu = cpu_seconds(pid) - w0 - (idle1 - idle0) / (i1 - i0) * (time.monotonic() - t0)
            rss2 = rss_kib(pid)
            latencies: list[float] = []
            smtp_cpu = None
            if args.smtp_seconds > 0:
                stop = threading.Event()
                sender = threading.Thread(target=smtp_latencies,
                                          args=(node, stop, args.smtp_every, latencies))
                cpu0, c0 = cpu_seconds(pid), time.monotonic()
                sender.start()
                time.sleep(args.smtp_seconds)
                stop.set()
                sender.join()
                smtp_cpu = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - c0)
            seen: list[float | None] = []
            done_ok = 0
            for proc in procs:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write("done\n")
                proc.stdin.flush()
            for proc in procs:
                assert proc.stdout is not None
                report = json.loads(proc.stdout.readline())
                seen += report["seen"]
                done_ok += report["done_ok"]
                proc.wait(60)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            try:
                node.stop()
            except subprocess.TimeoutExpired:  # a loaded machine: the figures are taken
                print("mss serve slow to stop: killed", file=sys.stderr)
                if node.process is not None:
                    node.process.kill()
    woken = [s - t0 for s in seen if s is not None]
    result = {
        "sessions": args.sessions, "failed": failed, "workers": args.workers,
        "setup_s": round(setup, 1),
        "rss_before_mib": round(rss0 / 1024, 1), "rss_idle_mib": round(rss1 / 1024, 1),
        "rss_after_wake_mib": round(rss2 / 1024, 1),
        "kib_per_session": round((rss1 - rss0) / max(1, args.sessions - failed), 1),
        "idle_cpu_percent": round(100 * (idle1 - idle0) / (i1 - i0), 2),
        "idle_window_s": round(i1 - i0, 1),
        "submission_s": round(stored, 3),
        "woken": len(woken), "missed": len(seen) - len(woken),
        "wake_p50_s": round(statistics.median(woken), 3) if woken else None,
        "wake_p99_s": round(percentile(woken, 0.99), 3) if woken else None,
        "wake_max_s": round(max(woken), 3) if woken else None,
        "wake_cpu_s": round(wake_cpu, 3),
        "wake_cpu_us_per_session": round(1e6 * wake_cpu / max(1, len(seen)), 1),
        "done_ok": done_ok,
        "smtp_cpu_percent": round(smtp_cpu, 1) if smtp_cpu is not None else None,
        "smtp_median_s": round(statistics.median(latencies), 4) if latencies else None,
    }
    print(json.dumps(result))
    print(f"{args.sessions - failed} IDLE sessions ({failed} failed), {args.workers} "
          f"worker(s): RSS {result['rss_before_mib']} -> {result['rss_idle_mib']} MiB "
          f"({result['kib_per_session']} KiB/session); "
          f"idle CPU {result['idle_cpu_percent']} % of a core over "
          f"{result['idle_window_s']} s; "
          f"one delivery seen by {len(woken)}/{len(seen)}: p50 {result['wake_p50_s']} s, "
          f"p99 {result['wake_p99_s']} s, max {result['wake_max_s']} s (from MAIL FROM; "
          f"the transaction took {result['submission_s']} s; server CPU for it and the "
          f"wake-ups {result['wake_cpu_s']} s, {result['wake_cpu_us_per_session']} µs per "
          f"session); DONE answered OK "
          f"{done_ok}/{len(seen)}")


if __name__ == "__main__":
    main()
