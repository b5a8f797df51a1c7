"""tests/peers.py: a missing peer skips locally and fails under CI (CI=true)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import peers

ABSENT = "mss-no-such-peer-program"


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_missing_peer_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=f"missing test peer under CI: {ABSENT} "
                       "not installed \\(Debian package 'pkg-x'"):
        peers.require_peer(ABSENT, "pkg-x")
    with pytest.raises(pytest.fail.Exception, match="not found \\(the list\\)"):
        peers.require_file("/nonexistent/mss-file", source="the list")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_peer_skips_locally(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} not installed"):
        peers.require_peer(ABSENT)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        peers.require(False, "needs root")


def test_present_peer_is_found_whatever_ci(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    assert Path(peers.require_peer("sh")).samefile(shutil.which("sh") or "")
    assert peers.require_file(tmp_path, "x") == tmp_path
    peers.require(True, "never raised")


def test_node_start_repicks_a_listener_port_taken_meanwhile(tmp_path: Path) -> None:
    """tests/node.py: free_port is a guess; a port another process bound since (parallel
    test runs) makes serve exit with EADDRINUSE, and the first start picks again."""
    import socket

    from tests.node import free_port, make_node

    node = make_node(tmp_path, with_whitelist=False)
    taken = node.ports["submission"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        node.start()
        try:
            assert node.ports["submission"] != taken
            with socket.create_connection(("127.0.0.1", node.ports["submission"]), 10) as c:
                assert c.recv(3) == b"220"
        finally:
            node.stop()
    port = free_port("127.0.0.1", "127.0.0.2")
    assert _bindable_both(port)


def _bindable_both(port: int) -> bool:
    import socket

    for host in ("127.0.0.1", "127.0.0.2"):
        with socket.socket() as s:
            s.bind((host, port))
    return True
