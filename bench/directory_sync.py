#!/usr/bin/env python3
"""Directory sync benchmark (a script, not a test).

``--source ldap`` (default): generates N entries in a real slapd (slapadd, cached under
--cache between runs), then times ``mss directory sync --full`` into a fresh node and
reports entries/s and the sync's peak RSS; then modifies --changes entries and times an
incremental sync.

``--source extraction``: generates the national extraction in its published format (a ZIP
of N pipe-delimited lines, cached under --cache), times ``mss directory import FILE`` into
a fresh node (wall and CPU seconds of the command, its peak RSS), then the next day's file
(--changes lines changed) into the same node.

``--source fhir``: serves N mailboxes from the loopback test API and reads them with
directory.fhir.FhirSource in pages of --page-size (bench/directory_fhir.py).

    .venv/bin/python bench/directory_sync.py --entries 1000000
    .venv/bin/python bench/directory_sync.py --source extraction --entries 1000000
    .venv/bin/python bench/directory_sync.py --source fhir --entries 100000 --page-size 1000
Loopback only; bounded by N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.smtp_ingest import free_port, setup  # noqa: E402
from tests import slapd  # noqa: E402

PROBE = ("import resource, sys\n"
         "from mss.cli import main\n"
         "try:\n    main(sys.argv[1:])\n"
         "finally:\n"
         "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
         "    print('RSS', u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)\n")


def timed_cli(config: Path, *args: str) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MB), stdout and CPU seconds of ``mss ARGS``."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", PROBE, "--config", str(config), *args],
                          capture_output=True, text=True, cwd=REPO)
    elapsed = time.time() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    probe = [line for line in proc.stderr.splitlines() if line.startswith("RSS")][-1].split()
    return elapsed, int(probe[1]) / 1024, proc.stdout.strip(), float(probe[2])


def timed_sync(config: Path, *args: str) -> tuple[float, float, str]:
    elapsed, rss, out, _ = timed_cli(config, "directory", "sync", *args)
    return elapsed, rss, out


def extraction_bench(args: argparse.Namespace) -> None:
    """The national extraction: a first load of N mailboxes, then the next day's file."""
    from tests import extraction_data as data

    args.cache.mkdir(parents=True, exist_ok=True)
    first = args.cache / f"extraction-{args.entries}.zip"
    if not first.exists():
        t0 = time.time()
        data.write_zip(first, data.lines(args.entries))
        print(json.dumps({"generated": args.entries, "zip_mb": round(
            first.stat().st_size / 2**20, 1), "generate_s": round(time.time() - t0, 1)}))
    step = max(1, args.entries // max(1, args.changes))

    def next_day() -> Iterator[bytes]:
        for i, raw in enumerate(data.lines(args.entries)):
            if i and (i - 1) % step == 0 and (i - 1) // step < args.changes:
                raw = raw.replace(b"|1|175", b"|1|375", 1)  # another structure id
            yield raw
    second = data.write_zip(args.cache / f"extraction-{args.entries}-next.zip", next_day(),
                            "202612040600")
    with tempfile.TemporaryDirectory(prefix="mss-dir-bench-") as tmp:
        config, _ = setup(Path(tmp), 1)
        full_s, full_rss, full_out, full_cpu = timed_cli(config, "directory", "import",
                                                         str(first))
        next_s, next_rss, next_out, next_cpu = timed_cli(config, "directory", "import",
                                                         str(second))
    print(json.dumps({
        "source": "extraction", "entries": args.entries, "full_s": round(full_s, 1),
        "full_cpu_s": round(full_cpu, 1), "full_entries_per_cpu_s": round(
            args.entries / full_cpu), "full_peak_rss_mb": round(full_rss),
        "next_day_changes": args.changes, "next_day_s": round(next_s, 1),
        "next_day_cpu_s": round(next_cpu, 1), "next_day_peak_rss_mb": round(next_rss),
        "full": full_out, "next_day": next_out}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mss-bench-ldap")
    ap.add_argument("--source", choices=("ldap", "extraction", "fhir"), default="ldap")
    ap.add_argument("--page-size", type=int, default=1000, help="--source fhir: per page")
    args = ap.parse_args()
    if args.source == "fhir":  # bench/directory_fhir.py (100 000 from pages of 1 000)
        from bench.directory_fhir import fhir_bench

        print(json.dumps(fhir_bench(args.entries, args.page_size)))
        return
    if args.source == "extraction":
        extraction_bench(args)
        return
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
