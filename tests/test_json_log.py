"""Every line a node writes while it works is a JSON object (issue 17): its whole serve log
(stdout and stderr of ``mss serve``, start to SIGTERM) read after real SMTP and IMAP
sessions, good and bad, and parsed line by line."""

from __future__ import annotations

import contextlib
import imaplib
import json
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node import CHILD_ENV, DOMAIN, PASSWORD, REPO, Node, make_node, wait_for

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"


def _submit(node: Node, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        for i in range(n):
            body = (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: log {i}\r\n"
                    f"Message-ID: <log.{i}.{time.time_ns()}@demo>\r\n\r\nbody {i}\r\n").encode()
            assert client.sendmail(ALICE, [BOB, REMOTE], body) == {}


def _bad_smtp(node: Node) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15) as client:
        assert client.docmd("AUTH", "PLAIN AGFiYwBkZWY=")[0] == 530  # before STARTTLS
        assert client.docmd("NONSENSE")[0] in (500, 530)  # 530: STARTTLS first
        client.starttls(context=node.client_context())
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(ALICE, "wrong password")
    # a client gone in the middle of DATA
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15)
    client.starttls(context=node.client_context())
    client.login(ALICE, PASSWORD)
    client.mail(ALICE)
    client.rcpt(BOB)
    client.putcmd("DATA")
    client.getreply()
    client.send(b"Subject: cut\r\n\r\nhalf a line")
    client.sock.close()  # type: ignore[union-attr]
    # the MX: a peer with its operator certificate, one without
    for client_cert in (True, False):
        with node.mx_tls_socket(client_cert) as tls:
            tls.sendall(b"EHLO mx.operator-a.fr\r\nMAIL FROM:<dr.martin@operator-a.mssante.fr>"
                        b"\r\nQUIT\r\n")
            while tls.recv(4096):
                pass


def _imap(node: Node) -> None:
    with imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                           timeout=15) as m:
        m.login(BOB, PASSWORD)
        assert m.select("INBOX")[0] == "OK"
        assert m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")[0] == "OK"
        assert m.search(None, "ALL")[0] == "OK"
        m.send(b"x1 NONSENSE\r\n")  # an unknown command: a tagged BAD
        assert m.readline().startswith(b"x1 BAD")
        m.logout()
    with imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"], ssl_context=node.client_context(),
                           timeout=15) as m, pytest.raises(imaplib.IMAP4.error):
        m.login(BOB, "wrong password")


def _rude(node: Node) -> None:
    """A TCP connection closed without a word, and plain text to a TLS port, on each
    listener; a TLS client that does not trust the node's certificate."""
    for port in node.ports.values():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:  # a listener the default config leaves off
            continue
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01 not a handshake\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)  # the TLS ports' handshake ends at once, unfinished
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.recv(1024)
    untrusting = ssl.create_default_context()  # the system CAs: not the node's test CA
    with socket.create_connection(("127.0.0.1", node.ports["imaps"]), timeout=5) as sock, \
            pytest.raises(ssl.SSLError):
        untrusting.wrap_socket(sock, server_hostname="localhost")


def _non_json(log: Path) -> list[str]:
    bad = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            bad.append(line)
    return bad


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_of_a_busy_nodes_log_is_json(tmp_path: Path, workers: int) -> None:
    node = make_node(tmp_path)
    if workers > 1:
        text = node.config.read_text()
        node.config.write_text(text.replace('[server]\ndata_dir = "."\n',
                                            f'[server]\ndata_dir = "."\nworkers = {workers}\n',
                                            1))
    node.start()
    try:
        _submit(node, 5)
        _bad_smtp(node)
        _imap(node)
        _rude(node)
        assert wait_for(lambda: len(node.audit("--event", "smtp.message.accepted")) >= 5, 30)
    finally:  # a session cut in DATA may hold a worker up to the grace (30 s) once
        assert node.stop(timeout=60) == 0
    assert node.log_path is not None
    lines = node.log_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 10 and any('"event": "ready"' in line for line in lines)
    assert _non_json(node.log_path) == []


CRASHES = """
import threading
from mss.logs import configure, route_crashes
configure("info")
route_crashes()

class Leaky:
    def __del__(self):
        raise RuntimeError("in __del__")

Leaky()  # an exception ignored (sys.unraisablehook)
thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
thread.start()
thread.join()
raise LookupError("at the top")  # uncaught (sys.excepthook)
"""


def test_crashes_python_would_print_are_json_lines() -> None:
    proc = subprocess.run([sys.executable, "-c", CRASHES], capture_output=True, text=True,
                          cwd=REPO, env=CHILD_ENV, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("exception ignored", "error"), ("uncaught exception in thread", "critical"),
        ("uncaught exception", "critical")]
    assert lines[0]["error"] == "RuntimeError('in __del__')"
    assert lines[1]["thread"] == "worker-thread" and "ZeroDivisionError" in lines[1]["error"]
    assert lines[2]["error"] == "LookupError('at the top')"
    assert all(x["where"] and ":" in x["where"][-1] for x in lines)  # file:line, no source


WORKERS = """
import os, sys
import structlog
from mss.logs import configure
configure("info", None if sys.argv[1] == "stderr" else __import__("pathlib").Path(sys.argv[1]))
children = []
for worker in range(3):  # as mss serve forks its workers after configure()
    pid = os.fork()
    if pid == 0:
        log = structlog.get_logger("mss.test")
        for i in range(400):
            log.info("stopping", worker=worker, i=i, pad="x" * (i % 200))
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("target", ["stderr", "file"])
def test_workers_sharing_the_log_write_whole_lines(tmp_path: Path, target: str) -> None:
    """Three forked processes logging at once to one stderr (a file, as tests/node.py and
    systemd give it) or one logging.file: 1200 lines, each a JSON object."""
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-c", WORKERS,
                        "stderr" if target == "stderr" else str(tmp_path / "mss.log")],
                       stdout=out, stderr=out, cwd=REPO, env=CHILD_ENV, timeout=120,
                       check=True)
    written = log if target == "stderr" else tmp_path / "mss.log"
    lines = written.read_text(encoding="utf-8").splitlines()
    assert _non_json(written) == [] and len(lines) == 1200
    assert {(x["worker"], x["i"]) for x in map(json.loads, lines)} == {
        (w, i) for w in range(3) for i in range(400)}
