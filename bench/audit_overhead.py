#!/usr/bin/env python3
"""Audit overhead benchmark (a script, not a test).

1. The SMTP ingest benchmark twice on fresh nodes: without an audit destination, then
   shipping every record to a real rsyslog over mutual TLS (RFC 5425); prints both rates and
   the overhead, and checks that every record reached the receiver.
2. ``mss audit verify`` over N generated records (default 1 000 000): time and peak RSS.

    .venv/bin/python bench/audit_overhead.py --messages 2000 --verify-records 1000000
Loopback only; every loop bounded.
"""

from __future__ import annotations

import argparse
import json
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.smtp_ingest import (  # noqa: E402
    DOMAIN,
    MSS,
    SENDER,
    body,
    free_port,
    setup,
    wait_listening,
)
from tests import rsyslog  # noqa: E402
from trustspace.pki import issue_certificate  # noqa: E402


def ingest(config: Path, port: int, messages: int, sessions: int, size: int) -> float:
    rcpts = [f"bench{i % 10 + 1}@{DOMAIN}" for i in range(messages)]
    payloads = [body(size, i, rcpts[i]) for i in range(messages)]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    pki = config.parent / "pki"  # the client certificate the MX requires (setup issued it)
    ctx.load_cert_chain(pki / "bench-operator.crt", pki / "bench-operator.key")
    lock = threading.Lock()
    state = {"next": 0}

    def worker() -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= messages:
                    return
                state["next"] += 1
            client = smtplib.SMTP("127.0.0.1", port, timeout=60,
                                  local_hostname="mx.operator-a.fr")
            client.starttls(context=ctx)
            client.sendmail(SENDER, [rcpts[i]], payloads[i])
            client.quit()

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return messages / (time.time() - t0)


def run_node(base: Path, messages: int, sessions: int, size: int, ship: bool) -> dict[str, object]:
    config, ports = setup(base, 10)
    receiver = None
    if ship:
        pki = config.parent / "pki"
        cert, key = issue_certificate(pki, "receiver", ["audit.bench"])
        receiver = rsyslog.Receiver(base / "rsyslog", free_port(), pki / "ca.crt", cert, key)
        receiver.start()
        config.write_text(config.read_text() + f'''
[audit]
ship_interval = 0.2

[[audit.destinations]]
name = "bench"
host = "127.0.0.1"
port = {receiver.port}
server_name = "audit.bench"
''')
    server = subprocess.Popen([*MSS, "--config", str(config), "serve"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(ports["mx"])
        rate = ingest(config, ports["mx"], messages, sessions, size)
        result: dict[str, object] = {"ship": ship, "accepted_msg_s": round(rate, 1)}
        if receiver is not None:
            out = subprocess.run([*MSS, "--config", str(config), "audit", "list", "--json"],
                                 capture_output=True, text=True, cwd=REPO, check=True).stdout
            expected = {row["id"] for row in json.loads(out)}  # one JSON list
            expected.discard(max(expected))  # the audit.read record of that listing
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                got = {m.sequence for m in receiver.messages()}
                if expected <= got:
                    break
                time.sleep(0.5)
            result["shipped"] = len(expected & got)
            result["records"] = len(expected)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        if receiver is not None:
            receiver.stop()
    return result


def verify_bench(base: Path, records: int) -> dict[str, object]:
    """Fill a journal with *records* chained rows (fast path: raw inserts), then verify."""
    from audit.events import Event
    from audit.journal import AuditRecord, append

    config, _ = setup(base, 1)
    from mss.app import open_app

    app = open_app(config)
    t0 = time.time()
    batch = 20000
    done = 0
    while done < records:
        n = min(batch, records - done)
        with app.engine.begin() as conn:
            append(conn, [AuditRecord(Event.SMTP_CONNECT, actor=f"127.0.0.{i % 250}",
                                      remote_addr="127.0.0.1", session=f"s{done + i}")
                          for i in range(n)])
        done += n
    fill = time.time() - t0
    app.close()
    # the real command, reporting its own peak RSS on stderr when it exits
    probe = ("import resource, sys\n"
             "from mss.cli import main\n"
             "try:\n    main(sys.argv[1:])\n"
             "finally:\n"
             "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", probe, "--config", str(config), "audit",
                           "verify"], capture_output=True, text=True, cwd=REPO)
    elapsed = time.time() - t0
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    return {"records": records, "fill_s": round(fill, 1), "verify_s": round(elapsed, 1),
            "verify_rc": proc.returncode, "verify_out": proc.stdout.strip()[:200],
            "peak_rss_mb": round(rss_kb / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size-kb", type=float, default=5)
    ap.add_argument("--verify-records", type=int, default=1_000_000)
    args = ap.parse_args()
    if not rsyslog.available():
        sys.exit("rsyslog with rsyslog-gnutls is needed (make system-deps as root)")
    size = int(args.size_kb * 1024)
    with tempfile.TemporaryDirectory(prefix="mss-audit-bench-") as tmp:
        off = run_node(Path(tmp) / "off", args.messages, args.sessions, size, ship=False)
        on = run_node(Path(tmp) / "on", args.messages, args.sessions, size, ship=True)
        overhead = 1 - float(on["accepted_msg_s"]) / float(off["accepted_msg_s"])  # type: ignore[arg-type]
        print(json.dumps({"shipping_off": off, "shipping_on": on,
                          "overhead_pct": round(100 * overhead, 1)}))
        if args.verify_records:
            print(json.dumps({"verify": verify_bench(Path(tmp) / "verify",
                                                     args.verify_records)}))


if __name__ == "__main__":
    main()
