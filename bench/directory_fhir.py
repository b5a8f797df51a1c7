#!/usr/bin/env python3
"""Directory read from the FHIR API benchmark (a script, not a test; issue 19).

Serves N generated mailboxes (nine PER Practitioners in ten, the rest ORG Organizations)
from the loopback test API (tests/fhir_server.py, its own process, HTTPS), then reads them
all with directory.fhir.FhirSource in a child process, pages of --page-size, and stages
the rows into a fresh SQLite database in batches of 5 000 as directory.sync does. Prints
the child's wall time, CPU time (user + system: the machine is shared, CPU is the steadier
figure) and peak RSS, and the test API's CPU while serving, as JSON.

    .venv/bin/python bench/directory_fhir.py --entries 100000 --page-size 1000
``fhir_bench`` is the function bench/directory_sync.py --source fhir calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from sqlalchemy import insert
from directory.fhir import FhirSource
from directory.sources import Rejected
from directory.sync import digest
from mss import db
from mss.config import FhirConfig

args = json.loads(sys.argv[1])
engine = db.make_engine("sqlite:///" + args["db"])
db.metadata.create_all(engine)
t0, c0 = time.monotonic(), time.process_time()
source = FhirSource(FhirConfig(base_url=args["base_url"], ca_file=Path(args["ca_file"]),
                               api_key_env="MSS_BENCH_KEY", page_size=args["page_size"]))
source.open()
rows, rejected, batch = 0, 0, []
for item in source.rows(None):
    if isinstance(item, Rejected):
        rejected += 1
        continue
    item["digest"] = digest(item)
    batch.append(item)
    rows += 1
    if len(batch) >= 5000:
        with engine.begin() as conn:
            conn.execute(insert(db.directory_staging), batch)
        batch = []
if batch:
    with engine.begin() as conn:
        conn.execute(insert(db.directory_staging), batch)
source.close()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"mailboxes": rows, "rejected": rejected, "pages": source.pages,
                  "requests": source.client.requests,
                  "seconds": round(time.monotonic() - t0, 2),
                  "cpu_seconds": round(time.process_time() - c0, 2),
                  "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}))
"""


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fhir_bench(entries: int, page_size: int = 1000) -> dict[str, Any]:
    """Serve *entries* mailboxes, read them all; the child's figures."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MSS_BENCH_KEY": "bench-key"}
    with tempfile.TemporaryDirectory(prefix="mss-bench-fhir-") as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.fhir_server", "--entries", str(entries),
             "--dir", tmp], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        try:
            assert server.stdout is not None
            info = json.loads(server.stdout.readline())
            serving_from = _cpu(server.pid)
            args = {**info, "page_size": page_size, "db": str(Path(tmp) / "bench.db")}
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                                  capture_output=True, text=True, cwd=REPO, env=env,
                                  check=False)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
            # the test API's own CPU while serving (its set-up excluded): what the wall
            # time waits on besides the reader
            result["server_cpu_seconds"] = round(_cpu(server.pid) - serving_from, 2)
            return {"entries": entries, "page_size": page_size, **result}
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--page-size", type=int, default=1000)
    args = ap.parse_args()
    print(json.dumps(fhir_bench(args.entries, args.page_size)))


if __name__ == "__main__":
    main()
