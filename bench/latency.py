#!/usr/bin/env python3
"""Latency benchmark (a script, not a test): submission on operator A to stored in
operator B (issue 21 goal 4: hospital -> GP, p50 <= 50 ms, p99 <= 250 ms at 20 msg/s).

Two throw-away nodes on loopback (127.0.54.2 and .3 by default; test-PKI certificates,
mutual TLS on the MX, each other's domain on their whitelists, MX records from a DNS server
on loopback: tests/outbound_pair.py) with the DEFAULT [delivery] and [database]
configuration: only what a test pair cannot take from the defaults is set (the DNS server
and the MX port, since port 25 needs root; the sending limits are off, as they count per
hour and the run submits more than one mailbox's hourly share).

An open-loop load: message *i* is due at ``start + i / rate`` and handed to one of
--sessions persistent submission sessions on A (STARTTLS and AUTH once per session, as an
institution's server keeps its connection). Each message's clock starts when its sending
starts (the schedule's lag, if the sessions fall behind, is printed apart) and stops when
B's database holds it: a reader thread polls B's audit trail (``delivery.local`` is written
in the same transaction as the message, so it is visible exactly when the message is) every
--observe-ms. A's and B's audit timestamps split the time into stages. Server CPU (user +
system of both nodes' processes, workers included) is given per message: the machine is
shared, so wall-clock figures move with the load and the CPU figures less.

    .venv/bin/python bench/latency.py                      # 20 msg/s for 30 s, 5 KB
    .venv/bin/python bench/latency.py --rate 50 --seconds 10 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import signal
import smtplib
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mss.config import DeliveryConfig, load_config  # noqa: E402
from mss.db import database_name  # noqa: E402
from tests.node import PASSWORD, Node  # noqa: E402
from tests.outbound_pair import A_DOMAIN, B_DOMAIN, Pair, make_pair, message  # noqa: E402

# what tests/outbound_pair.py's delivery_config sets for fast tests, put back to the
# defaults (nameservers, dns_port and port stay: the pair's DNS server and MX port)
_TEST_ONLY = ("dns_timeout", "connect_timeout", "command_timeout", "max_attempts",
              "retry_base", "retry_factor", "retry_max", "jitter", "lease", "poll_interval")
DEFAULTS = {name: getattr(DeliveryConfig(), name) for name in _TEST_ONLY}
assert {f.name for f in dataclasses.fields(DeliveryConfig)} >= set(DEFAULTS)
TICK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for p in found:  # grows while iterating: breadth first
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                found += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return found


def cpu_seconds(node: Node) -> float:
    """User + system CPU of *node*'s serve process and its workers, so far."""
    assert node.process is not None
    total = 0
    for pid in _descendants(node.process.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return total / TICK


def set_workers(node: Node, workers: int) -> None:
    text = node.config.read_text()
    lines = text.splitlines()
    i = lines.index("[server]")
    lines = [ln for ln in lines if not ln.startswith("workers =")]
    lines.insert(i + 1, f"workers = {workers}")
    node.config.write_text("\n".join(lines) + "\n")


def db_file(node: Node) -> str:
    return database_name(load_config(node.config).database_url)


def audit_times(path: str, event: str) -> dict[str, float]:
    """Message-ID -> time of *event*'s first audit record (epoch seconds)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT message_id, ts FROM audit_log WHERE event = ? "
                            "ORDER BY id", (event,)).fetchall()
    found: dict[str, float] = {}
    for mid, ts in rows:
        if mid and mid not in found:
            found[mid] = datetime.fromisoformat(ts).timestamp()
    return found


class Observer(threading.Thread):
    """Polls B's audit trail for messages stored; the time each was first seen."""

    def __init__(self, path: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.path, self.interval = path, interval
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            self.last = int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_log")
                            .fetchone()[0])

    def run(self) -> None:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                               check_same_thread=False)
        try:
            while not self.stop.is_set():
                rows = conn.execute("SELECT id, message_id FROM audit_log WHERE id > ? "
                                    "AND event = 'delivery.local'", (self.last,)).fetchall()
                now = time.time()
                for rid, mid in rows:
                    self.last = max(self.last, rid)
                    if mid:
                        self.seen.setdefault(mid, now)
                if not rows:  # one writer (SQLite): ids become visible in order
                    time.sleep(self.interval)
        finally:
            conn.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50_ms": round(pct(ms, 50), 1), "p90_ms": round(pct(ms, 90), 1),
            "p99_ms": round(pct(ms, 99), 1), "max_ms": round(max(ms), 1) if ms else 0.0,
            "mean_ms": round(statistics.fmean(ms), 1) if ms else 0.0}


def run(pair: Pair, args: argparse.Namespace) -> dict[str, object]:
    a, b = pair.nodes()
    ctx = ssl.create_default_context(cafile=str(pair.pki / "root.crt"))
    ctx.check_hostname = False
    rcpts = [f"{u}@{B_DOMAIN}" for u in ("alice", "bob", "secretariat")]
    total = int(args.rate * args.seconds)
    size = int(args.size_kb * 1024)
    run_id = time.time_ns()
    tags = [f"lat{i}x{run_id}" for i in range(total)]
    payloads = [message(f"alice@{A_DOMAIN}", rcpts[i % 3], tags[i], size) for i in range(total)]
    started: dict[str, float] = {}
    acked: dict[str, float] = {}
    lag: list[float] = []
    errors: list[str] = []
    jobs: queue.Queue[int | None] = queue.Queue()

    def session() -> smtplib.SMTP:
        client = smtplib.SMTP(a.host, a.ports["submission"], timeout=60)
        client.starttls(context=ctx)
        client.login(f"alice@{A_DOMAIN}", PASSWORD)
        return client

    clients = [session() for _ in range(args.sessions)]  # set up before the clock starts

    def sender(client: smtplib.SMTP | None) -> None:
        while (i := jobs.get()) is not None:
            t = time.time()
            try:
                client = client or session()
                client.sendmail(f"alice@{A_DOMAIN}", [rcpts[i % 3]], payloads[i])
                acked[tags[i]] = time.time()
                started[tags[i]] = t
            except (OSError, smtplib.SMTPException) as exc:
                client = None
                errors.append(repr(exc))
        if client is not None:
            client.quit()

    observer = Observer(db_file(b), args.observe_ms / 1000)
    observer.start()
    threads = [threading.Thread(target=sender, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    spies = [subprocess.Popen([args.py_spy, "record", "--format", "raw", "--subprocesses",
                               "--nonblocking", "--gil", "-r", "200",
                               "-o", f"{args.spy_out}-{n.domain[0]}.txt",
                               "-p", str(n.process.pid)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for n in (a, b) if args.py_spy and n.process is not None]
    cpu0 = cpu_seconds(a), cpu_seconds(b)
    t0 = time.monotonic()
    for i in range(total):  # open loop: each message at its time, late or not
        due = t0 + i / args.rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        else:
            lag.append(-wait)
        jobs.put(i)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and len(observer.seen) < len(acked):
        time.sleep(0.05)
    cpu = cpu_seconds(a) - cpu0[0], cpu_seconds(b) - cpu0[1]
    for spy in spies:  # py-spy writes its profile on SIGINT
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    observer.stop.set()
    observer.join()

    def mid(tag: str) -> str:
        return f"<{tag}@test.example>"
    seen = {tag: observer.seen[mid(tag)] for tag in acked if mid(tag) in observer.seen}
    queued_a = audit_times(db_file(a), "delivery.queued")
    sent_a = audit_times(db_file(a), "queue.delivered")
    stored_b = audit_times(db_file(b), "delivery.local")
    end_to_end = [seen[t] - started[t] for t in seen]
    stages = {  # audit timestamps: written when the record is made, just before its commit
        "submit (send start -> 250 on A)": [acked[t] - started[t] for t in acked],
        "A queued -> B stored (audit)": [stored_b[mid(t)] - queued_a[mid(t)] for t in seen
                                         if mid(t) in queued_a and mid(t) in stored_b],
        "B stored -> A recorded delivered (audit)": [
            sent_a[mid(t)] - stored_b[mid(t)] for t in seen
            if mid(t) in sent_a and mid(t) in stored_b],
    }
    cfg = load_config(a.config)
    return {
        "rate_msg_s": args.rate, "seconds": args.seconds, "size_kb": args.size_kb,
        "sessions": args.sessions, "workers": cfg.server.workers,
        "poll_interval": cfg.delivery.poll_interval, "change_poll": cfg.database.change_poll,
        "session_reuse": cfg.delivery.session_reuse,
        "submitted": len(acked), "errors": len(errors), "first_errors": errors[:3],
        "stored_in_b": len(seen), "schedule_lag_max_ms": round(max(lag, default=0) * 1000, 1),
        "end_to_end": summary(end_to_end),
        "stages": {name: summary(v) for name, v in stages.items()},
        "server_cpu_ms_per_msg": {  # A: submission and delivery; B: reception
            "a": round(cpu[0] / max(1, len(seen)) * 1000, 2),
            "b": round(cpu[1] / max(1, len(seen)) * 1000, 2),
            "both": round(sum(cpu) / max(1, len(seen)) * 1000, 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--size-kb", type=float, default=5.0)
    ap.add_argument("--sessions", type=int, default=4,
                    help="persistent submission sessions on A")
    ap.add_argument("--workers", type=int, default=None,
                    help="server.workers of both nodes (default: the configuration's)")
    ap.add_argument("--observe-ms", type=float, default=2.0,
                    help="how often B's audit trail is read")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait for the last messages after the load")
    ap.add_argument("--hosts", default="127.0.54.2,127.0.54.3",
                    help="the addresses A and B listen on")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [delivery] key for both nodes instead of its default "
                         "(e.g. poll_interval=0.05), to compare")
    ap.add_argument("--py-spy", metavar="BIN", help="profile both nodes with py-spy during "
                    "the load (raw flame-graph input, one file per node)")
    ap.add_argument("--spy-out", default="latency-profile", help="prefix of those files")
    args = ap.parse_args()
    delivery: dict[str, object] = dict(DEFAULTS)
    for item in args.set:
        key, _, value = item.partition("=")
        delivery[key] = value
    hosts = tuple(args.hosts.split(","))
    assert len(hosts) == 2
    with tempfile.TemporaryDirectory(prefix="mss-latency-") as tmp:
        pair = make_pair(Path(tmp), sending_limits=False, hosts=(hosts[0], hosts[1]),
                         **delivery)
        try:
            for node in pair.nodes():
                if args.workers is not None:
                    set_workers(node, args.workers)
                node.start()
            result = run(pair, args)
        finally:
            pair.close(graceful=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
