"""RSS of ``mss serve`` holding idle pre-auth connections (issue 20 #4).

Starts a node of its own (tests/node.py, the code of the repository this script lives in),
opens ``--connections`` connections to one listener that read the greeting and then stay
silent, spread over source addresses 127.0.0.10, .11, ... (``--per-address`` each), and
prints the resident set size of the serving process before and after, and how many
connections were served (greeting) or refused (421 / BYE / closed).

    python bench/idle_connections.py                       # imap, 2000, caps raised to 2000
    python bench/idle_connections.py --default-caps        # the listener's default caps
    python bench/idle_connections.py --listener submission

Bounded: at most --connections sockets, each step with a timeout.
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.node import Node, make_node  # noqa: E402

GREETING = {"imap": b"* OK", "submission": b"220", "mx": b"220", "relay": b"220"}


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) if found else 0


def raise_caps(node: Node, listener: str, count: int) -> None:
    text = node.config.read_text()
    keys = (f"max_connections = {count}\nmax_connections_per_address = {count}\n"
            f"max_preauth = {count}\nmax_preauth_per_address = {count}\n")
    node.config.write_text(text.replace(f"[listeners.{listener}]\n",
                                        f"[listeners.{listener}]\n{keys}", 1))


def open_idle(node: Node, listener: str, count: int, per_address: int
              ) -> tuple[list[socket.socket], int, int]:
    socks: list[socket.socket] = []
    served = refused = 0
    for index in range(count):
        source = f"127.0.{10 + index // per_address // 250}.{(index // per_address) % 250 + 1}"
        sock = socket.create_connection(("127.0.0.1", node.ports[listener]), timeout=10,
                                        source_address=(source, 0))
        try:
            line = sock.recv(200)
        except OSError:
            line = b""
        if line.startswith(GREETING[listener]):
            served += 1
            socks.append(sock)
        else:
            refused += 1
            sock.close()
    return socks, served, refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--per-address", type=int, default=20)
    parser.add_argument("--listener", default="imap", choices=sorted(GREETING))
    parser.add_argument("--default-caps", action="store_true",
                        help="keep the listener's default caps (else raised to --connections)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections * 2 + 256), hard))
    with tempfile.TemporaryDirectory(prefix="mss-bench-idle-") as tmp:
        node = make_node(Path(tmp), with_whitelist=False,
                         extra_config="\n[imap]\npreauth_timeout = 600.0\n")
        text = node.config.read_text()  # [smtp] exists: SMTP clients idle 600 s too
        node.config.write_text(text.replace("[smtp]\n", "[smtp]\nsession_timeout = 600.0\n", 1))
        if not args.default_caps:
            raise_caps(node, args.listener, args.connections)
        node.start()
        assert node.process is not None
        try:
            time.sleep(1.0)
            before = rss_kib(node.process.pid)
            started = time.monotonic()
            socks, served, refused = open_idle(node, args.listener, args.connections,
                                               args.per_address)
            elapsed = time.monotonic() - started
            time.sleep(2.0)
            after = rss_kib(node.process.pid)
            print(f"listener {args.listener}: {args.connections} connections from "
                  f"{-(-args.connections // args.per_address)} addresses "
                  f"({args.per_address} each) in {elapsed:.1f} s; "
                  f"caps {'default' if args.default_caps else 'raised'}")
            print(f"served {served}, refused {refused}")
            print(f"RSS before {before / 1024:.1f} MiB, with the idle connections "
                  f"{after / 1024:.1f} MiB, +{(after - before) / max(served, 1):.1f} KiB "
                  f"per served connection")
            for sock in socks:
                sock.close()
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
