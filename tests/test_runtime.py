"""The runtime of ``mss serve`` in-process: started and stopped by an event, from a thread."""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
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


# --------------------------------------------- no module global holds runtime state (issue 13)
#
# The rule: no ``global`` statement in the five server packages, and every name a module
# binds by assignment at its top level (``x = ...``, ``x: T = ...``, also under a top-level
# ``if``/``try``) holds, once imported, a value nothing can change: None, bool, int, float,
# str, bytes, a date, an Enum member, an ASN.1 OID; a tuple, frozenset or MappingProxyType
# of such values; a
# frozen dataclass instance whose fields are such values; or one of the declarations
# below (compiled regexes, loggers, typing constructs, SQLAlchemy schema and SQL
# expressions, the CLI's Typer apps, a ctypes callback). ``__all__`` is exempt. A table a
# module keeps as a constant is a tuple, frozenset or MappingProxyType; a cache, a set of
# tasks, a default instance belongs to the object that owns it (the Runtime, Mailstore,
# a listener, a pool).

def _declaration(value: object) -> bool:
    import ctypes
    import logging
    import re
    import types
    import typing

    import structlog
    import typer
    from sqlalchemy import MetaData
    from sqlalchemy.sql import ClauseElement
    from sqlalchemy.sql.base import ReadOnlyColumnCollection
    from sqlalchemy.sql.schema import SchemaItem
    from sqlalchemy.types import TypeEngine

    kinds: tuple[type, ...] = (
        re.Pattern, logging.Logger, structlog.stdlib.BoundLogger, typing.TypeVar,
        typing.ParamSpec, types.GenericAlias, types.UnionType, type, types.FunctionType,
        MetaData, SchemaItem, ClauseElement, ReadOnlyColumnCollection, TypeEngine,
        typer.Typer,
        ctypes._CFuncPtr)  # type: ignore[attr-defined]
    return (isinstance(value, kinds) or type(value).__module__ == "typing"
            or type(value).__name__ == "BoundLoggerLazyProxy")


def immutable(value: object) -> bool:
    """*value* can never change (the rule above); declarations count as immutable."""
    import dataclasses
    import datetime
    import enum
    import types

    from cryptography.x509 import ObjectIdentifier

    scalars = (bool, int, float, str, bytes, datetime.date, datetime.time, datetime.timedelta,
               enum.Enum, ObjectIdentifier)
    if value is None or isinstance(value, scalars):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(immutable(v) for v in value)
    if isinstance(value, types.MappingProxyType):
        return all(immutable(k) and immutable(v) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
                and all(immutable(getattr(value, f.name)) for f in dataclasses.fields(value)))
    return type(value) is object or _declaration(value)  # object(): a sentinel


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for statement in body:
        if isinstance(statement, (ast.If, ast.Try)):
            yield from _top_level(statement.body)
            yield from _top_level(statement.orelse)
            for handler in getattr(statement, "handlers", []):
                yield from _top_level(handler.body)
            yield from _top_level(getattr(statement, "finalbody", []))
        else:
            yield statement


def assigned_names(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Names bound by an assignment at module level (tuple targets unpacked), and line."""
    for statement in _top_level(tree.body):
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)) and \
                (not isinstance(statement, ast.AnnAssign) or statement.value is not None):
            targets = [statement.target]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    yield node.id, statement.lineno


def module_state(module: str, path: Path) -> list[str]:
    """What *module* breaks of the rule: ``global`` statements and mutable globals."""
    import importlib

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = [f"{module}:{node.lineno}: global {', '.join(node.names)}"
             for node in ast.walk(tree) if isinstance(node, ast.Global)]
    loaded = importlib.import_module(module)
    for name, line in assigned_names(tree):
        if name == "__all__" or not hasattr(loaded, name):
            continue  # not bound on import: under ``if __name__ == "__main__"``
        value = getattr(loaded, name)
        if not immutable(value):
            found.append(f"{module}:{line}: {name} is a {type(value).__name__}")
    return found


def test_no_module_global_holds_runtime_state() -> None:
    from tests.test_layers import modules

    found = [text for module, path in modules().items() if not module.endswith("__main__")
             for text in module_state(module, path)]
    assert not found, "module globals that can change (move them into their owner):\n" + \
        "\n".join(found)


def test_the_state_checker_sees_what_it_must(tmp_path: Path) -> None:
    """The rule flags a global statement, a mutable table, a set of tasks, a cache instance
    and a mutable field of a frozen dataclass, and passes constants and declarations (a
    checker that sees nothing would pass vacuously)."""
    import re
    import sys
    import types
    from dataclasses import dataclass as dc

    probe = tmp_path / "state_probe.py"
    probe.write_text(
        "import asyncio, re, types\nfrom dataclasses import dataclass, field\n"
        "class Cache:\n    pass\n"
        "@dataclass(frozen=True)\nclass Frozen:\n    x: int\n"
        "@dataclass(frozen=True)\nclass Holder:\n    x: list[int] = field(default_factory=list)\n"
        "_keyring = None\n"
        "def install(k: object) -> None:\n    global _keyring\n    _keyring = k\n"
        "TABLE = {'a': 1}\n_closing: set[asyncio.Task[None]] = set()\nCACHE = Cache()\n"
        "HOLDER = Holder()\nOK = Frozen(1)\nTUPLE = (1, ('a', b'b'), frozenset({2}))\n"
        "PROXY = types.MappingProxyType({'a': (1,)})\nPATTERN = re.compile('x')\n"
        "if True:\n    LATE = [1]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        found = module_state("state_probe", probe)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("state_probe", None)
    assert [re.sub(r":\d+:", ":", f) for f in found] == [
        "state_probe: global _keyring", "state_probe: TABLE is a dict",
        "state_probe: _closing is a set", "state_probe: CACHE is a Cache",
        "state_probe: HOLDER is a Holder", "state_probe: LATE is a list"]

    @dc(frozen=True)
    class Point:
        x: int

    assert immutable(Point(1)) and immutable(types.MappingProxyType({"a": Point(2)}))
    assert not immutable(types.MappingProxyType({"a": [1]})) and not immutable((1, {2}))
