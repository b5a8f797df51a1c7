"""Peak RSS of ``mss serve`` for large IMAP APPENDs or SMTP DATA (issue 20 #4: "a 40 MB
APPEND held ~45 MB each").

Starts a node of its own (tests/node.py, the code of the repository this script lives in),
logs in over imaps and APPENDs ``--size`` bytes (a synchronising literal), ``--sessions``
at once; prints the serving process's peak RSS (VmHWM) before and after, per APPEND.

    python bench/append_rss.py --size 40000000 --sessions 1
    python bench/append_rss.py --smtp                 # DATA on the submission listener
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.node import DOMAIN, PASSWORD, Node, make_node  # noqa: E402


def status_kib(pid: int, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(found.group(1)) if found else 0


def append(node: Node, size: int, results: list[bytes]) -> None:
    import socket

    sock = node.client_context().wrap_socket(
        socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=120))
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f'l LOGIN bob@{DOMAIN} "{PASSWORD}"\r\n'.encode())
    while not f.readline().startswith(b"l "):
        pass
    line = b"x" * 998 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * ((size - 16) // len(line))
    sock.sendall(b"a APPEND INBOX {%d}\r\n" % len(body))
    if f.readline().startswith(b"+"):
        sock.sendall(body + b"\r\n")
        while not (reply := f.readline()).startswith(b"a "):
            pass
    else:
        reply = b"refused"
    results.append(reply.strip())
    sock.close()


def submit(node: Node, size: int, results: list[bytes]) -> None:
    import smtplib

    line = b"x" * 998 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * ((size - 16) // len(line))
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=120) as client:
        client.starttls(context=node.client_context())
        client.login(f"alice@{DOMAIN}", PASSWORD)
        try:
            client.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], body)
            results.append(b"250")
        except smtplib.SMTPException as exc:
            results.append(repr(exc).encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40_000_000)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--smtp", action="store_true", help="SMTP DATA instead of APPEND")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mss-bench-append-") as tmp:
        node = make_node(Path(tmp), with_whitelist=False, sending_limits=False)
        node.start()
        assert node.process is not None
        try:
            time.sleep(1.0)
            pid = node.process.pid
            before, hwm_before = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
            results: list[bytes] = []
            work = submit if args.smtp else append
            threads = [threading.Thread(target=work, args=(node, args.size, results))
                       for _ in range(args.sessions)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(300)
            elapsed = time.monotonic() - started
            hwm = status_kib(pid, "VmHWM")
            kind = "DATA" if args.smtp else "APPEND"
            print(f"{args.sessions} x {kind} of {args.size / 1e6:.0f} MB in {elapsed:.1f} s: "
                  f"{[r.decode()[:40] for r in results]}")
            print(f"RSS before {before / 1024:.1f} MiB (peak {hwm_before / 1024:.1f}); peak "
                  f"after {hwm / 1024:.1f} MiB: +{(hwm - hwm_before) / 1024 / args.sessions:.1f}"
                  f" MiB each; RSS now {status_kib(pid, 'VmRSS') / 1024:.1f} MiB")
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
