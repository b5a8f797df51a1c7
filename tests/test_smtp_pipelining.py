"""SMTP replies on the wire: RFC 2920 pipelining and one write per burst of replies.

A raw TLS client on the MX (its own memory BIO, so the test sees the TLS records as they
come): a pipelined group is answered in order, with exact bytes, all its replies in ONE
TLS record (the server holds them until it would wait for input); the EHLO reply is one
record; errors inside a group keep RFC 2920 semantics (each command answered in turn, DATA
refused when no RCPT succeeded, the session still usable).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.smtp import protocol
from tests.node import DOMAIN, Node, inbox_count, make_node
from tests.node import simple_message as message

BOB = f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
APPLICATION_DATA = 23  # TLS record content type (RFC 8446 §5.1: every 1.3 record after
# the handshake is opaque application data)


class RecordClient:
    """STARTTLS on the MX, then TLS over a memory BIO: :meth:`exchange` sends bytes and
    returns the plaintext and the number of TLS records that carried it."""

    def __init__(self, node: Node) -> None:
        self.sock = socket.create_connection(("127.0.0.1", node.ports["mx"]), timeout=10)
        self.plain = self.sock.makefile("rb")
        assert self.plain.readline().startswith(b"220 ")
        self.sock.sendall(b"EHLO mx.operator-a.fr\r\n")
        while not self.plain.readline().startswith(b"250 "):
            pass
        self.sock.sendall(b"STARTTLS\r\n")
        assert self.plain.readline().startswith(b"220 ")
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = node.mx_client_context().wrap_bio(self.incoming, self.outgoing)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                self.incoming.write(self.sock.recv(65536))
        self._send_pending()
        self.raw = b""  # received TLS bytes not yet split into records

    def _send_pending(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def exchange(self, data: bytes, until: bytes) -> tuple[bytes, int]:
        """Send *data*; read until the plaintext ends with *until* (a last reply line).
        (plaintext, application data records received for it)."""
        self.tls.write(data)
        self._send_pending()
        text, records = b"", 0
        deadline = time.monotonic() + 10
        while not re.search(re.escape(until) + rb"[^\r\n]*\r\n$", text):
            assert time.monotonic() < deadline, text
            self.raw += self.sock.recv(65536)
            while len(self.raw) >= 5:
                size = int.from_bytes(self.raw[3:5], "big")
                if len(self.raw) < 5 + size:
                    break
                record, self.raw = self.raw[:5 + size], self.raw[5 + size:]
                records += record[0] == APPLICATION_DATA
                self.incoming.write(record)
            try:
                while chunk := self.tls.read(65536):  # b"": the server's close_notify
                    text += chunk
            except ssl.SSLWantReadError:
                pass
        return text, records

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def node(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node on each event loop (server.event_loop): asyncio's served in a thread of this
    process, uvloop's by ``mss serve``."""
    loop = request.param  # uvloop is in the test extras: missing, the serve fails (no skip)
    served = make_node(tmp_path_factory.mktemp("node"), in_process=loop == "asyncio")
    if loop == "uvloop":
        served.config.write_text(served.config.read_text().replace(
            "[server]\n", '[server]\nevent_loop = "uvloop"\n', 1))
    served.start()
    yield served
    served.stop()


@pytest.fixture
def client(node: Node) -> Iterator[RecordClient]:
    peer = RecordClient(node)
    # TLS 1.3 session tickets come after the handshake, as records of their own: a
    # first command takes them out of the way of the counts below
    assert peer.exchange(b"NOOP\r\n", b"250 ")[0] == b"250 OK\r\n"  # no EHLO yet
    yield peer
    peer.close()


def test_ehlo_reply_is_one_record(client: RecordClient) -> None:
    text, records = client.exchange(b"EHLO mx.operator-a.fr\r\n", b"250 HELP")
    lines = text.split(b"\r\n")[:-1]
    assert lines[0].startswith(b"250-") and lines[-1] == b"250 HELP"
    assert b"250-PIPELINING" in lines and len(lines) >= 6
    assert records == 1


def test_pipelined_transaction_in_order_exact_bytes_one_record_per_group(
        client: RecordClient, node: Node) -> None:
    before = inbox_count(node, BOB)
    client.exchange(b"EHLO mx.operator-a.fr\r\n", b"250 HELP")
    # RFC 2920 §3.1: MAIL, RCPT and DATA sent together; DATA ends the group
    text, records = client.exchange(
        f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode(),
        b"354 ")
    assert text == (b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
                    b"250 2.1.5 Recipient OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert records == 1
    # the message, its end and a NOOP together: the 250 (after the commit), then NOOP's
    text, records = client.exchange(message(REMOTE, BOB) + b".\r\nNOOP\r\n", b"250 2.0.0 OK")
    assert re.fullmatch(rb"250 2\.0\.0 OK queued as [0-9a-f]{16}\r\n250 2\.0\.0 OK\r\n",
                        text), text
    assert records == 1
    # QUIT: its 221 at once, then the close (TLS 1.3's close_notify: a record of its own)
    assert client.exchange(b"QUIT\r\n", b"221 ")[0] == b"221 2.0.0 Bye\r\n"
    assert inbox_count(node, BOB) == before + 1  # a duplicate RCPT: one copy


def test_pipelined_errors_keep_rfc2920_semantics(client: RecordClient,
                                                 node: Node) -> None:
    client.exchange(b"EHLO mx.operator-a.fr\r\n", b"250 HELP")
    # every RCPT refused: DATA gets 503 (RFC 2920 §3.1), the session goes on
    text, records = client.exchange(
        f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\nBOGUS\r\nDATA\r\n".encode(),
        b"503 ")
    assert text == (b"250 2.1.0 Sender OK\r\n"
                    b"550 5.1.1 Recipient unknown\r\n"
                    b'500 5.5.2 Error: command "BOGUS" not recognized\r\n'
                    b"503 5.5.1 Error: need RCPT command\r\n"), text
    assert records == 1
    text, records = client.exchange(b"RSET\r\nNOOP\r\n", b"250 2.0.0 OK")
    assert text == b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
    assert records == 1


def test_burst_of_many_commands_answered_in_order(client: RecordClient) -> None:
    """A burst of 3 000 commands (past the bytes one write holds): every reply, in
    order, in a few records (not one per reply)."""
    count = 3000  # ~30 KB of commands, ~24 KB of replies (no EHLO: no enhanced codes)
    text, records = client.exchange(b"".join(f"NOOP {i}\r\n".encode() for i in range(count))
                                    + b"QUIT\r\n", b"221 ")
    assert text == b"250 OK\r\n" * count + b"221 Bye\r\n"
    assert records <= 20


# --------------------------------------------------------------------------- MAIL/RCPT paths

_PATH_ALPHABET = "ab.@<> \t()\"\\[]:,;_-+=SIZE9"


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(alphabet=_PATH_ALPHABET, max_size=24),
    st.builds(lambda local, domain, rest: f"<{local}@{domain}>{rest}",
              st.from_regex(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,8}", fullmatch=True),
              st.from_regex(r"[a-z0-9._-]{1,8}", fullmatch=True),
              st.text(alphabet=" \tSIZE=9(x)", max_size=10))))
def test_fast_path_reading_agrees_with_aiosmtpd(arg: str) -> None:
    """MssSMTP._getaddr reads common paths by a regular expression: (address, rest) equal
    to aiosmtpd's header parser's for any argument."""
    ours = protocol.MssSMTP.__new__(protocol.MssSMTP)
    theirs = SMTP.__new__(SMTP)

    def read(session: SMTP) -> object:
        try:
            return session._getaddr(arg)
        except Exception as exc:  # noqa: BLE001 - the parser's own failures (arg '"')
            return type(exc)

    for limit in (0, 4):  # RFC 5321 §4.5.3.1.1: the local part's limit (64 in use)
        ours.local_part_limit = theirs.local_part_limit = limit
        assert read(ours) == read(theirs)


def test_protocol_lists_its_commands_and_mechanisms() -> None:
    """dir() of a session (what aiosmtpd's __init__ reads on every connection) holds
    every smtp_* and auth_* method of the class and nothing else."""
    expected = sorted(n for n in {*vars(protocol.MssSMTP), *vars(SMTP)}
                      if n.startswith(("smtp_", "auth_")))
    ours = protocol.MssSMTP.__new__(protocol.MssSMTP)
    assert dir(ours) == expected
