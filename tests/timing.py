"""CPU time of test workloads: bounds that hold on a loaded machine (wall time there
measures the other processes)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_cpu_time(work: Callable[[], object], runs: int = 3) -> float:
    """The least CPU time (seconds, this process) *work* took over *runs* runs."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best
