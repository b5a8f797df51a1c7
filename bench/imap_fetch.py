#!/usr/bin/env python3
"""IMAP fetch/search benchmark (a script, not a test).

Creates a throw-away node (tests/node.py: ``mss init``, mailboxes alice and bob), starts
``mss serve``, fills bob's INBOX with --messages messages of --size-kb KB, a few of them
(every --marker-every-th) carrying a rare word in the body: by default (``--fill import``)
a generated mbox loaded with ``mss mailbox import`` (one transaction: 100 000 messages in
a few minutes), or (``--fill smtp``) over SMTP submission (alice -> bob, --sessions
connections, bounded). Then, each round in a FRESH session (connect + STARTTLS + LOGIN),
times:

    SELECT INBOX (--selects times: the median)
    UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)
    UID FETCH 1:* BODY.PEEK[]
    UID SEARCH TEXT "<word>"

and prints medians as one JSON line and as plain text, with the server's CPU time
(user + system, its worker processes included) for each operation: on this shared machine
the CPU time says more than the wall time. The server's VmRSS/VmHWM are read while the
last session is still logged in.

Side by side with Dovecot (../shared/anchors/measure_postfix_dovecot.sh start + imap fills
bench2@bench.mssante.fr on 127.0.0.1:10143 with the same shape of mailbox)::

    .venv/bin/python bench/imap_fetch.py --rounds 3 \\
        --compare-port 10143 --compare-user bench2@bench.mssante.fr --compare-password bench2

runs the rounds interleaved (mss, dovecot, mss, dovecot, ...) and prints the ratios.
``--port/--user/--password`` instead of creating a node measures any running server (e.g.
Dovecot alone). The anchor's own client (anchors/anchor_imap_bench.py) can point at the mss
node too: the script prints the command line while the node is up (``--hold`` keeps it up).
``--py-spy OUT.svg`` records a flame graph of the server process during the timed rounds.
Loopback only.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.node import CHILD_ENV, DOMAIN, MSS, PASSWORD, Node, make_node  # noqa: E402

OPS = ("login", "select", "fetch_envelope", "fetch_body", "search_text")
WORDS = ("patient", "consultation", "ordonnance", "resultat", "analyse", "radiologie",
         "cardiologie", "traitement", "suivi", "compte", "rendu", "dossier", "medical")


@dataclass
class Target:
    label: str
    host: str
    port: int
    user: str
    password: str
    ctx: ssl.SSLContext
    pid: int | None = None  # the server process, for its CPU time and memory


def body_text(i: int, size: int, marker: str | None) -> str:
    """A deterministic plain-text body of about *size* bytes."""
    words: list[str] = []
    n = 0
    k = i
    while n < size:
        w = WORDS[k % len(WORDS)]
        k = (k * 7 + 3) % 1009
        words.append(w)
        n += len(w) + 1
    if marker:
        words.insert(len(words) // 2, marker)
    lines = [" ".join(words[j:j + 12]) for j in range(0, len(words), 12)]
    return "\r\n".join(lines) + "\r\n"


def fill(node: Node, count: int, size: int, sessions: int, marker: str, every: int,
         max_seconds: float) -> int:
    """Submit *count* messages alice -> bob over *sessions* connections; bounded."""
    sender, rcpt = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    deadline = time.monotonic() + max_seconds
    sent = [0] * sessions
    errors: list[str] = []

    def worker(w: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=60) as c:
                c.starttls(context=node.client_context())
                c.login(sender, PASSWORD)
                for i in range(w, count, sessions):
                    if time.monotonic() > deadline:
                        return
                    m = EmailMessage()
                    m["From"], m["To"] = sender, rcpt
                    m["Subject"] = f"bench message {i}"
                    m["Message-ID"] = make_msgid(f"b{i}", DOMAIN)
                    m.set_content(body_text(i, size, marker if i % every == 0 else None))
                    c.send_message(m)
                    sent[w] += 1
        except (OSError, smtplib.SMTPException) as e:
            errors.append(f"worker {w}: {e!r}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 60)
    if errors:
        print("fill errors:", *errors[:5], sep="\n  ", file=sys.stderr)
    return sum(sent)


def bench_message(i: int, size: int, marker: str | None) -> bytes:
    sender, rcpt = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    m = EmailMessage()
    m["From"], m["To"] = sender, rcpt
    m["Subject"] = f"bench message {i}"
    m["Message-ID"] = make_msgid(f"b{i}", DOMAIN)
    m["Date"] = formatdate(1_780_000_000 + i * 60)
    m.set_content(body_text(i, size, marker))
    return m.as_bytes(policy=SMTP)


def fill_import(node: Node, count: int, size: int, marker: str, every: int,
                keep: Path | None = None) -> int:
    """Write *count* messages as an mbox (mboxrd; the bodies have no From_ lines) and load
    it with ``mss mailbox import`` (one transaction): the fast fill. *keep*: the mbox is
    written there once and used again by later runs (generating 100 000 messages takes
    minutes; importing them, one)."""
    path = keep or node.data_dir.parent / "fill.mbox"
    if keep is None or not keep.exists():
        with path.open("wb") as out:
            for i in range(count):
                data = bench_message(i, size, marker if i % every == 0 else None)
                out.write(b"From alice@%s Thu Dec  3 10:00:00 2026\n" % DOMAIN.encode())
                out.write(data.replace(b"\r\n", b"\n"))
                out.write(b"\n")
    subprocess.run([*MSS, "--config", str(node.config), "mailbox", "import", f"bob@{DOMAIN}",
                    str(path)], check=True, timeout=3600, env=CHILD_ENV, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    if keep is None:
        path.unlink()
    return count


def _tree(pid: int) -> list[int]:
    """*pid* and its descendants (the serve process and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def server_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by the server's processes."""
    if pid is None:
        return 0.0
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5))
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def server_memory(pid: int | None) -> dict[str, int]:
    """VmRSS and VmHWM (KB) summed over the server's processes."""
    out = {"vmrss_kb": 0, "vmhwm_kb": 0}
    for p in _tree(pid) if pid is not None else []:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        out[key.lower() + "_kb"] += int(value.split()[0])
        except OSError:
            pass
    return out


def connect(t: Target) -> imaplib.IMAP4:
    """A STARTTLS session (every target: the node's imap listener, --port, --compare-port)."""
    m = imaplib.IMAP4(t.host, t.port, timeout=600)
    m.starttls(ssl_context=t.ctx)
    return m


def one_round(t: Target, marker: str, pid: int | None = None, selects: int = 1
              ) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Login, SELECT, envelope fetch, body fetch, body search; each timed, fresh session.
    Returns wall seconds and server CPU seconds per operation (CPU: *pid*'s, when known)."""
    sec: dict[str, float] = {}
    cpu: dict[str, float] = {}
    info: dict[str, int] = {}
    c0, t0 = server_cpu(pid), time.perf_counter()
    m = connect(t)
    m.login(t.user, t.password)
    sec["login"], cpu["login"] = time.perf_counter() - t0, server_cpu(pid) - c0

    def timed(op: str, *call: str) -> list[object]:
        c0, t0 = server_cpu(pid), time.perf_counter()
        typ, data = (m.select(call[1]) if call[0] == "SELECT" else m.uid(*call))
        sec[op], cpu[op] = time.perf_counter() - t0, server_cpu(pid) - c0
        assert typ == "OK", data
        return data

    try:
        wall, used = [], []
        for _ in range(selects):  # SELECT is ~1 ms: the median of a few in this session
            data = timed("select", "SELECT", "INBOX")
            wall.append(sec["select"])
            used.append(cpu["select"])
        sec["select"], cpu["select"] = statistics.median(wall), statistics.median(used)
        info["exists"] = int(data[0] or 0)  # type: ignore[call-overload]
        data = timed("fetch_envelope", "FETCH", "1:*",
                     "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
        info["envelope_items"] = sum(1 for d in data if d is not None and d != b")")
        data = timed("fetch_body", "FETCH", "1:*", "(BODY.PEEK[])")
        info["body_bytes"] = sum(len(d[1]) for d in data if isinstance(d, tuple))
        del data
        data = timed("search_text", "SEARCH", "TEXT", f'"{marker}"')
        hits = data[0] if data else None
        info["search_hits"] = len(hits.split()) if isinstance(hits, bytes) else 0
        info.update(server_memory(pid))  # while the session is still logged in
    finally:
        m.logout()
    return sec, cpu, info


def report(results: dict[str, dict[str, list[float]]], cpus: dict[str, dict[str, list[float]]],
           cold: dict[str, dict[str, float]], infos: dict[str, dict[str, int]],
           load: tuple[float, float, float], rounds: int) -> None:
    med = {label: {op: statistics.median(v) for op, v in ops.items() if v}
           for label, ops in results.items()}
    med_cpu = {label: {op: statistics.median(v) for op, v in ops.items() if v}
               for label, ops in cpus.items()}
    out: dict[str, object] = {"rounds": rounds, "seconds": results, "median_s": med,
                              "server_cpu_s": cpus, "median_cpu_s": med_cpu,
                              "cold_round_s": cold, "info": infos, "loadavg_start": load,
                              "loadavg_end": os.getloadavg()}
    labels = list(results)
    if len(labels) == 2:
        a, b = labels
        out["ratio"] = {op: med[a][op] / med[b][op] for op in OPS
                        if med[b].get(op) and op in med[a]}
    print(json.dumps(out))
    print()
    print(f"medians over {rounds} fresh sessions (seconds); load average "
          f"{load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"{'operation':<16}" + "".join(f"{lab:>12}{lab[:6] + ' cpu':>12}" for lab in labels)
          + (f"{'ratio':>10}" if len(labels) == 2 else ""))
    for op in OPS:
        row = f"{op:<16}" + "".join(f"{med[lab].get(op, float('nan')):>12.4f}"
                                    f"{med_cpu[lab].get(op, float('nan')):>12.4f}"
                                    for lab in labels)
        if len(labels) == 2 and "ratio" in out:
            r = out["ratio"].get(op)  # type: ignore[attr-defined]
            row += f"{r:>10.3f}" if r is not None else ""
        print(row)
    for lab in labels:
        print(f"{lab}: {infos.get(lab)}; first (cold) round: {cold.get(lab)}")


def do_fill(a: argparse.Namespace, node: Node) -> int:
    if a.fill == "import":
        return fill_import(node, a.messages, a.size_kb * 1024, a.marker, a.marker_every,
                           a.mbox)
    return fill(node, a.messages, a.size_kb * 1024, a.sessions, a.marker, a.marker_every,
                a.max_seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--size-kb", type=int, default=5)
    ap.add_argument("--fill", choices=("import", "smtp"), default="import",
                    help="mss mailbox import of a generated mbox (fast), or SMTP submission")
    ap.add_argument("--mbox", type=Path, help="--fill import: the generated mbox kept at "
                    "this path and used again when it exists (same --messages)")
    ap.add_argument("--sessions", type=int, default=8, help="SMTP connections for the fill")
    ap.add_argument("--marker", default="ANCHORMARKER", help="the rare word searched")
    ap.add_argument("--marker-every", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--selects", type=int, default=5, help="SELECTs per round (median)")
    ap.add_argument("--warmup", type=int, default=1, help="rounds first, not counted (the "
                    "first fills the envelope cache; Dovecot's warm figures are compared)")
    ap.add_argument("--max-seconds", type=float, default=900, help="bound on the fill")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, help="measure a running server instead of a node")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--label", default="mss")
    ap.add_argument("--compare-port", type=int, help="interleave rounds with this server "
                    "(STARTTLS, certificate not checked), e.g. Dovecot on 10143")
    ap.add_argument("--compare-user", default="bench2@bench.mssante.fr")
    ap.add_argument("--compare-password", default="bench2")
    ap.add_argument("--compare-label", default="dovecot")
    ap.add_argument("--metrics", choices=("on", "off", "compare"), default="on",
                    help="metrics.enabled of the node (off: the baseline of their overhead); "
                    "compare: a second node with metrics off, filled alike, rounds interleaved")
    ap.add_argument("--hold", type=float, default=0, help="keep the node up N s at the end")
    ap.add_argument("--py-spy", metavar="OUT.svg", help="record the mss server with py-spy "
                    "(`pip install py-spy`, needs ptrace rights) during the timed rounds")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback only")
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE

    node: Node | None = None
    baseline: Node | None = None  # --metrics compare
    tmp: tempfile.TemporaryDirectory[str] | None = None
    targets: list[Target] = []
    try:
        if a.port:
            targets.append(Target(a.label, a.host, a.port, a.user or "", a.password or "",
                                  insecure))
        else:
            tmp = tempfile.TemporaryDirectory(prefix="mss-imap-bench-")
            node = make_node(Path(tmp.name), sending_limits=False,  # a free port on each
                             extra_config="\n[metrics]\nenabled = false\n"
                             if a.metrics == "off" else "")
            node.start()
            if a.metrics == "compare":  # issue 17: the same, metrics off, measured alike
                baseline = make_node(Path(tmp.name) / "off", sending_limits=False,
                                     extra_config="\n[metrics]\nenabled = false\n")
                baseline.start()
                do_fill(a, baseline)
                targets.append(Target("metrics-off", a.host, baseline.ports["imap"],
                                      f"bob@{DOMAIN}", PASSWORD, baseline.client_context(),
                                      baseline.process.pid if baseline.process else None))
                a.label = "metrics-on"
            t0 = time.perf_counter()
            n = do_fill(a, node)
            dt = time.perf_counter() - t0
            print(f"filled {n} messages in {dt:.1f} s ({n / dt:.0f} msg/s)", file=sys.stderr)
            port = node.ports["imap"]  # STARTTLS, as Dovecot's 10143 and --port
            targets.insert(0, Target(a.label, a.host, port, f"bob@{DOMAIN}", PASSWORD,
                                     node.client_context(),
                                     node.process.pid if node.process else None))
            print("anchor client against this node: python3 ../shared/anchors/"
                  f"anchor_imap_bench.py --port {port} --user bob@{DOMAIN} "
                  f"--password '{PASSWORD}' --marker {a.marker} --server-comm python3",
                  file=sys.stderr)
        if a.compare_port:
            targets.append(Target(a.compare_label, a.host, a.compare_port, a.compare_user,
                                  a.compare_password, insecure))
        cold: dict[str, dict[str, float]] = {}
        for t in targets:  # the first round of each: envelope caches filled (reported apart)
            for _ in range(a.warmup):
                cold.setdefault(t.label, one_round(t, a.marker, t.pid, a.selects)[0])
        spy: subprocess.Popen[bytes] | None = None
        if a.py_spy and node is not None and node.process is not None:
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            if not Path(exe).exists():
                sys.exit("py-spy not found: pip install py-spy")
            spy = subprocess.Popen([exe, "record", "--pid", str(node.process.pid), "--rate",
                                    "200", "--output", a.py_spy, "--nonblocking",
                                    "--format", "raw" if a.py_spy.endswith(".txt")
                                    else "flamegraph"])
        load = os.getloadavg()
        results: dict[str, dict[str, list[float]]] = {t.label: {op: [] for op in OPS}
                                                      for t in targets}
        cpus: dict[str, dict[str, list[float]]] = {t.label: {op: [] for op in OPS}
                                                   for t in targets}
        infos: dict[str, dict[str, int]] = {}
        for i in range(a.rounds):  # bounded; interleaved so both see the same load
            for t in targets if i % 2 == 0 else targets[::-1]:  # neither always first
                sec, cpu, info = one_round(t, a.marker, t.pid, a.selects)
                for op, v in sec.items():
                    results[t.label][op].append(v)
                    cpus[t.label][op].append(cpu[op])
                infos[t.label] = info
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes the flame graph and exits
            spy.wait(60)
        report(results, cpus, cold, infos, load, a.rounds)
        if a.hold and node is not None:
            time.sleep(a.hold)
    finally:
        for served in (node, baseline):
            if served is not None and served.process is not None:
                served.stop()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
