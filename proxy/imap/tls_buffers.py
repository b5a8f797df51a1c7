"""A smaller receive buffer for the TLS transport of an IMAP connection.

asyncio's TLS transport (``asyncio.sslproto.SSLProtocol``, CPython 3.11+) reads the socket
into a buffer of its own of ``max_size`` = 256 KiB, allocated and zero-filled for every
connection and kept for its life: 256 KiB resident per connection, most of what an idle
IMAP session (RFC 2177 IDLE) costs. A TLS record carries at most 16 KiB of data (RFC 8446
§5.1), and the protocol decrypts record by record whatever the buffer: a buffer of
:data:`TLS_READ` bytes reads two full records per receive call, a large APPEND takes a few
more calls, and 10 000 sessions keep 320 MiB less.

Applied after the handshake (implicit TLS and STARTTLS); a transport of another event loop
(uvloop's has no such attributes) is left as it is.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto

TLS_READ = 32 * 1024  # bytes per receive call of a TLS connection


def lean_tls(writer: asyncio.StreamWriter) -> None:
    protocol = getattr(writer.transport, "_ssl_protocol", None)
    if not isinstance(protocol, asyncio.sslproto.SSLProtocol) or \
            not hasattr(protocol, "_ssl_buffer") or protocol.max_size <= TLS_READ:
        return
    protocol.max_size = TLS_READ  # type: ignore[misc]  # the class default, per connection
    protocol._ssl_buffer = bytearray(TLS_READ)  # noqa: SLF001
    protocol._ssl_buffer_view = memoryview(  # type: ignore[attr-defined]  # noqa: SLF001
        protocol._ssl_buffer)  # noqa: SLF001
