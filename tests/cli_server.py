"""A fork server for the tests' ``mss`` commands: one process per test process imports the CLI
and what its commands use once, then forks a child per command. The child is a fresh process
(its own descriptors, so SQLite's POSIX locks of an in-process node are never touched) running
``mss.cli.main`` with the command's arguments, stdin, stdout and stderr; only the interpreter
start and the imports (0.5-0.7 s of CPU per command) are saved. Tests that time or signal
the CLI itself start a real ``python -m mss`` (``Node.cli_process``).

Protocol, one JSON line each way on the server's stdin/stdout: ``{"args", "stdin", "stdout",
"stderr"}`` (file paths) -> ``{"rc"}``.

``--spawn``: the same for long-running commands (``mss serve`` of tests/node.py): the server
also imports what serve runs, forks the command with the request's environment and working
directory, its output appended to ``log``, and answers ``{"pid"}`` at once; when the child
exits, its exit code is written to the request's ``rc`` file (this server is its parent and
reaps it: pidfds in the select loop).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def _as_a_process() -> Iterator[None]:
    """What ending a real process does with the block's outcome: its exit code, a message
    of ``sys.exit(text)`` on stderr, an uncaught exception's traceback, the streams flushed;
    then ``os._exit`` (the forked child never returns into the server's loop)."""
    code = 1
    try:
        yield
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _main(args: list[object]) -> None:
    from mss.cli import main

    main([str(a) for a in args])


def _run_child(request: dict[str, object]) -> None:
    """In the forked child: the command's files on fds 0-2, then mss.cli.main; never returns."""
    with _as_a_process():
        for fd, key, flags in ((0, "stdin", os.O_RDONLY),
                               (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(str(request[key]), flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        _main(request["args"])  # type: ignore[arg-type]


def _spawn_child(request: dict[str, Any], inherited: list[int]) -> None:
    """In the forked child of --spawn: what subprocess.Popen(args, cwd=, env=, stdin=DEVNULL,
    stdout=log, stderr=log) gives a fresh process; never returns."""
    for fd in inherited:  # the other children's pidfds
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    with _as_a_process():
        _main(request["args"])


def spawn_server() -> None:
    import select

    import mss.server  # noqa: F401  the listeners, the runtime, the queue worker
    serve_imports()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    children: dict[int, tuple[int, str]] = {}  # pidfd -> (pid, rc file)
    while True:
        ready, _, _ = select.select([requests, *children], [], [])
        for fd in ready:
            if fd is requests:
                continue
            pid, rc_file = children.pop(fd)  # type: ignore[call-overload]
            os.close(fd)  # type: ignore[arg-type]
            _, status = os.waitpid(pid, 0)
            with open(rc_file + ".part", "w") as out:
                out.write(str(os.waitstatus_to_exitcode(status)))
            os.rename(rc_file + ".part", rc_file)
        if requests not in ready:
            continue
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        replies.flush()
        pid = os.fork()
        if pid == 0:
            _spawn_child(request, list(children))
        children[os.pidfd_open(pid)] = (pid, request["rc"])
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()


def serve_imports() -> None:
    import mss.app  # noqa: F401
    import mss.cli  # noqa: F401  the CLI and the modules its commands import
    import mss.mailstore  # noqa: F401
    import trustspace.registry  # noqa: F401


def serve() -> None:
    serve_imports()

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = requests.readline()
        if not line:
            return
        request = json.loads(line)
        replies.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        replies.write(json.dumps({"rc": rc}).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    spawn_server() if sys.argv[1:] == ["--spawn"] else serve()
