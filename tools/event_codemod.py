"""Rewrite audit event names given as strings into ``audit.events.Event`` members.

    python tools/event_codemod.py [--check] [PATH ...]   (default: the five packages)

Rewrites, in place and nothing else of the file:
- a string literal naming a catalogued event where an event is expected: the first argument
  (or ``event=``) of ``AuditRecord(...)``, the ``event`` argument of any function or method
  of the scanned tree that has a parameter named ``event`` (``self._record(session,
  "smtp.auth")``), either side of a conditional expression there, and what is assigned to
  a name ``event`` or ending in ``EVENT``/``_event`` (``_EVENT = "whitelist.import"``,
  ``event = "imap.move" if moving else "imap.copy"``);
- the annotation ``event: str`` of such a parameter, into ``event: Event``;
- then adds ``from audit.events import Event`` where a rewritten file lacks it.
It is idempotent: a second run changes nothing. ``--check`` changes nothing and exits 1 if a
file would change (a test runs it so that a merged branch that still writes strings shows).
A member is a few characters longer than its value: the lines that grew past 100
characters are printed, to be wrapped by hand (ruff E501).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's audit.events, not an installed one

from audit.events import Event  # noqa: E402

PACKAGES = ("mss", "proxy", "trustspace", "directory", "audit")
SKIP = {ROOT / "audit" / "events.py"}  # the catalogue itself
FIRST_PARTY = (*PACKAGES, "tests")
IMPORT = "from audit.events import Event"
LINE_LENGTH = 100  # pyproject.toml [tool.ruff]
MEMBERS = {e.value: e.name for e in Event}


@dataclass
class Helpers:
    """Callables taking an event: name -> positions of the ``event`` parameter, counted
    without a leading ``self``/``cls`` (so they match method calls through an attribute)."""

    positions: dict[str, set[int]] = field(default_factory=lambda: {"AuditRecord": {0}})

    def scan(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if params[:1] in (["self"], ["cls"]):
                    params = params[1:]
                if "event" in params:
                    self.positions.setdefault(node.name, set()).add(params.index("event"))
                elif any(a.arg == "event" for a in node.args.kwonlyargs):
                    self.positions.setdefault(node.name, set())


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _literals(expr: ast.expr) -> list[tuple[ast.expr, str]]:
    """The event-name literals *expr* stands for (itself, or both sides of ``a if c else
    b``), each with the member that replaces it."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) \
            and expr.value in MEMBERS:
        return [(expr, f"Event.{MEMBERS[expr.value]}")]
    if isinstance(expr, ast.IfExp):
        return _literals(expr.body) + _literals(expr.orelse)
    return []


def _names_an_event(name: str) -> bool:
    return name == "event" or name.endswith(("EVENT", "_event"))


def _edits(tree: ast.Module, helpers: Helpers) -> list[tuple[ast.expr, str]]:
    out: list[tuple[ast.expr, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _callee(node) in helpers.positions:
            positions = helpers.positions[_callee(node) or ""]
            args = [a for i, a in enumerate(node.args) if i in positions]
            args += [k.value for k in node.keywords if k.arg == "event"]
            for arg in args:
                out += _literals(arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs):
                if a.arg == "event" and isinstance(a.annotation, ast.Name) \
                        and a.annotation.id == "str":
                    out.append((a.annotation, "Event"))
    for node in ast.walk(tree):  # event = "a" if c else "b"; _EVENT = "whitelist.import"
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and _names_an_event(t.id) for t in targets):
                out += _literals(node.value)
                if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name) \
                        and node.annotation.id == "str":
                    out.append((node.annotation, "Event"))
    return out


def _lines(source: str) -> list[str]:
    """The lines as ast counts them (on "\n" only, unlike str.splitlines), ends kept."""
    parts = source.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _apply(source: str, edits: list[tuple[ast.expr, str]]) -> str:
    offsets = [0]
    for line in _lines(source):
        offsets.append(offsets[-1] + len(line.encode("utf-8")))
    data = source.encode("utf-8")
    spans = sorted({(offsets[n.lineno - 1] + n.col_offset,
                     offsets[(n.end_lineno or n.lineno) - 1] + (n.end_col_offset or 0), text)
                    for n, text in edits}, reverse=True)
    for start, end, text in spans:  # col offsets are UTF-8 byte offsets
        data = data[:start] + text.encode("utf-8") + data[end:]
    return data.decode("utf-8")


def _sort_key(name: str) -> tuple[int, str]:
    """ruff's isort order of imported names: CONSTANTS, Classes, functions."""
    if name.isupper() and len(name) > 1:
        return 0, name
    return (1 if name[:1].isupper() else 2), name


def _add_import(source: str) -> str:
    tree = ast.parse(source)
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "audit.events" and not stmt.level:
            if any(a.name == "Event" and a.asname is None for a in stmt.names):
                return source
            if stmt.lineno == stmt.end_lineno and all(a.asname is None for a in stmt.names):
                names = sorted({a.name for a in stmt.names} | {"Event"}, key=_sort_key)
                lines = _lines(source)
                end = "\n" if lines[stmt.lineno - 1].endswith("\n") else ""
                lines[stmt.lineno - 1] = f"from audit.events import {', '.join(names)}{end}"
                return "".join(lines)
    # a new line among the first-party "from" imports, in module order
    imports = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
    ours = [s for s in imports if isinstance(s, ast.ImportFrom) and not s.level
            and (s.module or "").split(".")[0] in FIRST_PARTY]
    lines = _lines(source)
    after = [s for s in ours if (s.module or "") > "audit.events"]
    if after:
        at = after[0].lineno - 1
    elif ours:
        at = ours[-1].end_lineno or ours[-1].lineno
    elif imports:
        at = imports[-1].end_lineno or imports[-1].lineno
        lines.insert(at, "\n")
        at += 1
    else:
        at = 0
    lines.insert(at, IMPORT + "\n")
    return "".join(lines)


def rewrite(source: str, helpers: Helpers) -> str:
    tree = ast.parse(source)
    edits = _edits(tree, helpers)
    if not edits:
        return source
    return _add_import(_apply(source, edits))


def files(paths: list[str]) -> list[Path]:
    roots = [Path(p) for p in paths] or [ROOT / p for p in PACKAGES]
    found: list[Path] = []
    for root in roots:
        found += sorted(root.rglob("*.py")) if root.is_dir() else [root]
    return [f for f in found if f.resolve() not in SKIP]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    targets = files([a for a in argv if a != "--check"])
    helpers = Helpers()
    for path in files([]) + targets:  # helpers are found in the whole tree
        helpers.scan(ast.parse(path.read_text(encoding="utf-8")))
    changed = []
    for path in targets:
        source = path.read_text(encoding="utf-8")
        new = rewrite(source, helpers)
        if new != source:
            changed.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    for path in changed:
        print(f"{'would rewrite' if check else 'rewrote'} {path}")
        if not check:
            for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
                if len(line) > LINE_LENGTH:
                    print(f"  {path}:{number}: longer than {LINE_LENGTH}, wrap it")
    return 1 if check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
