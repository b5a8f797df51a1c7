"""The counts of every worker of the node, summed (docs/metrics.md "Several workers").

Each serving process keeps its counters in its own registry (mss/metrics.py) and answers
its exposition on a Unix socket of the data dir (``run/metrics-<worker>.sock``, mode 0600
under the 0700 data dir): connect, read to EOF. Worker 0's admin listener reads every
other worker's at scrape time and sums the samples of equal name and labels (counters and
histogram buckets add up; ``_created`` samples, per process, are dropped). A worker that
does not answer within the timeout is left out and counted in ``mss_workers_missing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

TIMEOUT = 2.0  # seconds a worker gets to answer
MAX_EXPOSITION = 8 * 1024 * 1024  # octets read from one worker


def socket_path(data_dir: Path, worker: int) -> Path:
    return data_dir / "run" / f"metrics-{worker}.sock"


class WorkerExposition:
    """This process's counters on its Unix socket, for worker 0's scrapes."""

    def __init__(self, registry: CollectorRegistry, path: Path) -> None:
        self.registry = registry
        self.path = path
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # a previous run's
            self.path.unlink()
        self.server = await asyncio.start_unix_server(self._answer, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(generate_latest(self.registry))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self, deadline: float) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


async def read_worker(path: Path) -> str | None:
    """A worker's exposition, or None when it does not answer in time."""
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                data = await reader.read(MAX_EXPOSITION)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    return data.decode("utf-8", "replace")


class Summed(Collector):
    """The families of several expositions, samples of equal name and labels summed."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.families: dict[str, Metric] = {}
        sums: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for text in texts:
            for family in text_string_to_metric_families(text):
                self.families.setdefault(family.name, Metric(family.name, family.documentation,
                                                             family.type))
                for s in family.samples:
                    if s.name.endswith("_created"):
                        continue
                    key = (family.name, s.name, tuple(sorted(s.labels.items())))
                    sums[key] = sums.get(key, 0.0) + s.value
        for (owner, name, labels), value in sums.items():
            self.families[owner].add_sample(name, dict(labels), value)

    def collect(self) -> Iterator[Metric]:
        yield from self.families.values()
