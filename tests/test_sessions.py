"""mss sessions list / end (issue 16 part 4): the registry of logged-in sessions across the
workers of a node and the nodes of a cluster, driven by real imaplib clients.

The module's node serves with two workers (SO_REUSEPORT spreads the connections over
both); imap.enabled_check stays at its default (10 s): an ended session must say BYE well
within it, woken by the change watcher, not by the periodic check.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import DOMAIN, PASSWORD, Node, make_cluster, make_node, wait_for

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
ENABLED_CHECK = 10.0  # imap.enabled_check's default: the bound of the issue
HEARTBEAT = 0.5  # sessions.heartbeat of the test nodes: a dead worker is hidden after 1.5 s
NODE_CONFIG = f"\n[sessions]\nnode = \"n1\"\nheartbeat = {HEARTBEAT}\n"
BYE = b"* BYE Session ended by the administrator"


def _two_workers(node: Node) -> None:
    text = node.config.read_text()
    node.config.write_text(text.replace('data_dir = "."', 'data_dir = "."\nworkers = 2', 1))


def _ready(node: Node, workers: int = 2) -> None:
    assert wait_for(lambda: node.log_path is not None  # type: ignore[union-attr]
                    and node.log_path.read_text().count('"event": "ready"') >= workers, 30)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    served = make_node(tmp_path_factory.mktemp("sessions"), extra_config=NODE_CONFIG)
    _two_workers(served)
    served.start()
    _ready(served)
    yield served
    if served.running:
        served.stop()


def imaps(node: Node, user: str = BOB) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                          timeout=20)
    m.login(user, PASSWORD)
    return m


class Raw:
    """A raw TLS client (the exact BYE line, IDLE)."""

    def __init__(self, node: Node, user: str = BOB) -> None:
        sock = socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=20)
        self.sock = node.client_context().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        assert self.line().startswith(b"* OK [CAPABILITY ")
        self.send(b"l LOGIN " + user.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
        assert self.until(b"l")[-1].startswith(b"l OK")

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while not (lines and lines[-1].startswith(tag + b" ")):
            lines.append(self.line())
        return lines

    def closed(self) -> bool:
        """The server closed the connection (end of stream after what was read)."""
        try:
            return self.file.readline() == b""
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


def listed(node: Node, *args: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = node.cli_json("sessions", "list", *args)
    return rows


def login_sessions(node: Node) -> dict[str, str]:
    """session id -> mailbox of the successful imap.login records."""
    return {str(r["session"]): str(r["mailbox"]) for r in node.audit("--event", "imap.login")
            if r["outcome"] == 0}


def test_list_shows_every_workers_sessions_then_forgets_them(node: Node) -> None:
    clients = [imaps(node, BOB if i % 2 else ALICE) for i in range(8)]
    try:
        rows = listed(node)
        mine = [r for r in rows if r["remote_addr"] == "127.0.0.1"]
        assert len(mine) >= 8
        logins = login_sessions(node)
        for row in mine:  # the id of the login's audit record, its mailbox
            assert logins[str(row["id"])] == row["mailbox"]
            assert row["protocol"] == "imap" and row["listener"] == "imaps"
            assert row["auth_method"] == "password" and row["node"] == "n1"
            assert row["ended_at"] is None and abs(float(row["started_at"])  # type: ignore[arg-type]
                                                   - time.time()) < 60
        # both workers serve (SO_REUSEPORT): 8 connections on one would be 1 in 128
        assert {r["worker"] for r in mine} == {0, 1}
        bobs = listed(node, "--mailbox", BOB)
        assert {r["mailbox"] for r in bobs} == {BOB} and len(bobs) >= 4
        table = node.cli("sessions", "list").stdout
        assert all(len(line) <= 80 for line in table.splitlines()), table
        assert "session(s)" in table and str(mine[0]["id"]) in table
    finally:
        for m in clients:
            m.logout()
    ids = {r["id"] for r in mine}
    assert wait_for(lambda: not ids & {r["id"] for r in listed(node)}, 10)


def test_end_one_session_says_bye_at_once(node: Node) -> None:
    waiting, idle, other = Raw(node), Raw(node), Raw(node)
    try:
        idle.send(b"s SELECT INBOX\r\n")
        idle.until(b"s")
        idle.send(b"i IDLE\r\n")
        assert idle.line() == b"+ idling"
        by_worker = {str(r["id"]): r for r in listed(node, "--mailbox", BOB)}
        assert len(by_worker) >= 3
        before = {str(r["id"]) for r in listed(node)}
        ends = []
        newest = sorted(by_worker.values(), key=lambda r: float(r["started_at"]))[-3:]
        first, second, third = (str(r["id"]) for r in newest)
        for session_id in (first, second):
            began = time.monotonic()
            out = node.cli("sessions", "end", session_id).stdout
            assert out.strip() == f"session {session_id} of {BOB} ending"
            ends.append(began)
        # the two first logins (waiting: between commands; idle: in IDLE) said BYE within
        # a few change rounds, well before imap.enabled_check
        assert waiting.line() == BYE and waiting.closed()
        assert idle.line() == BYE and idle.closed()
        assert time.monotonic() - ends[0] < ENABLED_CHECK / 2
        other.send(b"n NOOP\r\n")  # the third goes on
        assert other.until(b"n")[-1] == b"n OK NOOP completed"
        assert wait_for(lambda: {first, second}.isdisjoint(
            {str(r["id"]) for r in listed(node)}), 10)
        assert third in {str(r["id"]) for r in listed(node)} and third in before
        records = [r for r in node.audit("--event", "admin.session.end")
                   if r["detail"]["session"] in (first, second)]  # type: ignore[index]
        assert len(records) == 2 and {r["mailbox"] for r in records} == {BOB}
        assert {r["detail"]["protocol"] for r in records} == {"imap"}  # type: ignore[index]
    finally:
        for client in (waiting, idle, other):
            client.close()


def test_end_every_session_of_a_mailbox(node: Node) -> None:
    bobs = [Raw(node) for _ in range(4)]
    alice = imaps(node, ALICE)
    try:
        ids = {str(r["id"]) for r in listed(node, "--mailbox", BOB)}
        assert len(ids) >= 4
        out = node.cli("sessions", "end", "--mailbox", BOB).stdout
        assert out.strip().endswith(f"session(s) of {BOB} ending")
        for client in bobs:  # on both workers
            assert client.line() == BYE
        assert alice.noop()[0] == "OK"
        assert wait_for(lambda: not listed(node, "--mailbox", BOB), 10)
        assert listed(node, "--mailbox", ALICE)
        record = node.audit("--event", "admin.session.end", "--mailbox", BOB)[-1]
        assert record["detail"]["sessions"] == len(ids)  # type: ignore[index]
        again = imaps(node)  # a new login is not ended
        time.sleep(0.5)
        assert again.noop()[0] == "OK"
        again.logout()
    finally:
        alice.logout()
        for client in bobs:
            client.close()


class Smtp:
    """A raw submission client over implicit TLS, logged in (AUTH PLAIN)."""

    def __init__(self, node: Node, user: str = BOB) -> None:
        sock = socket.create_connection(("127.0.0.1", node.ports["submissions"]), timeout=20)
        self.sock = node.client_context().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        assert self.line().startswith(b"220 ")
        self.sock.sendall(b"EHLO client.test\r\n")
        while not self.line().startswith(b"250 "):
            pass
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode())
        self.sock.sendall(b"AUTH PLAIN " + token + b"\r\n")
        assert self.line().startswith(b"235 ")

    def line(self) -> bytes:
        return self.file.readline()

    def close(self) -> None:
        self.sock.close()


def test_smtp_submission_sessions_are_listed_and_ended(node: Node) -> None:
    smtp, kept = Smtp(node), Smtp(node)
    try:
        rows = [r for r in listed(node, "--mailbox", BOB) if r["protocol"] == "smtp"]
        assert len(rows) == 2
        assert {r["listener"] for r in rows} == {"submissions"}
        assert {r["auth_method"] for r in rows} == {"password"}
        smtp_logins = {str(r["session"]) for r in node.audit("--event", "smtp.auth")
                       if r["outcome"] == 0}
        assert {str(r["id"]) for r in rows} <= smtp_logins
        first = min(rows, key=lambda r: float(r["started_at"]))  # type: ignore[arg-type]
        node.cli("sessions", "end", str(first["id"]))
        assert smtp.line() == b"421 4.7.0 Session ended by the administrator\r\n"
        assert smtp.line() == b""  # closed
        kept.sock.sendall(b"NOOP\r\n")
        assert kept.line().startswith(b"250")
        assert wait_for(lambda: str(first["id"]) not in
                        {str(r["id"]) for r in listed(node)}, 10)
        kept.sock.sendall(b"QUIT\r\n")
        assert kept.line().startswith(b"221")
        kept.close()  # as a client does after QUIT (the TLS close completes)
        assert wait_for(lambda: not [r for r in listed(node, "--mailbox", BOB)
                                     if r["protocol"] == "smtp"], 10)
    finally:
        smtp.close()
        kept.close()


def test_bad_input_is_one_line_and_changes_nothing(node: Node) -> None:
    m = imaps(node)
    try:
        before = listed(node)
        audited = len(node.audit("--event", "admin.session.end"))
        for args, text in ((("0123456789abcdef",), "no session 0123456789abcdef"),
                           ((), "give one session ID or --mailbox ADDRESS"),
                           ((str(before[0]["id"]), "--mailbox", BOB),
                            "give one session ID or --mailbox ADDRESS"),
                           (("--mailbox", f"nobody@{DOMAIN}"), f"no mailbox nobody@{DOMAIN}"),
                           (("--mailbox", "not an address"), "")):
            proc = node.cli("sessions", "end", *args, check=False)
            assert proc.returncode == 2, proc
            assert len(proc.stderr.strip().splitlines()) == 1 and text in proc.stderr, proc
        proc = node.cli("sessions", "list", "--mailbox", f"nobody@{DOMAIN}", check=False)
        assert proc.returncode == 2 and "no mailbox" in proc.stderr
        assert {r["id"] for r in listed(node)} == {r["id"] for r in before}
        assert len(node.audit("--event", "admin.session.end")) == audited
        assert m.noop()[0] == "OK"
    finally:
        m.logout()


def test_a_dead_workers_sessions_are_not_listed(tmp_path: Path) -> None:
    """kill -9 of a worker: its rows stay in the database until another process's
    heartbeat reaps them, but they are no longer listed once its heartbeat is 3 beats old;
    a clean stop removes every row of the node."""
    served = make_node(tmp_path, extra_config=NODE_CONFIG)
    _two_workers(served)
    served.start()
    try:
        _ready(served)
        clients = [imaps(served) for _ in range(6)]
        rows = listed(served)
        assert {r["worker"] for r in rows} == {0, 1}
        victim = next(r for r in rows if r["worker"] == 1)
        os.kill(int(victim["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        assert wait_for(lambda: {r["worker"] for r in listed(served)} == {0}, 15)
        survivors = [r for r in rows if r["worker"] == 0]
        assert {r["id"] for r in listed(served)} == {r["id"] for r in survivors}

        def reaped() -> bool:
            from sqlalchemy import select

            from mss import db
            from mss.app import open_app

            app = open_app(served.config)
            try:
                with app.reader.connect() as conn:
                    return not conn.execute(select(db.client_sessions.c.id).where(
                        db.client_sessions.c.id == victim["id"])).first()
            finally:
                app.close()
        assert wait_for(reaped, 15)  # deleted by worker 0's heartbeat
        for m in clients:
            with contextlib.suppress(imaplib.IMAP4.abort, OSError):  # the killed worker's
                m.logout()
    finally:
        served.stop()
    from sqlalchemy import func, select

    from mss import db
    from mss.app import open_app

    app = open_app(served.config)
    try:
        with app.reader.connect() as conn:
            assert conn.execute(select(func.count()).select_from(db.client_sessions)
                                ).scalar() == 0
            assert conn.execute(select(func.count()).select_from(db.serving_processes)
                                ).scalar() == 0
    finally:
        app.close()


def test_sessions_of_two_nodes_on_one_postgresql(tmp_path: Path) -> None:
    """Two nodes sharing a PostgreSQL database: each lists the other's sessions; the CLI
    ends a session served by the second node at once (its NOTIFY asks every node for a
    round), not after database.notify_poll."""
    nodes = make_cluster(tmp_path, 2, extra_config=NODE_CONFIG)
    nodes[1].config.write_text(nodes[1].config.read_text().replace('node = "n1"',
                                                                   'node = "n2"'))
    for n in nodes:  # the full rounds far apart: only the NOTIFY can be quick
        n.config.write_text(n.config.read_text().replace(
            "[database]\n", "[database]\nnotify_poll = 30.0\n", 1))
        n.start()
    try:
        first, second = Raw(nodes[0]), Raw(nodes[1])
        rows = listed(nodes[0])
        assert {r["node"] for r in rows} == {"n1", "n2"}
        assert json.dumps(rows) and listed(nodes[1]) == rows
        target = next(r for r in rows if r["node"] == "n2")
        began = time.monotonic()
        nodes[0].cli("sessions", "end", str(target["id"]))
        assert second.line() == BYE
        assert time.monotonic() - began < ENABLED_CHECK / 2
        first.send(b"n NOOP\r\n")
        assert first.until(b"n")[-1] == b"n OK NOOP completed"
        first.close()
        second.close()
    finally:
        for n in nodes:
            n.stop()
