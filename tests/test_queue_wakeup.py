"""The queue worker is woken by the commit that queues a message, not by a poll (issue 21
goal 4): two real operators on loopback (tests/outbound_pair.py), A with two serving
processes, delivery.poll_interval and database.change_poll set far beyond the bounds the
tests wait, so a message that reaches B within them was sent because its commit woke a
worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.node import Node, inbox_count, wait_for
from tests.outbound_pair import A_DOMAIN, B_DOMAIN, Pair, make_pair, message, submit

POLL = 600.0  # delivery.poll_interval and database.change_poll: never reached here
BOUND = 15.0  # seconds a woken delivery may take on 2 loaded cores (TLS, commits)
HOSTS = ("127.0.54.2", "127.0.54.3")


def _set(node: Node, section: str, line: str) -> None:
    lines = node.config.read_text().splitlines()
    lines.insert(lines.index(f"[{section}]") + 1, line)
    node.config.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    # max_concurrency 2: a burst leaves rows behind each claim (the end of a delivery
    # must claim the rest); a session per message (session_reuse 1) so that each
    # delivery is a whole one (connection, TLS, transaction)
    pair = make_pair(tmp_path_factory.mktemp("wakeup"), sending_limits=False, hosts=HOSTS,
                     poll_interval=POLL, max_concurrency=2, max_per_destination=2,
                     session_reuse=1, lease=60.0)
    a, b = pair.nodes()
    _set(a, "server", "workers = 2")
    _set(a, "database", f"change_poll = {POLL}")
    try:
        b.start()
        a.start()
        yield pair
    finally:
        pair.close()


def test_a_submitted_message_is_sent_at_once(pair: Pair) -> None:
    """Each message submitted to A (either of its two processes: the kernel picks the
    listener's, SO_REUSEPORT) is in B's store well before any poll could have sent it."""
    a, b = pair.nodes()
    rcpt = f"bob@{B_DOMAIN}"
    before = inbox_count(b, rcpt)
    for n in range(1, 4):  # several connections: either process may take each
        started = time.monotonic()
        submit(a, pair.pki, [rcpt], message(f"alice@{A_DOMAIN}", rcpt, f"wake{n}"))
        wait_for(lambda n=n: inbox_count(b, rcpt) >= before + n, timeout=BOUND, step=0.05)
        assert time.monotonic() - started < BOUND < POLL


def test_a_burst_beyond_the_concurrency_is_sent_without_a_poll(pair: Pair) -> None:
    """Six messages at once to a worker that may have two deliveries in flight: the
    end of each delivery claims the rows its claim had to leave; all are in B long before
    a poll."""
    a, b = pair.nodes()
    rcpt = f"secretariat@{B_DOMAIN}"
    before = inbox_count(b, rcpt)
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:  # six sessions at once: queued faster than sent
        list(pool.map(lambda n: submit(a, pair.pki, [rcpt],
                                       message(f"alice@{A_DOMAIN}", rcpt, f"burst{n}")),
                      range(6)))
    wait_for(lambda: inbox_count(b, rcpt) >= before + 6, timeout=2 * BOUND, step=0.1)
    assert time.monotonic() - started < 2 * BOUND < POLL
    assert a.audit("--event", "queue.deferred") == []  # each one sent at its first attempt
