"""A fork server for the tests' ``mss`` commands: one process per test process imports the CLI
and what its commands use once, then forks a child per command. The child is a fresh process
(its own descriptors, so SQLite's POSIX locks of an in-process node are never touched) running
``mss.cli.main`` with the command's arguments, stdin, stdout and stderr; only the interpreter
start and the imports (0.5-0.7 s of CPU per command) are saved. Tests that time or signal
the CLI itself start a real ``python -m mss`` (``Node.cli_process``).

Protocol, one JSON line each way on the server's stdin/stdout: ``{"args", "stdin", "stdout",
"stderr"}`` (file paths) -> ``{"rc"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback


def _run_child(request: dict[str, object]) -> None:
    """In the forked child: the command's files on fds 0-2, then mss.cli.main; never returns."""
    code = 1
    try:
        for fd, key, flags in ((0, "stdin", os.O_RDONLY),
                               (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(str(request[key]), flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        from mss.cli import main

        try:
            main([str(a) for a in request["args"]])  # type: ignore[attr-defined]
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    except BaseException:  # what an uncaught exception does to a real process
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve() -> None:
    import mss.app  # noqa: F401
    import mss.cli  # noqa: F401  the CLI and the modules its commands import
    import mss.mailstore  # noqa: F401
    import trustspace.registry  # noqa: F401

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
    serve()
