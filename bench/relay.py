#!/usr/bin/env python3
"""Relay benchmark (a script, not a test): messages/s from submission on operator A to
stored in operator B over mutual TLS.

Two real nodes (127.0.0.2 and 127.0.0.3, test-PKI certificates, MX records from a DNS
server on loopback: tests/outbound_pair.py), N concurrent submission sessions on A
(STARTTLS + AUTH once per session, then messages one after another, as a mail client or an
institution's server does; ``--reconnect``: a new connection, TLS handshake and scrypt AUTH
per message), messages of S KB to B's mailboxes. The clock runs from the first submission
to the last message stored in B; the submission rate alone is printed too. Bounded by
--messages and --max-seconds.

    .venv/bin/python bench/relay.py --sessions 20 --messages 1000 --size-kb 5
"""

from __future__ import annotations

import argparse
import json
import smtplib
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from mss import db  # noqa: E402
from mss.config import load_config  # noqa: E402
from tests.node import PASSWORD, Node  # noqa: E402
from tests.outbound_pair import A_DOMAIN, B_DOMAIN, make_pair, message  # noqa: E402


def stored(node: Node) -> int:
    engine = db.make_engine(load_config(node.config).database_url, writer=False)
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(db.messages)).scalar() or 0)
    engine.dispose()
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size-kb", type=float, default=5)
    ap.add_argument("--per-destination", type=int, default=20,
                    help="delivery.max_per_destination on A (all mail goes to one domain)")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--drain", action="store_true",
                    help="B down while submitting, then started: times the queue drain alone")
    ap.add_argument("--reconnect", action="store_true",
                    help="a new connection (TLS handshake, scrypt AUTH) for every message")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-relay-") as tmp:
        pair = make_pair(Path(tmp), sending_limits=False, lease=300.0,
                         max_concurrency=max(20, args.per_destination),
                         max_per_destination=args.per_destination, poll_interval=0.05,
                         batch=50)
        a, b = pair.nodes()
        a.start()
        if not args.drain:
            b.start()
        try:
            rcpts = [f"{u}@{B_DOMAIN}" for u in ("alice", "bob", "secretariat")]
            size = int(args.size_kb * 1024)
            payloads = [message(f"alice@{A_DOMAIN}", rcpts[i % 3], f"relay{i}x{time.time_ns()}",
                                size) for i in range(args.messages)]
            ctx = ssl.create_default_context(cafile=str(pair.pki / "root.crt"))
            ctx.check_hostname = False
            lock = threading.Lock()
            state = {"next": 0, "ok": 0, "err": 0}
            errors: list[str] = []
            stop_at = time.monotonic() + args.max_seconds
            base = 0 if args.drain else stored(b)

            def session() -> smtplib.SMTP:
                client = smtplib.SMTP(a.host, a.ports["submission"], timeout=60)
                client.starttls(context=ctx)
                client.login(f"alice@{A_DOMAIN}", PASSWORD)
                return client

            def worker() -> None:
                client: smtplib.SMTP | None = None
                while True:
                    with lock:
                        i = state["next"]
                        if i >= args.messages or time.monotonic() > stop_at:
                            break
                        state["next"] += 1
                    try:
                        client = client or session()
                        client.sendmail(f"alice@{A_DOMAIN}", [rcpts[i % 3]], payloads[i])
                        with lock:
                            state["ok"] += 1
                    except (OSError, smtplib.SMTPException) as exc:
                        client = None  # a new session for the next message
                        with lock:
                            state["err"] += 1
                            if len(errors) < 5:
                                errors.append(repr(exc))
                    if args.reconnect and client is not None:
                        client.quit()
                        client = None
                if client is not None:
                    client.quit()

            t0 = time.time()
            threads = [threading.Thread(target=worker) for _ in range(args.sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            submitted = time.time() - t0
            if args.drain:  # every row deferred once; make them due and let B in
                a.cli("queue", "retry", "--all")
                b.start()
                t0 = time.time()
            arrived = 0
            while time.monotonic() < stop_at:
                arrived = stored(b) - base
                if arrived >= state["ok"]:
                    break
                time.sleep(0.1)
            elapsed = time.time() - t0
        finally:
            pair.close(graceful=True)
        print(json.dumps({
            "sessions": args.sessions, "messages": args.messages, "size_kb": args.size_kb,
            "per_destination": args.per_destination, "reconnect": args.reconnect,
            "submitted": state["ok"],
            "errors": state["err"], "stored_in_b": arrived,
            "submission_msg_s": round(state["ok"] / submitted, 1),
            "drain": args.drain, "end_to_end_s": round(elapsed, 2),
            "relay_msg_s": round(arrived / elapsed, 1), "first_errors": errors}))


if __name__ == "__main__":
    main()
