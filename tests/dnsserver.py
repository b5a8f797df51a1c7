"""A small authoritative DNS server on loopback for tests (dnspython message API).

Serves MX and A records from a dict over UDP and TCP (RFC 1035 §4.2), answers NXDOMAIN for
names it does not know and NOERROR/no data for known names without the asked type. Records
can be changed while it runs (``set``).
"""

from __future__ import annotations

import errno
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = dict[tuple[str, str], list[str]]  # (name, type) -> rdata texts
BIND_TRIES = 50


def _bind_pair(host: str, port: int, udp_handler: type[socketserver.BaseRequestHandler],
               tcp_handler: type[socketserver.BaseRequestHandler]
               ) -> tuple[socketserver.ThreadingUDPServer, socketserver.ThreadingTCPServer]:
    """A TCP and a UDP server on one port number (RFC 1035 §4.2: a name server answers on
    both). TCP is bound first on an ephemeral port, then UDP on the same number; another
    process may hold that UDP port (EADDRINUSE), so both are closed and a new port tried."""
    for _ in range(BIND_TRIES):
        tcp = socketserver.ThreadingTCPServer((host, port), tcp_handler, bind_and_activate=False)
        tcp.allow_reuse_address = True
        try:
            tcp.server_bind()
            tcp.server_activate()
            udp = socketserver.ThreadingUDPServer((host, int(tcp.server_address[1])),
                                                  udp_handler, bind_and_activate=False)
        except OSError:
            tcp.server_close()
            raise
        try:
            udp.server_bind()
        except OSError as exc:
            udp.server_close()
            tcp.server_close()
            if exc.errno != errno.EADDRINUSE or port:
                raise
            continue  # that number is taken over UDP: another ephemeral port
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port free over both UDP and TCP in {BIND_TRIES} tries")


class DnsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.records: Records = {}
        self.lock = threading.Lock()
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data)
                if reply:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data)
                if reply:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        self.udp, self.tcp = _bind_pair(host, port, Udp, Tcp)
        self.port = int(self.tcp.server_address[1])
        self.host = host
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.udp, self.tcp)]

    def set(self, name: str, rtype: str, values: list[str]) -> None:
        with self.lock:
            key = (name.lower().rstrip("."), rtype.upper())
            if values:
                self.records[key] = values
            else:
                self.records.pop(key, None)

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            known = any(n == name for n, _ in self.records)
            values = list(self.records.get((name, rtype), []))
        if not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif values:
            response.answer.append(dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, question.rdtype, values))
        return response.to_wire()

    def start(self) -> DnsServer:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()
