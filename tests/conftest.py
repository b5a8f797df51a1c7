"""Shared fixtures: real mss nodes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

from tests.databases import schema_engine
from tests.node import Node, make_node

# Property tests are bounded by their example counts, not by the clock: on a loaded machine
# (CI's two cores running the suite on both) generating inputs may be slow, which is not a
# failure of the code under test.
settings.register_profile("mss", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mss")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``backend``: the database of the module's nodes, each of the module's ``BACKENDS``
    (default SQLite only; ``BACKENDS = tests.node.BACKENDS`` runs it on PostgreSQL too)."""
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("sqlite",))
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:  # @pytest.mark.backends("sqlite"): a test bound to one backend
            backends = tuple(b for b in backends if b in only.args)
        metafunc.parametrize("backend", backends, scope="module")


@pytest.fixture(scope="module")
def running_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 backend: str) -> Iterator[Node]:
    """One served node per test module and backend (init + whitelist + mailboxes); a
    module's ``NODE_CONFIG`` (TOML tables) is appended to its configuration (short
    timings), and ``IN_PROCESS = True`` serves it in a thread of the test process (protocol
    tests that never signal, kill or fork it)."""
    node = make_node(tmp_path_factory.mktemp("node"),
                     extra_config=getattr(request.module, "NODE_CONFIG", ""),
                     in_process=getattr(request.module, "IN_PROCESS", False),
                     backend=backend)
    node.start()
    yield node
    if node.running:
        node.stop()


@pytest.fixture
def fresh_node(tmp_path: Path, backend: str) -> Iterator[Node]:
    """A node of its own for tests that stop, kill or corrupt it."""
    node = make_node(tmp_path, backend=backend)
    yield node
    if node.process is not None:
        node.process.kill()
        node.process.wait()


@pytest.fixture
def db_engine(tmp_path: Path, backend: str) -> Iterator[Engine]:
    """A writer engine on a new database holding the schema, on the module's backends (for
    tests of the store's logic that need no node: tests/databases.py)."""
    with schema_engine(backend, tmp_path) as engine:
        yield engine
