"""Shared fixtures: real mss nodes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import Node, make_node


@pytest.fixture(scope="module")
def running_node(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One served node per test module (init + whitelist + mailboxes); a module's
    ``NODE_CONFIG`` (TOML tables) is appended to its configuration (short timings), and
    ``IN_PROCESS = True`` serves it in a thread of the test process (protocol tests that
    never signal, kill or fork it)."""
    node = make_node(tmp_path_factory.mktemp("node"),
                     extra_config=getattr(request.module, "NODE_CONFIG", ""),
                     in_process=getattr(request.module, "IN_PROCESS", False))
    node.start()
    yield node
    if node.running:
        node.stop()


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[Node]:
    """A node of its own for tests that stop, kill or corrupt it."""
    node = make_node(tmp_path)
    yield node
    if node.process is not None:
        node.process.kill()
        node.process.wait()
