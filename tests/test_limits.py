"""Resource bounds of the listeners (mss/limits.py, issue 20 #4): connection caps per client
address and pre-auth, the pre-auth deadline over skipped literals, the memory budget of
DATA and literals, and asyncio's error reports while descriptors are exhausted."""

from __future__ import annotations

import re
import resource
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mss.limits import (
    OPEN_FILES,
    PER_ADDRESS,
    PREAUTH_PER_ADDRESS,
    ConnectionLimiter,
    OpenFiles,
    ReportGate,
)
from tests.node import DOMAIN, PASSWORD, Node, make_node, wait_for

BOB = f"bob@{DOMAIN}"
ALICE = f"alice@{DOMAIN}"
CAPS = {"max_connections_per_address": 5, "max_preauth_per_address": 3}


def set_listener_keys(node: Node, names: tuple[str, ...], keys: dict[str, int]) -> None:
    """Add *keys* to the [listeners.NAME] tables of the node's config."""
    text = node.config.read_text()
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    for name in names:
        text, count = re.subn(rf"(\[listeners\.{name}\]\n)", rf"\g<1>{lines}", text)
        assert count == 1
    node.config.write_text(text)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = make_node(tmp_path_factory.mktemp("capped"), with_whitelist=False,
                     extra_config="\n[imap]\npreauth_timeout = 2.0\n"
                                  "\n[limits]\npending_bytes = 1048576\nreport_interval = 1.0\n")
    set_listener_keys(node, ("imap", "imaps", "submission", "submissions"), CAPS)
    text = node.config.read_text()  # DATA: 3 s for the whole phase, 1.5 MB at most
    text, count = re.subn(r"(?m)^max_message_size = \d+$",  # and 2 s to authenticate
                          "max_message_size = 1500000\ndata_timeout = 3.0\n"
                          "preauth_timeout = 2.0", text)
    assert count == 1
    node.config.write_text(text)
    node.start()
    yield node
    node.stop()


def plain(node: Node, listener: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.ports[listener]), timeout=10,
                                    source_address=(source, 0))
    return sock


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1000)
        if not chunk:
            break
        data += chunk
    return data


def greeted(node: Node, listener: str) -> bool:
    sock = plain(node, listener)
    try:
        return first_line(sock).startswith(b"* OK ")
    finally:
        sock.close()


def closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes *sock* within *within* seconds (reading what comes)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset
            return True
    return False


def tls(node: Node, listener: str = "imaps", source: str = "127.0.0.1") -> ssl.SSLSocket:
    return node.client_context().wrap_socket(plain(node, listener, source))


# --------------------------------------------------------------------------- unit

def test_limiter_counts_per_address_and_preauth() -> None:
    limiter = ConnectionLimiter(max_connections=10, max_per_address=3, max_preauth=10,
                                max_preauth_per_address=2)
    first, second = limiter.admit("192.0.2.1"), limiter.admit("192.0.2.1")
    assert limiter.admit("192.0.2.1") == PREAUTH_PER_ADDRESS
    assert not isinstance(first, str) and not isinstance(second, str)
    first.authenticated()
    third = limiter.admit("192.0.2.1")
    assert not isinstance(third, str)
    assert limiter.admit("192.0.2.1") == PER_ADDRESS
    assert not isinstance(limiter.admit("192.0.2.2"), str)  # another address: own budget
    for admission in (first, second, third, first):  # release is idempotent
        admission.release()
    assert limiter.connections == {"192.0.2.2": 1} and limiter.total == 1
    assert limiter.preauth_total == 1


def test_listeners_share_the_open_files_cap() -> None:
    files = OpenFiles(limit=2)
    imap, smtp = (ConnectionLimiter(10, 10, 10, 10, files=files) for _ in range(2))
    first, second = imap.admit("192.0.2.1"), smtp.admit("192.0.2.2")
    assert smtp.admit("192.0.2.3") == OPEN_FILES
    assert not isinstance(first, str) and not isinstance(second, str)
    first.release()
    assert not isinstance(smtp.admit("192.0.2.3"), str) and files.used == 2


def test_report_gate_counts_what_it_suppresses() -> None:
    gate = ReportGate(interval=10.0)
    assert gate.due("k", now=0.0) == 1
    assert [gate.due("k", now=t) for t in (1.0, 2.0, 3.0)] == [0, 0, 0]
    assert gate.due("k", now=11.0) == 4


# --------------------------------------------------------------------------- caps

def test_imap_preauth_cap_per_address(capped: Node) -> None:
    """Pre-auth connections over the per-address cap get * BYE; another address and a
    connection after one closed are served; the refusal is audited."""
    held = [plain(capped, "imap") for _ in range(CAPS["max_preauth_per_address"])]
    try:
        assert all(first_line(s).startswith(b"* OK ") for s in held)
        over = plain(capped, "imap")
        assert first_line(over) == b"* BYE Too many connections, try again later\r\n"
        assert closed(over, 5)
        other = plain(capped, "imap", source="127.0.0.2")
        assert first_line(other).startswith(b"* OK ")
        other.close()
        held.pop().close()  # its slot is given back when the server sees the close
        wait_for(lambda: greeted(capped, "imap"), timeout=5)
    finally:
        for sock in held:
            sock.close()
    rows = capped.wait_audit(lambda r: r["event"] == "connection.refused"
                             and r["listener"] == "imap")
    assert rows and rows[0]["reason"] == PREAUTH_PER_ADDRESS
    assert rows[0]["remote_addr"] == "127.0.0.1" and rows[0]["outcome"] == 4


def test_imaps_logged_in_connections_leave_the_preauth_cap(capped: Node) -> None:
    """Logged-in sessions count against the per-address cap only; over it, imaps closes
    before the TLS handshake."""
    sessions = []
    try:
        for _ in range(CAPS["max_preauth_per_address"]):
            sock = tls(capped)
            f = sock.makefile("rb")
            assert f.readline().startswith(b"* OK ")
            sock.sendall(b'l LOGIN ' + BOB.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
            while not (line := f.readline()).startswith(b"l "):
                pass
            assert line.startswith(b"l OK"), line
            sessions.append(sock)
        # 3 logged in: 2 more pre-auth fit the per-address cap of 5, the 6th does not
        for _ in range(CAPS["max_connections_per_address"] - len(sessions)):
            sock = tls(capped)
            assert first_line(sock).startswith(b"* OK ")
            sessions.append(sock)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls(capped).recv(100)
        served = tls(capped, source="127.0.0.3")
        assert first_line(served).startswith(b"* OK ")
        served.close()
    finally:
        for sock in sessions:
            sock.close()
    assert capped.wait_audit(lambda r: r["event"] == "connection.refused"
                             and r["listener"] == "imaps" and r["reason"] == PER_ADDRESS)


def test_smtp_preauth_cap_per_address(capped: Node) -> None:
    held = [plain(capped, "submission") for _ in range(CAPS["max_preauth_per_address"])]
    try:
        assert all(first_line(s).startswith(b"220 ") for s in held)
        over = plain(capped, "submission")
        assert first_line(over) == b"421 4.7.0 Too many connections, try again later\r\n"
        assert closed(over, 5)
        other = plain(capped, "submission", source="127.0.0.2")
        assert first_line(other).startswith(b"220 ")
        other.close()
    finally:
        for sock in held:
            sock.close()
    assert capped.wait_audit(lambda r: r["event"] == "connection.refused"
                             and r["listener"] == "submission")


def test_submissions_refuses_over_the_cap_before_the_tls_handshake(capped: Node) -> None:
    """2465 (implicit TLS, RFC 8314 §3.3): over the pre-auth cap a TCP connection is closed
    before any TLS work, with no bytes sent (the server does not wait for a ClientHello);
    the admitted ones are served over TLS."""
    held = [tls(capped, "submissions", source="127.0.0.6")
            for _ in range(CAPS["max_preauth_per_address"])]
    try:
        assert all(first_line(s).startswith(b"220 ") for s in held)
        over = plain(capped, "submissions", source="127.0.0.6")
        over.settimeout(3)
        try:
            assert over.recv(100) == b""  # closed at once, no handshake awaited
        except ConnectionResetError:
            pass
        finally:
            over.close()
        other = tls(capped, "submissions", source="127.0.0.7")
        assert first_line(other).startswith(b"220 ")
        other.close()
    finally:
        for sock in held:
            sock.close()
    assert capped.wait_audit(lambda r: r["event"] == "connection.refused"
                             and r["listener"] == "submissions")


def test_submissions_failed_handshakes_give_their_slot_back(capped: Node) -> None:
    """Connections closed before or during the TLS handshake (no hello, garbage) leave
    the pre-auth cap: more of them than the cap, then a TLS client is still served."""
    for garbage in (b"", b"", b"", b"EHLO x\r\n", b"\x16\x03\x01\x00\x05hello"):
        sock = plain(capped, "submissions", source="127.0.0.8")
        if garbage:
            sock.sendall(garbage)
            assert closed(sock, 5)  # the handshake failed
        sock.close()

    def served() -> bool:
        try:
            client = tls(capped, "submissions", source="127.0.0.8")
        except (ssl.SSLError, OSError):  # refused: closed before the handshake
            return False
        try:
            return first_line(client).startswith(b"220 ")
        finally:
            client.close()

    wait_for(served, timeout=5)


# --------------------------------------------------------------------------- deadlines

@pytest.mark.parametrize("listener", ["imap", "imaps"])
def test_preauth_deadline_covers_a_skipped_literal(capped: Node, listener: str) -> None:
    """``a LOGIN {999999999+}`` before login, then a trickle of bytes: the connection is
    closed at the pre-auth deadline (2 s here), not kept while the literal is skipped."""
    sock: socket.socket = tls(capped, source="127.0.0.4") if listener == "imaps" \
        else plain(capped, listener, source="127.0.0.4")
    try:
        assert first_line(sock).startswith(b"* OK ")
        started = time.monotonic()
        sock.sendall(b"a LOGIN {999999999+}\r\n")
        assert trickle_until_closed(sock, b"x" * 1000), "still open after 10 s"
        assert time.monotonic() - started < 6
    finally:
        sock.close()


def trickle_until_closed(sock: socket.socket, chunk: bytes, rounds: int = 40) -> bool:
    """Send *chunk* every 0.25 s (*rounds* times at most); True once the server closed."""
    for _ in range(rounds):
        try:
            sock.sendall(chunk)
        except OSError:
            return True
        if closed(sock, 0.25):
            return True
    return False


def noop_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float | None]:
    """Send NOOP every 0.5 s for at most *seconds*; what the server sent and when (from
    the start) it closed the connection, None if it did not."""
    started, received = time.monotonic(), b""
    while time.monotonic() - started < seconds:
        try:
            sock.sendall(b"NOOP\r\n")
        except OSError:
            return received, time.monotonic() - started
        sock.settimeout(0.5)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                return received, time.monotonic() - started
            received += chunk
    return received, None


def test_smtp_preauth_deadline_despite_noops(capped: Node) -> None:
    """smtp.preauth_timeout = 2 s from the connection: a client that never authenticates
    but sends NOOP every 0.5 s (each resetting smtp.session_timeout) gets 421 4.4.2 and is
    closed within ~3 s; audited smtp.timeout."""
    sock = plain(capped, "submission", source="127.0.0.5")
    try:
        assert first_line(sock).startswith(b"220 ")
        received, ended = noop_until_closed(sock, 8)
    finally:
        sock.close()
    assert ended is not None and ended < 3.5, ended
    assert received.count(b"250 ") >= 2  # the NOOPs were answered until then
    assert re.search(rb"(?m)^421 4\.4\.2 .*timeout", received), received
    assert capped.wait_audit(lambda r: r["event"] == "smtp.timeout"
                             and r["reason"] == "preauth_timeout"
                             and r["remote_addr"] == "127.0.0.5")


def test_smtp_authenticated_session_outlives_the_preauth_deadline(capped: Node) -> None:
    with smtplib.SMTP("127.0.0.1", capped.ports["submission"], timeout=10) as client:
        client.starttls(context=capped.client_context())
        client.login(ALICE, PASSWORD)
        for _ in range(8):  # 4 s, twice the pre-auth deadline
            assert client.noop()[0] == 250
            time.sleep(0.5)
        late = f"From: {ALICE}\r\nSubject: late\r\n\r\nok\r\n".encode()
        assert client.sendmail(ALICE, [BOB], late) == {}


# --------------------------------------------------------------------------- memory

def test_smtp_data_over_the_memory_budget_gets_452(capped: Node) -> None:
    """limits.pending_bytes = 1 MiB: a 1.3 MB message gets 452 4.3.1 (temporary), audited,
    and the session goes on; the budget is given back."""
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 1300  # < max_message_size
    with smtplib.SMTP("127.0.0.1", capped.ports["submission"], timeout=30) as client:
        client.starttls(context=capped.client_context())
        client.login(ALICE, PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(ALICE, [BOB], body)
        assert refused.value.smtp_code == 452
        error = refused.value.smtp_error
        assert (error if isinstance(error, bytes) else error.encode()).startswith(b"4.3.1")
        client.rset()
        small = f"From: {ALICE}\r\nSubject: small\r\n\r\nok\r\n".encode()
        assert client.sendmail(ALICE, [BOB], small) == {}
    assert capped.wait_audit(lambda r: r["event"] == "smtp.message.refused"
                             and str(r["reason"]).startswith("452"))


def test_data_timeout_bounds_a_refused_message_trickling_in(capped: Node) -> None:
    """A message past the limits is read and dropped within the DATA phase's one
    smtp.data_timeout (3 s here), however slowly its bytes keep coming."""
    with smtplib.SMTP("127.0.0.1", capped.ports["submission"], timeout=30) as client:
        client.starttls(context=capped.client_context())
        client.login(ALICE, PASSWORD)
        client.mail(ALICE)
        client.rcpt(BOB)
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        sock = client.sock
        assert sock is not None
        started = time.monotonic()
        sock.sendall(b"Subject: big\r\n\r\n" + (b"w" * 998 + b"\r\n") * 1600)
        assert trickle_until_closed(sock, b"w" * 100), "still open after 10 s"
        assert time.monotonic() - started < 8


def test_imap_literals_share_the_memory_budget(capped: Node) -> None:
    """A 600 kB APPEND literal being read holds its bytes: a second one at the same time
    does not fit 1 MiB and gets NO [UNAVAILABLE] before its continuation; once the first
    is stored, the second is accepted."""
    size = 600_000
    message = b"Subject: a\r\n\r\n" + b"z" * (size - 16) + b"\r\n"
    first, second = tls(capped, source="127.0.0.5"), tls(capped, source="127.0.0.5")
    files = [first.makefile("rb"), second.makefile("rb")]
    try:
        for sock, f in zip((first, second), files, strict=True):
            assert f.readline().startswith(b"* OK ")
            sock.sendall(b'l LOGIN ' + BOB.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
            while not f.readline().startswith(b"l OK"):
                pass
        first.sendall(b"a APPEND INBOX {%d}\r\n" % len(message))
        assert files[0].readline().startswith(b"+ ")
        first.sendall(message[:1000])  # holds its reservation while the rest is awaited
        second.sendall(b"b APPEND INBOX {%d}\r\n" % len(message))
        assert files[1].readline().startswith(b"b NO [UNAVAILABLE]")
        first.sendall(message[1000:] + b"\r\n")
        while not (line := files[0].readline()).startswith(b"a "):
            pass
        assert line.startswith(b"a OK"), line
        second.sendall(b"c APPEND INBOX {%d}\r\n" % len(message))
        assert files[1].readline().startswith(b"+ ")
        second.sendall(message + b"\r\n")
        while not (line := files[1].readline()).startswith(b"c "):
            pass
        assert line.startswith(b"c OK"), line
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------- accept errors

def test_accept_errors_logged_once_per_interval(tmp_path: Path) -> None:
    """Descriptors exhausted (RLIMIT_NOFILE lowered on the running server): accept() fails
    with EMFILE; the log gets one line per interval, no traceback per failure."""
    node = make_node(tmp_path, with_whitelist=False,
                     extra_config="\n[limits]\nreport_interval = 30.0\n")
    node.start()
    assert node.process is not None and node.log_path is not None
    log_path = node.log_path
    socks: list[socket.socket] = []
    try:
        offset = log_path.stat().st_size
        resource.prlimit(node.process.pid, resource.RLIMIT_NOFILE, (64, 64))
        deadline = time.monotonic() + 6
        for index in range(150):  # pre-auth cap 20 per address: spread over sources
            if time.monotonic() > deadline:
                break
            source = f"127.0.0.{10 + index // 15}"
            try:
                socks.append(plain(node, "imap", source=source))
            except OSError:
                break
        time.sleep(3.5)  # asyncio retries accept() every second
        log = log_path.read_bytes()[offset:]
        assert b"out of system resource" in log
        assert log.count(b"out of system resource") <= 2, log[-2000:]
        assert b"Traceback" not in log, log[-2000:]
    finally:
        for sock in socks:
            sock.close()
        node.stop()
