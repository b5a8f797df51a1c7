"""A real mss node for tests: initialised with the real CLI, served by the real binary."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import io
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mss.app import open_app
from mss.mailstore import mailboxes, messages
from tests.whitelist_fixtures import make_whitelist_xml

if TYPE_CHECKING:
    from tests.postgres import PgCluster

REPO = Path(__file__).resolve().parents[1]
MSS = [sys.executable, "-m", "mss"]
_MSS = list(MSS)  # a test may prefix MSS (a wrapper command): serve then runs it
DOMAIN = "demo.mssante.fr"
PASSWORD = "correct horse battery"
# remote operators' domains on the test whitelist
REMOTE_DOMAINS = [("operator-a.mssante.fr", "CN=mx.operator-a.fr,OU=312345678,O=Operator A,"
                   "ST=Paris (75),C=FR"),
                  ("operator-b.mssante.fr", "CN=mx.operator-b.fr,OU=398765432,O=Operator B,"
                   "ST=Gironde (33),C=FR")]
OPERATOR_A_DN = REMOTE_DOMAINS[0][1]  # the client certificate tests present on the MX


def _child_env() -> dict[str, str]:
    """The environment of the mss processes tests start: compiled bytecode kept (in a
    cache outside the repository) even where PYTHONDONTWRITEBYTECODE is set, so that each
    of the suite's hundreds of 'mss' processes does not compile the sources again
    (about 0.2 s of CPU each)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "mss-test-pycache"))
    env["COLUMNS"] = "80"  # the CLI's tables as an 80-column terminal shows them (issue 17)
    return env


CHILD_ENV = _child_env()


class _CliServer:
    """The test process's fork server (tests/cli_server.py), started at the first command
    and ended with the process; one command at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._files = Path(tempfile.mkdtemp(prefix="mss-cli-"))

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "tests.cli_server"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          cwd=REPO, env=CHILD_ENV)
            atexit.register(self._proc.kill)
        return self._proc

    def run(self, args: list[str], input: str | None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        import json
        import select

        with self._lock:
            server = self._server()
            assert server.stdin is not None and server.stdout is not None
            paths = {k: self._files / k for k in ("stdin", "stdout", "stderr")}
            paths["stdin"].write_text(input or "", encoding="utf-8")
            request = {"args": args, **{k: str(v) for k, v in paths.items()}}
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            ready, _, _ = select.select([server.stdout], [], [], timeout)
            line = server.stdout.readline() if ready else b""
            if not line:
                server.kill()
                raise AssertionError(f"mss {' '.join(args)}: no answer in {timeout} s")
            rc = int(json.loads(line)["rc"])
            out, err = (paths[k].read_text(encoding="utf-8", errors="replace")
                        for k in ("stdout", "stderr"))
        return subprocess.CompletedProcess([*MSS, *args], rc, out, err)


CLI = _CliServer()


class _SpawnServer:
    """The test process's fork server of ``mss serve`` (tests/cli_server.py --spawn): each
    node's serve is forked from one process that imported the server once (about 1 s of
    CPU saved per start), with the environment and files a subprocess would get."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._files = Path(tempfile.mkdtemp(prefix="mss-serve-"))
        self._count = 0

    def spawn(self, args: list[str], log: Path) -> ServedProcess:
        import json
        import select

        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen([sys.executable, "-m", "tests.cli_server",
                                               "--spawn"], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, cwd=REPO, env=CHILD_ENV)
            server = self._proc  # killed at exit after the serves (_kill_served)
            assert server.stdin is not None and server.stdout is not None
            self._count += 1
            rc = self._files / f"{self._count}.rc"
            request = {"args": args, "log": str(log), "rc": str(rc), "cwd": str(REPO),
                       "env": dict(CHILD_ENV)}
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            ready, _, _ = select.select([server.stdout], [], [], 120)
            line = server.stdout.readline() if ready else b""
            if not line:
                server.kill()
                raise AssertionError(f"mss {' '.join(args)}: the spawn server did not answer")
        return ServedProcess([*MSS, *args], int(json.loads(line)["pid"]), rc)


SPAWN = _SpawnServer()


class ServedProcess:
    """What tests use of a subprocess.Popen (pid, poll, wait, send_signal, kill, terminate,
    returncode) for a serve forked by the spawn server: signals go through a pidfd (never to
    a reused pid), the exit code comes from the rc file its parent writes."""

    def __init__(self, args: list[str], pid: int, rc: Path) -> None:
        self.args, self.pid, self._rc = args, pid, rc
        self.returncode: int | None = None
        self.stdout = self.stderr = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # exited and reaped already: its rc file tells
            self._pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None and self._rc.exists():
            self.returncode = int(self._rc.read_text())
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def set_child_env(name: str, value: str) -> None:
    """Give the mss processes tests start (serve, and the CLI server: restarted if running)
    *name*=*value* (tests/softhsm.py: SOFTHSM2_CONF)."""
    if CHILD_ENV.get(name) == value:
        return
    CHILD_ENV[name] = value
    with CLI._lock:
        if CLI._proc is not None and CLI._proc.poll() is None:
            CLI._proc.kill()
            CLI._proc.wait()
        CLI._proc = None


def free_port(host: str = "127.0.0.1", *also: str) -> int:
    """A TCP port free on *host* and on every address in *also* (a port two test
    operators both listen on); still a guess: Node.start re-picks on EADDRINUSE."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if all(_bindable(other, port) for other in also):
                return port
    raise OSError(f"no TCP port free on {host} and {', '.join(also)}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_CERT_LOCK = threading.Lock()
_SERVED: list[Any] = []  # every mss serve this test process started (Popen or ServedProcess)


@atexit.register
def _kill_served() -> None:
    """A test that failed before stopping its node leaves no server behind it: each one
    still running when the test process ends is killed (its workers follow it)."""
    for process in _SERVED:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
    spawner = SPAWN._proc
    if spawner is not None and spawner.poll() is None:
        spawner.kill()
        spawner.wait()


class PortTaken(AssertionError):
    """mss serve could not bind a listener port (EADDRINUSE)."""


@dataclass
class Node:
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | ServedProcess | None = None
    log_path: Path | None = None
    host: str = "127.0.0.1"  # listeners' address (two-operator tests use 127.0.0.2/.3)
    domain: str = DOMAIN
    fixed_ports: frozenset[str] = frozenset()  # listeners whose port others rely on
    started: bool = False

    @property
    def config(self) -> Path:
        return self.data_dir / "mss.toml"

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "pki" / "ca.crt"

    def cli(self, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``mss --config <node> ARGS`` in a process forked from the CLI server (the real
        CLI, without an interpreter start per command: tests/cli_server.py)."""
        proc = CLI.run(["--config", str(self.config), *args], input)
        if check and proc.returncode != 0:
            raise AssertionError(f"mss {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr}{proc.stdout}")
        return proc

    def cli_json(self, *args: str) -> Any:
        """``mss ... ARGS --json``, parsed (mss.cli_output: a list, or one object)."""
        import json

        return json.loads(self.cli(*args, "--json").stdout)

    def cli_process(self, *args: str, input: str | None = None,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        """The same command in a real ``python -m mss`` process (tests of the CLI's own
        start: its imports, its time)."""
        proc = subprocess.run([*MSS, "--config", str(self.config), *args], input=input,
                              capture_output=True, text=True, cwd=REPO, timeout=120,
                              env=CHILD_ENV)
        if check and proc.returncode != 0:
            raise AssertionError(f"mss {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr}{proc.stdout}")
        return proc

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = False  # tests connect to 127.0.0.1
        return ctx

    def operator_certificate(self, name: str = "test-operator-a",
                             subject: str = OPERATOR_A_DN) -> tuple[Path, Path]:
        """A client certificate issued by this node's CA (the MX's trust anchor) with an
        operator's subject DN listed on the test whitelist; written once, reused."""
        from trustspace.pki import issue_certificate

        pki = self.data_dir / "pki"
        cert, key = pki / f"{name}.crt", pki / f"{name}.key"
        with _CERT_LOCK:  # test threads (concurrent senders) must not read a half-written key
            if not cert.exists():
                cert, key = issue_certificate(pki, name, [f"{name}.test"], subject=subject)
        return cert, key

    def mx_client_context(self) -> ssl.SSLContext:
        """TLS client context of a peer operator: trusts the node, presents a listed DN."""
        ctx = self.client_context()
        ctx.load_cert_chain(*self.operator_certificate())
        return ctx

    def mx_tls_socket(self, client_cert: bool = True) -> ssl.SSLSocket:
        """A raw TLS socket on the MX after greeting, EHLO and STARTTLS (for exact bytes);
        presents the operator certificate unless *client_cert* is False."""
        sock = socket.create_connection(("127.0.0.1", self.ports["mx"]), timeout=10)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        sock.sendall(b"EHLO mx.operator-a.fr\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        ctx = self.mx_client_context() if client_cert else self.client_context()
        return ctx.wrap_socket(sock)

    def start(self, timeout: float = 60.0) -> None:  # imports, keys, TLS: slow when loaded
        """Serve; on a first start, a listener port another process took since free_port
        picked it (EADDRINUSE) is picked again, up to 3 times (not the fixed ones)."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if self.started or attempt == 2:
                    raise
                self._repick_ports()
        raise AssertionError("unreachable")

    def _repick_ports(self) -> None:
        text = self.config.read_text()
        for name in self.ports:
            if name in self.fixed_ports:
                continue
            port = free_port(self.host)
            text, count = re.subn(rf"(\[listeners\.{name}\]\nhost = \"[^\"]*\"\nport = )\d+",
                                  rf"\g<1>{port}", text)
            assert count == 1
            self.ports[name] = port
        self.config.write_text(text)

    def _start(self, timeout: float) -> None:
        assert self.process is None
        self.log_path = self.data_dir / "serve.log"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # restarts
        if MSS == _MSS:  # forked from the spawn server
            self.log_path.touch()
            self.process = SPAWN.spawn(["--config", str(self.config), "serve"], self.log_path)
        else:  # a test wraps the command (tests/test_metrics.py: setpriv): a real process
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen([*MSS, "--config", str(self.config), "serve"],
                                                stdout=log, stderr=log, cwd=REPO, env=CHILD_ENV)
        _SERVED.append(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                output = self.log_path.read_text(errors="replace")
                if b"address already in use" in self.log_path.read_bytes()[offset:]:
                    raise PortTaken(f"mss serve exited: {output}")
                raise AssertionError(f"mss serve exited: {output}")
            if b'"event": "ready"' in self.log_path.read_bytes()[offset:]:
                self.started = True
                return
            time.sleep(0.05)
        raise AssertionError("mss serve did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def audit(self, *args: str) -> list[dict[str, object]]:
        """Audit rows, oldest first, read from the database in this process (a CLI process
        per read cost seconds on a loaded machine). *args* are ``mss audit list`` filters
        (``"--event", "smtp."``); unlike the CLI, reading adds no ``audit.read`` record.
        Rows go through JSON as the CLI's ``--json`` lines do."""
        import json

        from audit.cli import _since
        from audit.journal import query
        from mss.config import load_config
        from mss.db import make_engine

        options = dict(zip(args[::2], args[1::2], strict=True))
        filters: dict[str, object] = {}
        for option, value in options.items():
            name = option.removeprefix("--").replace("-", "_")
            assert name in _AUDIT_FILTERS, f"audit filter {option} unknown to tests/node.py"
            filters[name] = (int(value) if name == "outcome"
                             else _since(value, option) if name in ("since", "until")
                             else value)
        engine = make_engine(load_config(self.config).database_url, writer=False)
        try:
            with engine.connect() as conn:
                rows = list(query(conn, **filters))  # type: ignore[arg-type]
        finally:
            engine.dispose()
        return [json.loads(json.dumps(row, ensure_ascii=False, sort_keys=True)) for row in rows]

    def audit_cli(self, *args: str) -> list[dict[str, object]]:
        """The same rows through the real ``mss audit list --json`` (adds ``audit.read``)."""
        import json

        out = self.cli("audit", "list", "--json", *args).stdout
        rows: list[dict[str, object]] = json.loads(out)  # one JSON list (mss.cli_output)
        return rows

    def wait_audit(self, predicate: object, timeout: float = 30.0,
                   count: int = 1) -> list[dict[str, object]]:
        """Audit rows matching *predicate*, waiting for background commits until there are
        at least *count* of them (refusals are audited after their reply)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = [r for r in self.audit() if predicate(r)]  # type: ignore[operator]
            if len(rows) >= count:
                return rows
            time.sleep(0.05)
        return rows


class InProcessNode(Node):
    """A node served by ``mss.server.serve`` in a thread of this process, on an event loop
    of its own (no interpreter start, no imports: protocol tests). Its logs go to
    serve.log as a subprocess's do. Nodes that are signalled, killed, forked into workers
    or shared with real peers stay subprocesses (:class:`Node`)."""

    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _start(self, timeout: float) -> None:
        assert self._thread is None
        _start_serving(self)
        self.log_path = self.data_dir / "serve.log"
        self._error = None
        before = len(self.audit("--event", "server.start"))
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"mss-node-{self.data_dir}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                self._thread = None
                _stop_serving(self)
                error = self._error
                if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
                    raise PortTaken(f"serve failed: {error}")
                raise AssertionError(f"serve failed: {error!r}")
            if ready.is_set() and len(self.audit("--event", "server.start")) > before:
                self.started = True  # listening: server.start is written after the binds
                return
            time.sleep(0.02)
        if self._loop is not None and self._stop is not None:
            self.stop()  # whatever it got to: the next node starts clean
        raise AssertionError("in-process node did not become ready")

    def _run(self, ready: threading.Event) -> None:
        from mss.app import open_app
        from mss.server import serve

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await serve(app, stop=self._stop)

        assert self.log_path is not None
        try:
            app = open_app(self.config)
        except BaseException as exc:  # reported by _start
            self._error = exc
            return
        try:
            _LOGS.open(self.log_path, app.config.log_level)
            asyncio.run(main())
        except BaseException as exc:  # reported by _start / stop
            self._error = exc
        finally:
            app.close()
            _LOGS.close_target()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop as SIGTERM would (the only signal an in-process node takes): 0 when clean."""
        assert sig == signal.SIGTERM, "signals and kill -9: use a subprocess Node"
        assert self._thread is not None and self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "in-process node did not stop"
        self._thread = None
        _stop_serving(self)
        return 0 if self._error is None else 1


_OWNER: list[InProcessNode] = []  # the in-process node serving now (at most one)


def _start_serving(node: InProcessNode) -> None:
    """One in-process node serves at a time: the process's logs go to its serve.log
    (_LogSwitch). The server keeps no state in module globals (tests/test_runtime.py), so a
    node never sees an earlier one's folders; test_storage checks that."""
    assert not _OWNER, f"an in-process node is already serving: {_OWNER[0].data_dir}"
    _OWNER.append(node)


def _stop_serving(node: InProcessNode) -> None:
    _OWNER.remove(node)


class _LogSwitch(io.TextIOBase):
    """Where this process's mss logs go: the serving in-process node's serve.log. structlog
    is configured once per process (its loggers cache their output on first use), so the
    file changes under it, node after node."""

    def __init__(self) -> None:
        self.target: TextIO | None = None
        self.configured = False

    def write(self, text: str) -> int:
        target = self.target
        return target.write(text) if target is not None else len(text)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def open(self, path: Path, level: str) -> None:
        if not self.configured:
            from mss.logs import configure

            saved, sys.stderr = sys.stderr, self  # configure() logs to sys.stderr
            try:
                configure(level)
            finally:
                sys.stderr = saved
            self.configured = True
        self.target = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def close_target(self) -> None:
        target, self.target = self.target, None
        if target is not None:
            target.close()


_LOGS = _LogSwitch()


_AUDIT_FILTERS = ("mailbox", "since", "until", "actor", "event", "outcome", "message_id",
                  "patient")


def make_node(base: Path, *, with_whitelist: bool = True, domain: str = DOMAIN,
              host: str = "127.0.0.1", ports: dict[str, int] | None = None,
              tls: dict[str, Path] | None = None, extra_config: str = "",
              real_init: bool = False, in_process: bool = False,
              backend: str = "sqlite", pg_cluster: PgCluster | None = None,
              sending_limits: bool = True) -> Node:
    """*host*, *ports* (fixed listener ports), *tls* (cert_file/key_file/ca_file, e.g. from
    the test PKI) and *extra_config* (appended TOML tables) serve multi-operator tests;
    *sending_limits* false turns [limits.sending] off, for tests and benchmarks that load a
    mailbox with thousands of messages from one sender.

    The data dir is a copy of a template initialised once per pytest process with the real
    CLI (``mss init``, ``mailbox add`` x3, ``whitelist import``: seconds of subprocesses);
    *real_init* runs those commands for this node instead (tests of ``mss init`` itself);
    *in_process*: an :class:`InProcessNode`. *backend* ``"postgresql"``: the node's
    database is a database of its own on this process's PostgreSQL server
    (tests/postgres.py), copied from the template's; *pg_cluster*: on that cluster
    instead (a test's own, to stop, crash or replicate), copied with pg_dump."""
    data_dir = base / "node"
    if real_init:
        _initialise(data_dir, domain, with_whitelist, base / "whitelist.xml",
                    database_url(backend))
    else:
        template = TEMPLATES.get(domain, with_whitelist, backend)
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)  # as mss init does to an existing directory
        shutil.copytree(template / "node", data_dir, dirs_exist_ok=True)
        if with_whitelist:
            shutil.copy(template / "whitelist.xml", base / "whitelist.xml")
        if backend == "postgresql":
            point_at(data_dir / "mss.toml",
                      _copy_pg_database(template / "node" / "mss.toml", pg_cluster))
    node = (InProcessNode if in_process else Node)(data_dir, host=host, domain=domain,
                                                   fixed_ports=frozenset(ports or {}))
    text = node.config.read_text()
    for name in ("mx", "submission", "submissions", "relay", "imap", "imaps", "submission-cert",
                 "imap-cert", "portal",
                 "admin"):  # issue 17: /metrics, /healthz, /readyz
        port = (ports or {}).get(name) or free_port(host)
        text, count = re.subn(rf"(\[listeners\.{name}\]\nhost = )\"127.0.0.1\"(\nport = )\d+",
                              rf'\g<1>"{host}"\g<2>{port}', text)
        assert count == 1, f"mss init wrote {count} [listeners.{name}] host/port pairs: {text}"
        node.ports[name] = port
    text = text.replace("[logging]", "[whitelist]\nreload_interval = 0.5\n\n[logging]")
    for key, path in (tls or {}).items():
        text = re.sub(rf'(?m)^{key} = ".*"$', f'{key} = "{path}"', text)
    if "[delivery]" not in extra_config:  # never real DNS or port 25 from a test node
        extra_config += "\n[delivery]\nenabled = false\n"
    if not sending_limits:
        extra_config += NO_SENDING_LIMITS
    node.config.write_text(text + extra_config)
    return node


NO_SENDING_LIMITS = "".join(  # docs/limits.md: 0 turns a limit off
    f"{k} = 0\n" for k in ("\n[limits.sending]\nmessages_per_mailbox", "recipients_per_mailbox",
                          "messages_per_relay", "recipients_per_relay",
                          "append_bytes_per_mailbox"))
BACKENDS = ("sqlite", "postgresql")  # a module's BACKENDS = BACKENDS runs it on both


def database_url(backend: str) -> str:
    """The --database-url of a new node: SQLite in its data dir, or a new empty database
    on this process's PostgreSQL server."""
    if backend == "sqlite":
        return "sqlite:///mss.db"
    assert backend == "postgresql", f"unknown backend {backend!r}"
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    return cluster.url(cluster.create_database("node"))


def database_of(config: Path) -> str:
    match = re.search(r'(?m)^url = "(.*)"$', config.read_text())
    assert match, f"no database url in {config}"
    return match.group(1)


def _copy_pg_database(template_config: Path, target: PgCluster | None = None) -> str:
    from tests.postgres import shared_cluster

    cluster = shared_cluster()
    template = database_of(template_config).rsplit("/", 1)[1]
    if target is not None and target is not cluster:
        return target.url(target.copy_database(cluster, template, "node"))
    return cluster.url(cluster.create_database("node", template=template))


def point_at(config: Path, url: str) -> None:
    text = config.read_text()
    text, count = re.subn(r'(?m)^url = ".*"$', f'url = "{url}"', text, count=1)
    assert count == 1
    config.write_text(text)


def _initialise(data_dir: Path, domain: str, with_whitelist: bool, whitelist: Path,
                url: str = "sqlite:///mss.db") -> None:
    """What every test node holds, made by the real CLI: init, three mailboxes (alice and
    bob with PASSWORD, an ORG one without), the test whitelist when *with_whitelist*."""
    proc = subprocess.run([*MSS, "init", "--data-dir", str(data_dir), "--domain", domain,
                           "--database-url", url],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr
    node = Node(data_dir, domain=domain)
    for user in ("alice", "bob"):
        node.cli("mailbox", "add", f"{user}@{domain}", "--type", "PER", "--rpps",
                 "10000000001" if user == "alice" else "10000000002", "--password-stdin",
                 input=PASSWORD + "\n")
    node.cli("mailbox", "add", f"secretariat@{domain}", "--type", "ORG", "--finess",
             "750000001", "--no-password")
    if with_whitelist:
        whitelist.write_bytes(make_whitelist_xml(REMOTE_DOMAINS))
        node.cli("whitelist", "import", str(whitelist))


class Templates:
    """Initialised data dirs, one per (domain, with_whitelist), made on first use in this
    process and copied per node (a copy takes milliseconds; the CLI runs take seconds).
    Nodes of one template share the master key and the development CA: tests that need
    two trust anchors give their nodes distinct domains or their own PKI (*tls*)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple[str, bool, str], Path] = {}
        self._root: Path | None = None

    def get(self, domain: str, with_whitelist: bool, backend: str = "sqlite") -> Path:
        with self._lock:
            key = (domain, with_whitelist, backend)
            if key not in self._made:
                if self._root is None:
                    self._root = Path(tempfile.mkdtemp(prefix="mss-templates-"))
                    atexit.register(shutil.rmtree, self._root, True)
                base = self._root / f"{domain}-{'wl' if with_whitelist else 'nowl'}-{backend}"
                base.mkdir()
                _initialise(base / "node", domain, with_whitelist, base / "whitelist.xml",
                            database_url(backend))
                self._made[key] = base
            return self._made[key]


TEMPLATES = Templates()


def wait_for(predicate: object, timeout: float = 30.0, step: float = 0.2) -> bool:
    """Poll *predicate* until it is truthy: True, or AssertionError after *timeout* seconds
    (so both ``wait_for(...)`` and ``assert wait_for(...)`` fail a test on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")


def env_without_config() -> dict[str, str]:
    env = dict(CHILD_ENV)
    env.pop("MSS_CONFIG", None)
    return env


def read_all(node: Node, address: str) -> list[bytes]:
    """Every message of *address*'s INBOX, decrypted (read straight from the store)."""
    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            mailbox = mailboxes.require_mailbox(conn, address)
            return [messages.read_message(conn, app.keyring, mailbox.id, uid)
                    for uid in messages.list_uids(conn, mailbox.id)]
    finally:
        app.close()


def inbox_count(node: Node, address: str) -> int:
    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            mailbox = mailboxes.require_mailbox(conn, address)
            return mailboxes.mailbox_counts(conn, mailbox.id)[0]
    finally:
        app.close()


def make_cluster(base: Path, n: int, backend: str = "postgresql",
                 **make_node_kwargs: object) -> list[Node]:
    """*n* subprocess nodes (``mss serve`` each, ports of their own) on ONE database: the
    first is :func:`make_node`'s, the others copies of its data dir (same master key, same
    PKI and keys files) whose configs name the first one's database URL."""
    assert n >= 1 and backend == "postgresql", "several nodes share a PostgreSQL database"
    first = make_node(base / "n0", backend=backend, **make_node_kwargs)  # type: ignore[arg-type]
    assert type(first) is Node, "cluster nodes are subprocesses (kill -9)"
    url = database_of(first.config)
    nodes = [first]
    for i in range(1, n):
        data_dir = base / f"n{i}" / "node"
        shutil.copytree(first.data_dir, data_dir, ignore=shutil.ignore_patterns("serve.log"))
        node = Node(data_dir, host=first.host, domain=first.domain, ports=dict(first.ports))
        node._repick_ports()
        point_at(node.config, url)
        nodes.append(node)
    return nodes


def deliver_from_this_process(node: Node, address: str, data: bytes,
                              mail_from: str = f"alice@{DOMAIN}") -> None:
    """Commit a delivery to *address*'s INBOX from the test process (another process than
    any of the node's: only the database tells the node's sessions about it)."""
    from audit.events import Event
    from audit.journal import AuditRecord
    from mss.mailstore import deliveries

    app = open_app(node.config)
    try:
        with app.reader.connect() as conn:
            mailbox = mailboxes.require_mailbox(conn, address)
        copy = deliveries.seal_local(app.keyring, mailbox.id, address, data)
        record = AuditRecord(Event.DELIVERY_LOCAL, actor="mss", mailbox=address, rcpt=address,
                             detail={"store_id": copy.message_id, "size": copy.size})
        with app.engine.begin() as conn:
            deliveries.write_delivery(conn, deliveries.Delivery(
                mail_from=mail_from, local=[copy], queued=[], audit=[record],
                header_message_id=None))
    finally:
        app.close()


def simple_message(sender: str, rcpt: str, subject: str = "Compte rendu",
                   body: str = "Bonjour.\n") -> bytes:
    """A small text message with a fresh Message-ID, CRLF line ends (SMTP DATA)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    msg["Message-ID"] = f"<{time.time_ns()}@test.example>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def mx_session(node: Node) -> smtplib.SMTP:
    """An SMTP session on *node*'s MX as operator A's server: EHLO, STARTTLS with its
    client certificate, EHLO again."""
    client = smtplib.SMTP("127.0.0.1", node.ports["mx"], timeout=10)
    client.ehlo("mx.operator-a.fr")
    client.starttls(context=node.mx_client_context())
    client.ehlo("mx.operator-a.fr")
    return client
