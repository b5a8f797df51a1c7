#!/usr/bin/env python3
"""Directory sync benchmark (a script, not a test).

Generates N entries in a real slapd (slapadd, cached under --cache between runs), then times
``mss directory sync --full`` into a fresh node and reports entries/s and the sync's peak
RSS; then modifies --changes entries and times an incremental sync.

    .venv/bin/python bench/directory_sync.py --entries 1000000
Loopback only; bounded by N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.smtp_ingest import free_port, setup  # noqa: E402
from tests import slapd  # noqa: E402

PROBE = ("import resource, sys\n"
         "from mss.cli import main\n"
         "try:\n    main(sys.argv[1:])\n"
         "finally:\n"
         "    print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def timed_sync(config: Path, *args: str) -> tuple[float, float, str]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PROBE, "--config", str(config), "directory",
                           "sync", *args], capture_output=True, text=True, cwd=REPO)
    elapsed = time.time() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    rss = int([line for line in proc.stderr.splitlines() if line.startswith("RSS")][-1]
              .split()[1])
    return elapsed, rss / 1024, proc.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mss-bench-ldap")
    args = ap.parse_args()
    if not slapd.available():
        sys.exit("slapd is needed (make system-deps as root)")
    cache = args.cache / str(args.entries)
    server = slapd.Slapd(cache, free_port())
    fresh = not (cache / "db" / "data.mdb").exists()
    server.configure()
    if fresh:
        t0 = time.time()
        server.load(slapd.person_ldif(i) for i in range(args.entries))
        print(json.dumps({"generated": args.entries, "slapadd_s": round(time.time() - t0, 1)}))
        # entries younger than the sync's clock-skew margin are re-read by the next
        # incremental run: let the freshly loaded ones age past it, as real data has
        from directory.sync import SKEW_MARGIN

        time.sleep(SKEW_MARGIN + 1)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mss-dir-bench-") as tmp:
            config, _ = setup(Path(tmp), 1)
            secret = config.parent / "keys" / "ldap.password"
            secret.write_text(slapd.PASSWORD)
            config.write_text(config.read_text() + f"""
[directory]
urls = ["{server.url}"]
base_dn = "ou=people,{slapd.SUFFIX}"
bind_dn = "{slapd.READER_DN}"
password_file = "keys/ldap.password"
page_size = 1000
""")
            full_s, full_rss, full_out = timed_sync(config, "--full")
            time.sleep(1.1)  # modifyTimestamp has a one-second resolution
            import ldap3

            ldap = ldap3.Connection(ldap3.Server(server.url), slapd.ROOT_DN, slapd.PASSWORD,
                                    auto_bind=True)
            step = max(1, args.entries // args.changes)
            for i in range(0, step * args.changes, step):
                ldap.modify(f"uid=p{i},ou=people,{slapd.SUFFIX}",
                            {"l": [(ldap3.MODIFY_REPLACE, [f"Moved{time.time_ns()}"])]})
            ldap.unbind()
            incr_s, incr_rss, incr_out = timed_sync(config)
        print(json.dumps({
            "entries": args.entries, "full_s": round(full_s, 1),
            "full_entries_s": round(args.entries / full_s), "full_peak_rss_mb": round(full_rss),
            "incremental_changes": args.changes, "incremental_s": round(incr_s, 2),
            "incremental_peak_rss_mb": round(incr_rss), "full": full_out,
            "incremental": incr_out}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
