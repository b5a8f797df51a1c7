"""A retention round on a loaded store (issue 16 part 5): how long the rounds take, and that
a folder the rules keep costs nothing however large it is.

Makes a node of its own (tests/node.py, not served), stores ``--trash`` messages of
``--size`` bytes in alice's Trash and ``--inbox`` in her INBOX (sealed as deliveries are,
inserted through the mail store), then runs rounds of the rules "Trash after 30 days,
everything else kept" as of 31 days later (the round function with its clock): a dry run
(counts), the real round (expunge, ``[retention] batch`` per transaction, one audit record
each), and a second round with nothing left to expire (the cost of an idle hourly round).

    python bench/retention.py --trash 20000 --inbox 20000 --size 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.node import DOMAIN, make_node  # noqa: E402

RULES = """
[retention]
interval = 0
batch = {batch}

[[retention.rules]]
folder = "\\\\Trash"
days = 30

[[retention.rules]]
days = 0
"""


def fill(config: Path, folder_name: str, count: int, size: int) -> None:
    from mss.app import open_app
    from mss.mailstore import deliveries, folders, mailboxes, messages

    app = open_app(config)
    body = b"Subject: retention bench\r\n\r\n" + b"x" * max(0, size - 30)
    try:
        with app.reader.connect() as conn:
            alice = mailboxes.require_mailbox(conn, f"alice@{DOMAIN}")
            folder = folders.folder_by_name(conn, app.keyring, alice.id, folder_name)
            assert folder is not None
        now = time.time()
        for start in range(0, count, 1000):
            sources = []
            for _ in range(min(1000, count - start)):
                c = deliveries.seal_local(app.keyring, alice.id, alice.address, body)
                sources.append(messages.CopySource(c.message_id, c.sealed, c.size, (), now))
            with app.engine.begin() as conn:
                messages.copy_messages(conn, folder.id, alice.id, sources, [])
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trash", type=int, default=10000, help="messages that expire")
    parser.add_argument("--inbox", type=int, default=10000, help="messages kept")
    parser.add_argument("--size", type=int, default=10000, help="bytes per message")
    parser.add_argument("--batch", type=int, default=100, help="[retention] batch")
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    args = parser.parse_args()

    from mss.app import open_app
    from mss.mailstore.retention import DAY, run_round

    with tempfile.TemporaryDirectory() as tmp:
        node = make_node(Path(tmp), backend=args.backend,
                         extra_config=RULES.format(batch=args.batch))
        started = time.perf_counter()
        fill(node.config, "Trash", args.trash, args.size)
        fill(node.config, "INBOX", args.inbox, args.size)
        print(f"stored {args.trash} + {args.inbox} messages of {args.size} bytes "
              f"in {time.perf_counter() - started:.1f} s ({args.backend})")
        app = open_app(node.config)
        try:
            at = time.time() + 31 * DAY
            for label, dry in (("dry run", True), ("round", False), ("idle round", False)):
                started = time.perf_counter()
                report = run_round(app.engine, app.reader, app.keyring, app.config.retention,
                                   at, dry_run=dry, actor="bench")
                took = time.perf_counter() - started
                rate = f", {report.messages / took:,.0f} messages/s" if report.messages else ""
                print(f"{label:>10}: {report.messages} messages, {report.bytes / 1e6:.1f} MB "
                      f"in {took * 1000:,.1f} ms{rate}")
        finally:
            app.close()


if __name__ == "__main__":
    main()
