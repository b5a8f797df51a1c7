"""The runtime of ``mss serve`` in-process: started and stopped by an event, from a thread."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mss.app import open_app
from mss.server import serve
from tests.node import Node, make_node


def open_sockets() -> set[str]:
    """The sockets this process holds open (their /proc inode names)."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith("socket:"):
            names.add(target)
    return names


@dataclass
class InThread:
    """``serve`` in the event loop of a thread of its own, stopped by an event."""

    node: Node
    ready: threading.Event = field(default_factory=threading.Event)
    left: list[asyncio.Task[object]] = field(default_factory=list)
    error: BaseException | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None

    def run(self) -> None:
        app = open_app(self.node.config)
        try:
            asyncio.run(self._main(app))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            app.close()

    async def _main(self, app: object) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        up = asyncio.Event()
        waiter = asyncio.create_task(up.wait())
        waiter.add_done_callback(lambda t: None if t.cancelled() else self.ready.set())
        await serve(app, stop=self.stop, ready=up)  # type: ignore[arg-type]
        self.left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def test_serve_in_a_thread_stops_clean_and_serves_again(tmp_path: Path) -> None:
    """serve(stop=...) installs no signal handler (a non-main thread may run it): setting
    the event answers an idle SMTP session 421 4.3.2 (RFC 5321 §3.8) and an IMAP one
    BYE (RFC 3501 §7.1.5), and leaves no task, no socket and no committer thread; a
    second serve in the same process then binds the same ports and serves again."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # audit shipped over UDP
    receiver.bind(("127.0.0.1", 0))
    node = make_node(tmp_path, extra_config=(
        "\n[delivery]\nenabled = true\n"  # no row queued: no DNS, no connection
        f'\n[audit]\nship_interval = 0.2\n\n[[audit.destinations]]\nname = "udp"\n'
        f'transport = "udp"\nhost = "127.0.0.1"\nport = {receiver.getsockname()[1]}\n'))
    before = open_sockets()
    for _ in range(2):
        served = InThread(node)
        thread = threading.Thread(target=served.run, name="in-process-node")
        thread.start()
        assert served.ready.wait(60), served.error
        smtp = socket.create_connection(("127.0.0.1", node.ports["mx"]), timeout=10)
        imap = socket.create_connection(("127.0.0.1", node.ports["imap"]), timeout=10)
        assert smtp.recv(1024).startswith(b"220 ")
        assert imap.recv(1024).startswith(b"* OK ")
        assert served.loop is not None and served.stop is not None
        t0 = time.monotonic()
        served.loop.call_soon_threadsafe(served.stop.set)
        assert smtp.recv(1024) == b"421 4.3.2 Service shutting down\r\n"
        assert imap.recv(1024) == b"* BYE Server shutting down\r\n"
        thread.join(30)
        assert not thread.is_alive() and served.error is None
        assert time.monotonic() - t0 < 10  # nothing in flight: no wait for the deadline
        assert served.left == []
        smtp.close()
        imap.close()
        assert open_sockets() == before
        assert not [t for t in threading.enumerate() if t.name == "mss-committer"]
    receiver.settimeout(5)
    assert receiver.recv(4096)  # the shipper ran (and its socket was closed above)
    receiver.close()
    events = [r["event"] for r in node.audit()]
    assert events.count("server.start") == 2 and events.count("server.stop") == 2

    # a port taken (IMAP binds after SMTP): serve fails, the SMTP ports it bound released
    with socket.create_server(("127.0.0.1", node.ports["imaps"])):
        before = open_sockets()
        served = InThread(node)
        thread = threading.Thread(target=served.run, name="in-process-node")
        thread.start()
        thread.join(60)
        assert isinstance(served.error, OSError) and not served.ready.is_set()
        assert open_sockets() == before
        assert not [t for t in threading.enumerate() if t.name == "mss-committer"]
    events = [r["event"] for r in node.audit()]
    assert events.count("server.start") == 2 and events.count("server.stop") == 2
