"""Export and import of a mailbox (issue 16 part 6): MB/s and the peak RSS of each command.

A node of its own (tests/node.py, the code of the repository this script lives in; nothing
served), a mailbox filled by importing a generated mbox of ``--messages`` messages (sizes
from 1 KB to ``--max-kb``, a tenth of them with a body line starting ``From ``), then, each
as a real ``python -m mss`` process whose rusage is read by wait4 (ru_maxrss: its peak RSS):

- ``mss mailbox import`` of that plain mbox;
- ``mss mailbox export --format mbox`` and ``--format maildir`` (age, one X25519 recipient);
- ``mss mailbox import`` of each archive into a new mailbox (``--identity``).

MB/s counts the messages' bytes (plaintext). Run it at two sizes to see the memory stay
flat: ``python bench/export.py --messages 10000`` and ``--messages 1000``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.node import CHILD_ENV, DOMAIN, MSS, PASSWORD, REPO, make_node  # noqa: E402


def make_mbox(path: Path, count: int, max_kb: int, seed: int = 16) -> int:
    """A plain mbox of *count* messages; the messages' total bytes."""
    rng = random.Random(seed)
    total = 0
    line = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t\r\n"
    with path.open("wb") as out:
        for i in range(count):
            size = min(int(4096 * rng.paretovariate(1.1)), max_kb * 1024)
            head = (f"From: Alice <alice@{DOMAIN}>\r\nTo: <bob@{DOMAIN}>\r\nSubject: bench "
                    f"{i}\r\nMessage-ID: <bench{i}@{DOMAIN}>\r\nDate: Thu, 3 Dec 2026 "
                    "08:00:00 +0000\r\n\r\n").encode()
            body = line * (size // len(line))
            if i % 10 == 0:
                body += b">From a quoted line (mboxrd escapes it once more)\r\n"
            message = head + body
            escaped = message.replace(b"\r\n>From ", b"\r\n>>From ")
            when = time.asctime(time.gmtime(1_760_000_000 + i * 60)).encode()
            out.write(b"From MAILER-DAEMON " + when + b"\r\n" + escaped + b"\r\n")
            total += len(message)
    return total


def run(config: Path, *args: str) -> tuple[float, float, int, str]:
    """(seconds, CPU seconds, peak RSS in MiB, stdout) of ``mss --config CONFIG ARGS``."""
    started = time.monotonic()
    proc = subprocess.Popen([*MSS, "--config", str(config), *args], cwd=REPO, env=CHILD_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"mss {' '.join(args)} failed: {err.decode()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, out.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--max-kb", type=int, default=200, help="largest message, KB")
    args = parser.parse_args()
    from pyrage import x25519

    with tempfile.TemporaryDirectory(prefix="mss-bench-export-") as tmp:
        base = Path(tmp)
        node = make_node(base, sending_limits=False)
        for name in ("source", "copy-mbox", "copy-maildir"):
            node.cli("mailbox", "add", f"{name}@{DOMAIN}", "--type", "PER",
                     "--password-stdin", input=PASSWORD + "\n")
        key = x25519.Identity.generate()
        identity = base / "key.txt"
        identity.write_text(f"{key}\n")
        mbox = base / "plain.mbox"
        total = make_mbox(mbox, args.messages, args.max_kb)
        mib = total / 2**20
        print(f"{args.messages} messages, {mib:.1f} MiB of messages "
              f"({total // args.messages} bytes each on average)")
        rows = []
        rows.append(("import plain mbox", *run(node.config, "mailbox", "import",
                                               f"source@{DOMAIN}", str(mbox))[:3]))
        mbox.unlink()
        for fmt in ("mbox", "maildir"):
            archive = base / f"export.{fmt}.age"
            rows.append((f"export {fmt} (age)", *run(
                node.config, "mailbox", "export", f"source@{DOMAIN}", "--format", fmt,
                "--to", str(archive), "--recipient", str(key.to_public()))[:3]))
            rows.append((f"import {fmt} (age)", *run(
                node.config, "mailbox", "import", f"copy-{fmt}@{DOMAIN}", str(archive),
                "--identity", str(identity))[:3]))
            archive.unlink()
        base_wall, base_cpu, base_rss, _ = run(node.config, "mailbox", "show",
                                               f"source@{DOMAIN}")
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; a command "
              f"doing nothing (mailbox show): {base_wall:.2f} s, {base_cpu:.2f} CPU s, "
              f"{base_rss} MiB")
        print(f"{'step':<20} {'seconds':>7} {'MiB/s':>6} {'CPU s':>6} {'MiB/CPU s':>9} "
              f"{'net':>6} {'RSS MiB':>7}")
        for name, seconds, cpu, rss in rows:
            print(f"{name:<20} {seconds:7.2f} {mib / seconds:6.1f} {cpu:6.2f} "
                  f"{mib / cpu:9.1f} {mib / max(cpu - base_cpu, 0.01):6.1f} {rss:7d}")
        print("(a whole `python -m mss` process each; MiB/CPU s: the rate with a core of its "
              "own; net: less the CPU of a command doing nothing; RSS: peak)")


if __name__ == "__main__":
    main()
