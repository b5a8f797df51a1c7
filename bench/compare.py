#!/usr/bin/env python3
"""mss against the anchor's floor server, side by side (issue 21 goal 5; a script, not a test).

Starts a throw-away mss node (bench/smtp_ingest.py's set-up: ``mss init``, a whitelist
listing the sender's operator and its certificate DN, hosted mailboxes) and the anchor's
plain floor server (``../shared/anchors/anchor_floor_server.py --mode thread --tls``:
aiosmtpd, one fsync per message), then drives both, one after the other and in alternating
order, with the anchor's own load generator (``anchor_smtp_load.py``: --sessions threads,
STARTTLS, one connection per message). The generator runs unchanged; a small wrapper only
gives its TLS context the operator's client certificate, which the mss MX requires (the floor
server asks for none, so TLS sends none). After each load the stored messages are counted
(mss: rows of ``messages``; floor: files in ``new/``).

Printed: one JSON line per load, then the medians over --rounds: stored msg/s of each, their
ratio (mss / floor: goal >= 0.95), and the server CPU per stored message of each (the
process and its workers, from /proc: user + system; goal <= 2.5 ms at 5 KB, <= 12 ms at
1 MB). The machine is shared and the generator competes for the same cores: CPU per message
is the figure that says how good the server is; msg/s only side by side.

    .venv/bin/python bench/compare.py                         # 5 KB x 2000, 3 rounds
    .venv/bin/python bench/compare.py --size 1048576 --count 200 --sessions 20
    .venv/bin/python bench/compare.py --py-spy /tmp/mss.txt   # collapsed stacks of mss
    .venv/bin/python bench/compare.py --also /path/to/other/checkout   # another commit too
Loopback only; every load is bounded by --count and --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
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
    SENDER,
    _proc_cpu,
    free_port,
    setup,
    stored_count,
    wait_listening,
)

ANCHORS = REPO.parent / "shared" / "anchors"
if not ANCHORS.is_dir():  # a worktree: the shared folder beside the main repository
    ANCHORS = Path("/work/shared/anchors")
MSS = [sys.executable, "-m", "mss"]
# the generator, run unchanged, with a client certificate in its TLS context
_WITH_CERT = """
import runpy, ssl, sys
cert, key, path = sys.argv[1:4]
_plain = ssl.create_default_context
def _with_cert(*args, **kwargs):
    ctx = _plain(*args, **kwargs)
    ctx.load_cert_chain(cert, key)
    return ctx
ssl.create_default_context = _with_cert
sys.argv = [path, *sys.argv[4:]]
runpy.run_path(path, run_name="__main__")
"""


def generate(port: int, cert: Path, key: Path, args: argparse.Namespace) -> dict[str, object]:
    """One run of the anchor's generator against 127.0.0.1:*port*: its JSON line."""
    command = [sys.executable, "-c", _WITH_CERT, str(cert), str(key),
               str(ANCHORS / "anchor_smtp_load.py"), "--host", "127.0.0.1", "--port",
               str(port), "--count", str(args.count), "--sessions", str(args.sessions),
               "--size", str(args.size), "--starttls", "--from", SENDER,
               "--to", f"bench1@{DOMAIN}", "--max-seconds", str(args.max_seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=args.max_seconds + 60)
    try:
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"generator failed: {done.stderr[-2000:]}")
    return result


def floor_stored(directory: Path) -> int:
    return sum(1 for _ in os.scandir(directory / "new"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="messages per load")
    ap.add_argument("--size", type=int, default=5120, help="body bytes per message")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="mss server.workers")
    ap.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None,
                    help="mss server.event_loop (default: the node's default)")
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--py-spy", metavar="FILE", default=None,
                    help="record mss during its first load (py-spy, collapsed stacks)")
    ap.add_argument("--skip-floor", action="store_true", help="mss only (no ratio)")
    ap.add_argument("--paired", action="store_true",
                    help="with --also: the mss nodes take their loads at the same time "
                         "(each its own generator), so each round's machine load is the "
                         "same for them; the floor still runs alone")
    ap.add_argument("--also", action="append", default=[], metavar="CHECKOUT",
                    help="also run the mss of this checkout (another commit: a git "
                         "worktree) in the same rounds")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mss-compare-") as tmp:
        base = Path(tmp)
        nodes = {"mss": (REPO, base / "mss")}
        for n, checkout in enumerate(args.also, 1):
            nodes[f"mss@{Path(checkout).name}" if n == 1 else f"mss@{n}"] = (
                Path(checkout).resolve(), base / f"also{n}")
        configs: dict[str, Path] = {}
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        floor_dir = base / "floor"
        try:
            for name, (repo, home) in nodes.items():
                home.mkdir()
                config, ports = setup(home, 10, args.workers, repo=repo)
                if args.event_loop is not None and repo == REPO:
                    text = config.read_text()
                    config.write_text(text.replace("[server]\n", f'[server]\nevent_loop = '
                                                   f'"{args.event_loop}"\n', 1))
                configs[name] = config
                with open(home / "serve.log", "wb") as log:
                    servers[name] = (subprocess.Popen(
                        [*MSS, "--config", str(config), "serve"], cwd=repo, stdout=log,
                        stderr=subprocess.STDOUT), ports["mx"])
            pki = configs["mss"].parent / "pki"
            if not args.skip_floor:
                floor_port = free_port()
                servers["floor"] = (subprocess.Popen(
                    [sys.executable, str(ANCHORS / "anchor_floor_server.py"), "--port",
                     str(floor_port), "--dir", str(floor_dir), "--mode", "thread", "--tls",
                     "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
                     "--max-seconds", str(args.rounds * 2 * (args.max_seconds + 60))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), floor_port)

            def stored(name: str) -> int:
                return floor_stored(floor_dir) if name == "floor" \
                    else stored_count(configs[name])

            for _, port in servers.values():
                wait_listening(port)
            time.sleep(1.0)  # every worker listening
            figures: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for round_ in range(args.rounds):
                order: list[list[str]] = [[name] for name in servers]
                if args.paired:
                    order = [[name for name in servers if name != "floor"],
                             *([["floor"]] if "floor" in servers else [])]
                for group in (order if round_ % 2 == 0 else list(reversed(order))):
                    loads: dict[str, dict[str, object]] = {}
                    marks = {name: (stored(name), _proc_cpu(servers[name][0].pid))
                             for name in group}

                    def drive(name: str, loads: dict[str, dict[str, object]] = loads) -> None:
                        pki = configs.get(name, configs["mss"]).parent / "pki"
                        loads[name] = generate(servers[name][1], pki / "bench-operator.crt",
                                               pki / "bench-operator.key", args)

                    spy = None
                    if args.py_spy and "mss" in group and round_ == 0:
                        spy = subprocess.Popen(
                            [shutil.which("py-spy") or "py-spy", "record", "-p",
                             str(servers["mss"][0].pid), "-f", "raw", "-o", args.py_spy,
                             "-r", "50", "--subprocesses", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1.0)
                    threads = [threading.Thread(target=drive, args=(n,)) for n in group]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
                    cpu1s = {name: _proc_cpu(servers[name][0].pid) for name in group}
                    time.sleep(0.2)  # the last commits
                    for name in group:
                        (before, cpu0), cpu1, load = marks[name], cpu1s[name], loads[name]
                        count = min(stored(name) - before, int(str(load["ok"])))
                        elapsed = float(str(load["elapsed_s"]))
                        row = {"stored": count, "errors": float(str(load["err"])),
                               "msg_s": round(count / elapsed, 1),
                               "server_cpu_ms": round(1000 * (cpu1 - cpu0) / max(1, count), 2),
                               "client_cpu_ms": round(1000 * float(str(load["client_cpu_s"]))
                                                      / max(1, count), 2)}
                        figures[name].append(row)
                        print(json.dumps({"round": round_, "server": name, **row,
                                          "first_errors": load["errors"]}), flush=True)
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
            for process, _ in servers.values():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
    median = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
              for name, rows in figures.items()}
    summary: dict[str, object] = {
        "size": args.size, "count": args.count, "sessions": args.sessions,
        "rounds": args.rounds, "workers": args.workers,
        "event_loop": args.event_loop or "default",
        "mss_msg_s": median["mss"]["msg_s"],
        "mss_server_cpu_ms_per_msg": median["mss"]["server_cpu_ms"],
        "client_cpu_ms_per_msg": median["mss"]["client_cpu_ms"]}
    if "floor" in median:
        summary.update({
            "floor_msg_s": median["floor"]["msg_s"],
            "floor_server_cpu_ms_per_msg": median["floor"]["server_cpu_ms"],
            # the same ratio per round, then its median (the rounds share the machine's load)
            "ratio_mss_floor": round(statistics.median(
                m["msg_s"] / f["msg_s"] for m, f in zip(figures["mss"], figures["floor"],
                                                        strict=True)), 3),
            "cpu_ratio_mss_floor": round(median["mss"]["server_cpu_ms"]
                                         / median["floor"]["server_cpu_ms"], 3)})
    for name in nodes:
        if name == "mss":
            continue
        summary.update({f"{name}_msg_s": median[name]["msg_s"],
                        f"{name}_server_cpu_ms_per_msg": median[name]["server_cpu_ms"]})
        if "floor" in median:
            summary[f"{name}_ratio_floor"] = round(statistics.median(
                m["msg_s"] / f["msg_s"] for m, f in zip(figures[name], figures["floor"],
                                                        strict=True)), 3)
    # the least CPU per message of each server over the rounds (a shared machine only
    # ever adds to it)
    summary["least_server_cpu_ms"] = {name: min(r["server_cpu_ms"] for r in rows)
                                      for name, rows in figures.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
