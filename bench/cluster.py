#!/usr/bin/env python3
"""Several nodes on PostgreSQL against one node on SQLite (a script, not a test).

Three set-ups, each on throw-away nodes served by real ``mss serve`` processes
(tests/node.py; PostgreSQL: a server of this process, tests/postgres.py):

    sqlite   one node, SQLite database
    pg       one node, PostgreSQL database
    pg-2     two nodes on ONE PostgreSQL database (the same keys, two MX, two IMAP)

and in each:

  ingest  --messages messages of --size-kb KB over STARTTLS to the MX, one connection per
          message from --sessions threads (bench/smtp_ingest.py's load), spread over the
          nodes; accepted msg/s, p50/p99, and CPU milliseconds per stored message: the
          ``mss serve`` processes (children included) and the PostgreSQL server processes
          (postmaster, backends, background workers), counted apart and summed.
  fetch   --fetch-rounds of EXAMINE INBOX + UID FETCH 1:* BODY.PEEK[] in one STARTTLS
          session on the last node (bench/imap_fetch.py's connect), the LOGIN before the
          count; CPU ms per fetched message, the same way.
  idle    an IMAP IDLE on the LAST node's INBOX, --idle-deliveries messages into the FIRST
          node's MX one after the other; from the 250 to ``* n EXISTS``: p50/p99 (with two
          nodes: the cross-node wake-up). A delivery not seen within --idle-timeout counts
          as missed.

    .venv/bin/python bench/cluster.py --messages 300 --sessions 8
Prints a JSON line per set-up, then a table and the issue's goals (PostgreSQL at >= 0.8x
the SQLite figure per message, i.e. at most 1.25x its CPU; two nodes at >= the msg/s of one).
Loopback only; every phase bounded by its count and --max-seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.imap_fetch import Target, connect  # noqa: E402
from bench.smtp_ingest import body, send_all  # noqa: E402
from tests.node import (  # noqa: E402
    DOMAIN,
    PASSWORD,
    Node,
    database_of,
    make_node,
    point_at,
)

SETUPS = {"sqlite": ("sqlite", 1), "pg": ("postgresql", 1), "pg-2": ("postgresql", 2)}
RCPTS = (f"alice@{DOMAIN}", f"bob@{DOMAIN}")  # the fetch and the IDLE read bob's INBOX
CLK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU from /proc

def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds of *pid* and of its descendants: the live ones' own time plus what the
    reaped ones left in their parent's cutime/cstime (a PostgreSQL backend that ends with
    its connection is counted by the postmaster), so a difference over a phase counts
    every process that ran in it."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    # proc(5): utime 14, stime 15, cutime 16, cstime 17 (1-based, after the comm field)
    total = sum(int(f) for f in fields[11:15]) / CLK
    return total + sum(tree_cpu(child) for child in _children(pid))


@dataclass
class Cpu:
    """CPU seconds of the nodes' ``mss serve`` processes and of the PostgreSQL server."""

    mss: float
    pg: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.mss - other.mss, self.pg - other.pg)


def _postmaster(node: Node) -> int | None:
    """The PID of the PostgreSQL server holding *node*'s database (postmaster.pid's first
    line), None on SQLite."""
    url = database_of(node.config)
    if not url.startswith("postgresql"):
        return None
    from tests.postgres import shared_cluster

    return int((shared_cluster().data / "postmaster.pid").read_text().split()[0])


def cpu_of(nodes: list[Node]) -> Cpu:
    pids = [n.process.pid for n in nodes if n.process is not None]
    postmaster = _postmaster(nodes[0])
    return Cpu(sum(tree_cpu(p) for p in pids),
               tree_cpu(postmaster) if postmaster is not None else 0.0)


# --------------------------------------------------------------------------- the set-ups

@dataclass
class Result:
    setup: str
    nodes: int
    accepted: int = 0
    errors: int = 0
    stored: int = 0
    msg_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    ingest_mss_ms: float = 0.0  # CPU per stored message
    ingest_pg_ms: float = 0.0
    fetched: int = 0
    fetch_msg_s: float = 0.0
    fetch_mss_ms: float = 0.0  # CPU per fetched message
    fetch_pg_ms: float = 0.0
    idle_p50_ms: float | None = None
    idle_p99_ms: float | None = None
    idle_missed: int = 0
    first_errors: list[str] = field(default_factory=list)


def start_nodes(base: Path, backend: str, count: int) -> list[Node]:
    """*count* served nodes; with several, all on the first one's database."""
    nodes = []
    for i in range(count):
        node = make_node(base / f"n{i}", backend=backend)  # log level info: "ready"
        if i:
            point_at(node.config, database_of(nodes[0].config))
        nodes.append(node)
    for node in nodes:
        node.start()
    return nodes


def stored_count(node: Node) -> int:
    from sqlalchemy import func, select

    from mss import db
    from mss.config import load_config

    engine = db.make_engine(load_config(node.config).database_url, writer=False)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(db.messages)).scalar()
                       or 0)
    finally:
        engine.dispose()


def ingest(nodes: list[Node], result: Result, a: argparse.Namespace) -> None:
    rcpts = [RCPTS[i % len(RCPTS)] for i in range(a.messages)]
    payloads = [body(int(a.size_kb * 1024), i, rcpts[i]) for i in range(a.messages)]
    before_count = stored_count(nodes[0])
    spy = _py_spy(nodes[0], a.py_spy and f"{a.py_spy}-{result.setup}-ingest.txt")
    before = cpu_of(nodes)
    load = send_all([n.ports["mx"] for n in nodes], nodes[0].mx_client_context(), rcpts,
                    payloads, a.sessions, a.max_seconds)
    used = cpu_of(nodes) - before
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        spy.wait(60)
    result.stored = stored_count(nodes[0]) - before_count
    result.accepted, result.errors, result.first_errors = load.ok, load.err, load.errors
    result.msg_s = round(load.ok / load.elapsed, 1) if load.elapsed else 0.0
    lat = sorted(load.latencies)
    if lat:
        result.p50_ms = round(1000 * statistics.median(lat), 1)
        result.p99_ms = round(1000 * lat[int(0.99 * (len(lat) - 1))], 1)
    per = max(result.stored, 1)
    result.ingest_mss_ms = round(1000 * used.mss / per, 2)
    result.ingest_pg_ms = round(1000 * used.pg / per, 2)


def _py_spy(node: Node, output: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy recording *node*'s server in collapsed-stack text (``--py-spy PREFIX``):
    where the CPU goes, by function, for ``sort | uniq``-style reading or flamegraph.pl."""
    if not output or node.process is None:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        sys.exit("py-spy not found: pip install py-spy")
    spy = subprocess.Popen([exe, "record", "--pid", str(node.process.pid), "--rate", "200",
                            "--format", "raw", "--output", output, "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    return spy


def fetch(nodes: list[Node], result: Result, a: argparse.Namespace) -> None:
    """--fetch-rounds of SELECT INBOX + UID FETCH 1:* BODY.PEEK[] on the last node, each
    fetching every body of bob's INBOX (what the other nodes stored included), in one
    session logged in before the CPU is counted (the password hash, scrypt, would be most
    of it: bench/imap_fetch.py times logins)."""
    node = nodes[-1]
    target = Target("mss", "127.0.0.1", node.ports["imap"], RCPTS[1], PASSWORD,
                    node.client_context())
    m = connect(target)
    m.login(target.user, target.password)
    spy = _py_spy(node, a.py_spy and f"{a.py_spy}-{result.setup}-fetch.txt")
    before, t0, deadline = cpu_of(nodes), time.perf_counter(), time.monotonic() + a.max_seconds
    try:
        for _ in range(a.fetch_rounds):
            if time.monotonic() > deadline:
                break
            assert m.select("INBOX", readonly=True)[0] == "OK"
            typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
            assert typ == "OK", data
            result.fetched += sum(1 for d in data if isinstance(d, tuple))
            del data
    finally:
        m.logout()
    elapsed = time.perf_counter() - t0
    used = cpu_of(nodes) - before
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    per = max(result.fetched, 1)
    result.fetch_msg_s = round(result.fetched / elapsed, 1)
    result.fetch_mss_ms = round(1000 * used.mss / per, 3)
    result.fetch_pg_ms = round(1000 * used.pg / per, 3)


class IdleClient:
    """An IMAP IDLE (RFC 2177) on bob's INBOX over implicit TLS, read line by line."""

    def __init__(self, node: Node) -> None:
        raw = socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=30)
        self.sock = node.client_context().wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # greeting
        self._command(f'l LOGIN {RCPTS[1]} "{PASSWORD}"', b"l ")
        self._command("s SELECT INBOX", b"s ")
        self.sock.sendall(b"i IDLE\r\n")
        assert self.file.readline().startswith(b"+"), "IDLE refused"

    def _command(self, line: str, tag: bytes) -> None:
        self.sock.sendall(line.encode() + b"\r\n")
        while not (reply := self.file.readline()).startswith(tag):
            assert reply, "connection closed"
        assert reply.startswith(tag + b"OK"), reply

    def wait_exists(self, count: int, timeout: float) -> bool:
        """True once ``* n EXISTS`` with n >= *count* arrived within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                line = self.file.readline()
            except (TimeoutError, ssl.SSLError, OSError):
                return False
            if not line:
                return False
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"EXISTS" and int(parts[1]) >= count:
                return True
        return False

    def close(self) -> None:
        self.sock.settimeout(5)
        with contextlib.suppress(OSError):
            self.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
        self.sock.close()


def idle(nodes: list[Node], result: Result, a: argparse.Namespace) -> None:
    """Deliveries into the first node, one at a time, seen by an IDLE on the last one."""
    client = IdleClient(nodes[-1])
    ctx = nodes[0].mx_client_context()
    count = _exists(nodes[-1])
    delays: list[float] = []
    deadline = time.monotonic() + a.max_seconds
    try:
        for i in range(a.idle_deliveries):
            if time.monotonic() > deadline:
                break
            load = send_all([nodes[0].ports["mx"]], ctx, [RCPTS[1]],
                            [body(1024, 1_000_000 + i, RCPTS[1])], 1, 60)
            acknowledged = time.perf_counter()  # send_all returns after the 250 and QUIT
            if load.ok != 1:
                result.first_errors += load.errors
                continue
            count += 1
            if client.wait_exists(count, a.idle_timeout):
                delays.append(time.perf_counter() - acknowledged)
            else:
                result.idle_missed += 1
                count = _exists(nodes[-1])  # what the folder holds now
    finally:
        client.close()
    delays.sort()
    if delays:
        result.idle_p50_ms = round(1000 * statistics.median(delays), 1)
        result.idle_p99_ms = round(1000 * delays[int(0.99 * (len(delays) - 1))], 1)


def _exists(node: Node) -> int:
    m = connect(Target("mss", "127.0.0.1", node.ports["imap"], RCPTS[1], PASSWORD,
                       node.client_context()))
    try:
        m.login(RCPTS[1], PASSWORD)
        return int(m.select("INBOX", readonly=True)[1][0] or 0)
    finally:
        m.logout()


def run_setup(name: str, a: argparse.Namespace, tmp: Path) -> Result:
    backend, count = SETUPS[name]
    nodes = start_nodes(tmp / name, backend, count)
    result = Result(name, count)
    try:
        time.sleep(1.0)  # start-up work (indexes, first whitelist load) out of the figures
        ingest(nodes, result, a)
        fetch(nodes, result, a)
        if a.idle_deliveries:
            idle(nodes, result, a)
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()
    return result


# --------------------------------------------------------------------------- the report

COLUMNS = (("msg/s", "msg_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
           ("mss ms/msg", "ingest_mss_ms"), ("pg ms/msg", "ingest_pg_ms"),
           ("sum ms/msg", None), ("fetch msg/s", "fetch_msg_s"),
           ("fetch ms/msg", None), ("idle p50", "idle_p50_ms"), ("idle p99", "idle_p99_ms"),
           ("missed", "idle_missed"))


def ingest_cpu(r: Result) -> float:
    return r.ingest_mss_ms + r.ingest_pg_ms


def fetch_cpu(r: Result) -> float:
    return r.fetch_mss_ms + r.fetch_pg_ms


def table(results: list[Result], a: argparse.Namespace) -> None:
    print(f"\nmedians of {a.repeat} run(s); "
          f"{a.messages} x {a.size_kb} KB over STARTTLS, {a.sessions} sessions; fetch "
          f"{a.fetch_rounds} rounds; IDLE {a.idle_deliveries} deliveries; load average "
          f"{os.getloadavg()[0]:.2f}; CPU in ms per message (ingest: per stored message)")
    print(f"{'setup':<8}" + "".join(f" {title:>12}" for title, _ in COLUMNS))
    for r in results:
        cells = []
        for title, attr in COLUMNS:
            value = (ingest_cpu(r) if title == "sum ms/msg" else fetch_cpu(r)
                     if title == "fetch ms/msg" else getattr(r, attr or ""))
            cells.append(" " + (f"{'-':>12}" if value is None else f"{value:>12.2f}"
                                if isinstance(value, float) else f"{value:>12}"))
        print(f"{r.setup:<8}" + "".join(cells))
    by = {r.setup: r for r in results}
    if "sqlite" in by and "pg" in by and ingest_cpu(by["pg"]):
        for what, cpu in (("ingest", ingest_cpu), ("fetch", fetch_cpu)):
            ratio = cpu(by["sqlite"]) / cpu(by["pg"]) if cpu(by["pg"]) else float("nan")
            print(f"goal: one node on PostgreSQL >= 0.8x SQLite per message ({what}): "
                  f"{ratio:.2f}x {'met' if ratio >= 0.8 else 'NOT met'}")
    if "pg" in by and "pg-2" in by and by["pg"].msg_s:
        ratio = by["pg-2"].msg_s / by["pg"].msg_s
        print(f"goal: two nodes >= one node's msg/s: {ratio:.2f}x "
              f"{'met' if ratio >= 1.0 else 'NOT met'}")
    for r in results:
        if r.errors or r.idle_missed or r.stored != r.accepted:
            print(f"{r.setup}: {r.errors} refused, {r.stored} stored of {r.accepted} "
                  f"accepted, {r.idle_missed} IDLE wake-ups missed; {r.first_errors[:3]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setups", default="sqlite,pg,pg-2",
                    help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--size-kb", type=float, default=5)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--fetch-rounds", type=int, default=5)
    ap.add_argument("--idle-deliveries", type=int, default=20)
    ap.add_argument("--idle-timeout", type=float, default=10.0,
                    help="seconds a delivery may take to wake the IDLE")
    ap.add_argument("--max-seconds", type=float, default=300, help="bound on each phase")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every set-up, interleaved; "
                    "the table shows medians (a shared machine's load moves the figures)")
    ap.add_argument("--py-spy", metavar="PREFIX", help="record the first node's server with "
                    "py-spy: PREFIX-<setup>-ingest.txt, and the last one's during the fetch: "
                    "PREFIX-<setup>-fetch.txt (collapsed stacks)")
    a = ap.parse_args()
    names = [n for n in a.setups.split(",") if n]
    unknown = set(names) - set(SETUPS)
    if unknown:
        sys.exit(f"unknown set-up(s): {', '.join(sorted(unknown))}")
    if min(a.messages, a.sessions, a.fetch_rounds, a.repeat) < 1 or a.messages > 100_000:
        sys.exit("--messages (1..100000), --sessions, --fetch-rounds and --repeat must be "
                 "positive")
    runs: dict[str, list[Result]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="mss-cluster-bench-") as tmp:
        for rep in range(a.repeat):  # interleaved: each set-up sees the machine's load
            for name in names:
                result = run_setup(name, a, Path(tmp) / f"r{rep}")
                print(json.dumps(result.__dict__))
                runs[name].append(result)
    table([median_of(results) for results in runs.values()], a)


def median_of(results: list[Result]) -> Result:
    """One set-up's runs as one: the median of each figure, the sums of the counts."""
    out = Result(results[0].setup, results[0].nodes)
    for name, value in results[0].__dict__.items():
        values = [getattr(r, name) for r in results]
        if name in ("accepted", "errors", "stored", "fetched", "idle_missed"):
            setattr(out, name, sum(values))
        elif name == "first_errors":
            out.first_errors = [e for r in results for e in r.first_errors]
        elif isinstance(value, float) or value is None:
            known = [v for v in values if v is not None]
            setattr(out, name, round(statistics.median(known), 3) if known else None)
    return out


if __name__ == "__main__":
    main()
