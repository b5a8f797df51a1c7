"""A real PostgreSQL server for tests: Debian's binaries, a cluster of this test process.

The cluster is created (``initdb``) in a temporary directory on first use and started on a
free loopback port, its socket in that directory; it is stopped when the process ends. Tests
get a database of their own with :meth:`PgCluster.create_database` (optionally copied from a
template database: ``CREATE DATABASE ... TEMPLATE``, milliseconds). When the tests run as
root (CI), the server runs as the ``postgres`` user the Debian package creates: PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

HOST = "127.0.0.1"


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding initdb (Debian's layout)."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def require_postgres() -> Path:
    """The binaries' directory, or the test is skipped (fails under CI=true)."""
    bindir = pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries missing (Debian package postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


def _as_server_user() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a non-root user when we are root."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # created by the postgresql package
    return ["runuser", "-u", "postgres", "--"]


class PgCluster:
    """One PostgreSQL server: ``initdb`` + ``pg_ctl start`` on *port*, trust auth on
    loopback for the ``mss`` superuser (tests only)."""

    def __init__(self, bindir: Path, root: Path, port: int, *, extra: tuple[str, ...] = ()
                 ) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self.user = "mss"
        self.extra = extra
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_as_server_user(), *args], capture_output=True, text=True,
                              timeout=120, check=check)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", self.user, "-E", "UTF8", "--no-sync", "--locale=C")

    def start(self) -> None:
        options = (f"-c listen_addresses={HOST} -p {self.port} -k {self.root} "
                   "-c max_connections=300 -c shared_buffers=32MB "
                   "-c fsync=on -c synchronous_commit=on " + " ".join(self.extra))
        proc = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                         "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
                         check=False)
        if proc.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}{log}")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """Stop as a power cut would: ``pg_ctl stop -m immediate`` (the server quits without a
        shutdown checkpoint; the next start replays the WAL: pg_ctl's reference page)."""
        self.stop("immediate")

    def promote(self) -> None:
        """Turn this standby into a primary (``pg_ctl promote``, docs §27.3 'Failover'),
        waiting until it accepts writes."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                  "promote")

    def in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()").strip() == "t"

    def require_synchronous(self, standby_name: str) -> None:
        """Commits wait until the standby *standby_name* (its application_name) has the
        WAL on disk (docs §27.2.8 'Synchronous Replication': synchronous_commit = on with
        synchronous_standby_names). Set with ALTER SYSTEM after the base backup, so that
        the standby, once promoted, does not wait for a standby of its own."""
        self.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{standby_name}'")
        self.psql("SELECT pg_reload_conf()")

    def copy_database(self, source: PgCluster, database: str, prefix: str = "t") -> str:
        """A copy of *source*'s *database* in this cluster (``pg_dump | psql``: a template
        database is only copied within one cluster); returns its name."""
        name = self.create_database(prefix)
        dump = subprocess.run([str(self.bindir / "pg_dump"), "-h", HOST, "-p", str(source.port),
                               "-U", source.user, "--no-owner", "-d", database],
                              capture_output=True, text=True, timeout=120, check=True)
        proc = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST,
                               "-p", str(self.port), "-U", self.user, "-d", name],
                              input=dump.stdout, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"restoring {database} into {name}: {proc.stderr}")
        return name

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{HOST}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        proc = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                               "-h", HOST, "-p", str(self.port), "-U", self.user,
                               "-d", database, "-c", sql],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"psql {sql!r}: {proc.stderr}")
        return proc.stdout

    def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        """A new empty database (or a copy of *template*, which nobody may be connected
        to); returns its name."""
        with self._lock:
            name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        copy = f" TEMPLATE {template}" if template else ""
        for attempt in range(50):  # the template's last connection may still be closing
            try:
                self.psql(f"CREATE DATABASE {name}{copy}")
                return name
            except AssertionError as exc:
                if "being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")


_CLUSTER: list[PgCluster] = []
_CLUSTER_LOCK = threading.Lock()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def new_cluster(*, extra: tuple[str, ...] = ()) -> PgCluster:
    """A cluster of its own (tests that stop, restart or replicate it), stopped at exit."""
    bindir = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="mss-pg-"))
    os.chmod(root, 0o755)
    cluster = PgCluster(bindir, root / "cluster", free_port(), extra=extra)
    cluster.init()
    cluster.start()
    atexit.register(_remove, cluster, root)
    return cluster


REPLICATION_USER = "replicator"


def new_standby(primary: PgCluster, name: str = "site_b") -> PgCluster:
    """A hot standby of *primary* on a port of its own, streaming its WAL (docs §27.2
    'Log-Shipping Standby Servers'): a replication role (initdb's pg_hba.conf already has
    ``host replication all 127.0.0.1/32`` lines), ``pg_basebackup -R`` (writes
    standby.signal and primary_conninfo, with *name* as application_name: the name
    synchronous_standby_names refers to), started; stopped at exit."""
    if primary.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{REPLICATION_USER}'") == "":
        primary.psql(f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN")
    root = Path(tempfile.mkdtemp(prefix="mss-pg-standby-"))
    os.chmod(root, 0o755)
    standby = PgCluster(primary.bindir, root / "cluster", free_port(), extra=primary.extra)
    standby.root.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(standby.root, "postgres")
    conninfo = (f"host={HOST} port={primary.port} user={REPLICATION_USER} "
                f"application_name={name}")
    standby._run(str(primary.bindir / "pg_basebackup"), "-d", conninfo, "-D",
                 str(standby.data), "-R", "--checkpoint=fast", "--no-sync", "-X", "stream")
    atexit.register(_remove, standby, root)
    standby.start()
    return standby


def wait_streaming(primary: PgCluster, name: str, timeout: float = 30.0) -> None:
    """Until *primary* lists the standby *name* as streaming (pg_stat_replication)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if primary.psql("SELECT state FROM pg_stat_replication "
                        f"WHERE application_name = '{name}'").strip() == "streaming":
            return
        time.sleep(0.1)
    raise AssertionError(f"standby {name} not streaming after {timeout} s")


def _remove(cluster: PgCluster, root: Path) -> None:
    cluster.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


def shared_cluster() -> PgCluster:
    """This test process's cluster, started on first use."""
    with _CLUSTER_LOCK:
        if not _CLUSTER:
            _CLUSTER.append(new_cluster())
        return _CLUSTER[0]
