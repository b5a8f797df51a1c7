"""The layers of the node, walked from the source (docs/architecture.md "Layers").

Every import of every module of the five packages (at module level, inside functions, under
``if TYPE_CHECKING``; relative imports resolved) is an edge. An edge may go down a layer or
stay in it; it may not go up, nor sideways between two components of the services or of the
protocols layer. The module graph has no cycle. There is no exceptions list: a module that
needs a new edge moves, or the map below changes (and the docs with it).

``LAYERS`` is the one place the map is written; docs/architecture.md carries its rendering
between the ``layers:begin``/``layers:end`` markers (``python -m tests.test_layers --write``
rewrites it, a test keeps the two equal).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mss", "proxy", "trustspace", "directory", "audit")
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"

# layer -> component -> module patterns, lowest layer first. "pkg.*" names a package and
# everything under it; a bare name names exactly that module. A module belongs to the
# longest pattern that matches it (so audit.journal is core while audit.* is a service).
LAYERS: dict[str, dict[str, tuple[str, ...]]] = {
    "core": {  # one component: core modules may import one another
        "core": ("mss", "mss.db", "mss.crypto", "mss.config", "mss.addresses", "mss.mime",
                 "mss.message", "mss.committer", "mss.passwords", "mss.logs", "mss.limits",
                 "mss.throttle", "mss.sending", "mss.lifecycle", "mss.locks", "mss.leader",
                 "mss.files", "mss.schema",
                 "mss.migrations.*", "mss.pkcs11", "audit.journal", "audit.events",
                 "mss.sasl",  # issue 15: SASL messages of OAUTHBEARER, XOAUTH2, EXTERNAL
                 "mss.xdm", "mss.xmss",  # issue 18: XDM packages, X-MSS header rules
                 "mss.dsn", "mss.citizen"),  # issue 18: RFC 3461/3464, INS addresses
    },
    "services": {  # never import one another
        "mailstore": ("mss.mailstore.*",
                      "mss.login"),  # the password check of a mailbox reads the mailbox
        "trustspace": ("trustspace.*",),
        "directory": ("directory.*",),
        "audit": ("audit.*",),  # export, shipping, checkpoints, verification
        "identity": ("mss.identity.*",),  # OIDC/OAuth tokens; nothing of mailboxes
    },
    "runtime": {  # built once by the roots, handed to every listener and worker
        # mss.backup: a copy of every service's tables, checked with the audit service
        # (chain verification) and the keyring, as mss.app opens them
        "runtime": ("mss.runtime", "mss.app", "mss.backup",
                    "mss.authenticator",  # logins: passwords, tokens, certificates
                    "mss.metrics",  # issue 17: counters, scrape-time gauges
                    "mss.session_registry"),  # issue 16: the process's logged-in sessions
    },
    "protocols": {  # never import one another
        "proxy": ("proxy",),  # the package's docstring only
        "proxy.smtp": ("proxy.smtp.*",),
        "proxy.imap": ("proxy.imap.*",),
        "proxy.outbound": ("proxy.outbound.*",),
        "proxy.portal": ("proxy.portal.*",),  # issue 15: the HTTPS portal and autoconfig
        "proxy.admin": ("proxy.admin.*",),  # issue 17: /metrics, /healthz, /readyz
    },
    "roots": {  # the only modules that know every package
        "roots": ("mss.server", "mss.cli", "mss.__main__", "mss.cli_support", "mss.db_cli",
                  "audit.cli", "audit.ttp_cli",
                  "directory.cli", "trustspace.cli", "trustspace.relay_cli",
                  "trustspace.peer_cli",  # mss peer (issue 16)
                  "proxy.outbound.cli", "mss.backup_cli",
                  "mss.identity_cli",  # mss auth (issue 15)
                  "mss.cert_cli",  # mss mailbox cert (issue 15)
                  "mss.app_password_cli", "mss.dns_cli", "mss.dns_records",  # issue 15
                  "mss.archive_cli", "mss.operator_cli",  # issue 16: reversibility
                  "mss.cli_output",  # issue 17: tables fitting the terminal, --json
                  "mss.doctor.*",  # issue 17: the node checks of mss doctor
                  "mss.report",  # issue 17: mss report
                  "mss.retention_cli",  # issue 16: mss mailbox hold, mss retention
                  "mss.lifecycle_cli",  # issue 16: mss mailbox passwd/suspend/delete...
                  "mss.sessions_cli"),  # issue 16: mss sessions
    },
}
ORDER = {layer: rank for rank, layer in enumerate(LAYERS)}
NO_SIDEWAYS = ("services", "protocols")


@dataclass(frozen=True)
class Place:
    layer: str
    component: str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int


def modules() -> dict[str, Path]:
    """Every module of the five packages: dotted name -> file."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The module *name* stands for (``pkg.mod.attr`` -> ``pkg.mod``), or None if foreign."""
    if name.split(".")[0] not in PACKAGES:
        return None
    while name not in mods and "." in name:
        name = name.rpartition(".")[0]
    return name if name in mods else None


def imports(module: str, path: Path, mods: dict[str, Path]) -> Iterator[Edge]:
    """Every first-party import of *module*, wherever it sits in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:  # from . import x, from ..a import b
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # from pkg import mod names the module pkg.mod; from mod import attr names mod
            names = [f"{origin}.{alias.name}" for alias in node.names]
        for name in names:
            target = _resolve(name, mods)
            if target is not None and target != module:
                yield Edge(module, target, node.lineno)


def place(module: str) -> Place | None:
    best: tuple[int, Place] | None = None
    for layer, components in LAYERS.items():
        for component, patterns in components.items():
            for pattern in patterns:
                prefix = pattern.removesuffix(".*")
                if pattern.endswith(".*"):
                    hit = module == prefix or module.startswith(prefix + ".")
                    weight = 2 * len(prefix)
                else:
                    hit = module == pattern
                    weight = 2 * len(prefix) + 1  # an exact name beats a package pattern
                if hit and (best is None or weight > best[0]):
                    best = (weight, Place(layer, component))
    return best[1] if best else None


def graph() -> tuple[dict[str, Path], list[Edge]]:
    mods = modules()
    first: dict[tuple[str, str], Edge] = {}
    for module, path in mods.items():
        for edge in imports(module, path, mods):
            first.setdefault((edge.source, edge.target), edge)
    return mods, sorted(first.values(), key=lambda e: (e.source, e.target))


def bad_edge(edge: Edge) -> str | None:
    """``a.b -> c.d (services -> protocols)`` when *edge* breaks the layers, else None."""
    src, dst = place(edge.source), place(edge.target)
    if src is None or dst is None:
        return None  # reported by test_every_module_has_a_layer
    upward = ORDER[dst.layer] > ORDER[src.layer]
    sideways = (src.layer == dst.layer and src.layer in NO_SIDEWAYS
                and src.component != dst.component)
    if upward or sideways:
        return f"{edge.source} -> {edge.target} ({src.layer} -> {dst.layer})"
    return None


def cycles(mods: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {m: [] for m in mods}
    for e in edges:
        succ[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in mods:
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(succ[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(out)


def render() -> str:
    """The map as the Markdown table docs/architecture.md shows."""
    lines = ["| layer | component | modules |", "|---|---|---|"]
    for layer, components in LAYERS.items():
        for component, patterns in components.items():
            lines.append(f"| {layer} | {component} | "
                         + ", ".join(f"`{p}`" for p in patterns) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- tests
def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if place(m) is None]
    assert not unplaced, "modules with no layer (place them in LAYERS):\n" + "\n".join(unplaced)


def test_imports_go_down_and_never_sideways() -> None:
    _, edges = graph()
    bad = [f"{text}  # line {e.line}" for e in edges if (text := bad_edge(e)) is not None]
    assert not bad, f"{len(bad)} import(s) against the layers:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    mods, edges = graph()
    found = cycles(mods, edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """The walker finds imports inside functions, relative ones and module-level ones, and
    the rules flag an upward edge, a sideways one and a cycle (a checker that sees nothing
    would pass vacuously)."""
    mods = modules()
    probe = tmp_path / "probe.py"
    probe.write_text("from . import db\nfrom .crypto import Keyring\n"
                     "def f() -> None:\n    import proxy.smtp.handler\n"
                     "    from trustspace import dn\n    import json\n")
    found = {e.target for e in imports("mss.probe", probe, mods)}
    assert found == {"mss.db", "mss.crypto", "proxy.smtp.handler", "trustspace.dn"}
    assert bad_edge(Edge("mss.db", "proxy.smtp.handler", 1)) == \
        "mss.db -> proxy.smtp.handler (core -> protocols)"
    assert bad_edge(Edge("proxy.smtp.handler", "proxy.imap.connection", 1)) is not None
    assert bad_edge(Edge("directory.sync", "trustspace.whitelist", 1)) is not None
    assert bad_edge(Edge("proxy.smtp.handler", "trustspace.whitelist", 1)) is None
    assert bad_edge(Edge("audit.shipper", "audit.journal", 1)) is None
    assert bad_edge(Edge("audit.journal", "audit.shipper", 1)) is not None
    three = {"mss.a": probe, "mss.b": probe, "mss.c": probe}
    assert cycles(three, [Edge("mss.a", "mss.b", 1), Edge("mss.b", "mss.a", 1),
                          Edge("mss.b", "mss.c", 1)]) == [["mss.a", "mss.b"]]


def test_architecture_doc_shows_this_map() -> None:
    text = DOC.read_text(encoding="utf-8")
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render(), "docs/architecture.md is stale: python -m tests.test_layers --write"


def test_references_stay_inside_the_repository() -> None:
    """Code and docs cite docs/ files, never the design guide outside the repository (issue
    13 #8), and every docs/*.md that architecture.md links to exists."""
    import re

    texts = [*(ROOT / p for p in PACKAGES), ROOT / "docs"]
    files = [f for root in texts for f in sorted(root.rglob("*")) if f.suffix in (".py", ".md")]
    files += [ROOT / "README.md", ROOT / "config" / "mss.toml"]
    cited = [f"{f.relative_to(ROOT)}:{n}" for f in files if f.exists()
             for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
             if "DESIGN.md" in line]
    assert not cited, "cite docs/architecture.md instead:\n" + "\n".join(cited)
    links = re.findall(r"\]\(([a-z-]+\.md)\)", DOC.read_text(encoding="utf-8"))
    assert links and all((DOC.parent / link).exists() for link in links)


def write_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_doc()
    else:
        mods, edges = graph()
        for module in mods:
            if place(module) is None:
                print(f"{module}: no layer")
        for text in filter(None, map(bad_edge, edges)):
            print(text)
        for cycle in cycles(mods, edges):
            print("cycle: " + " <-> ".join(cycle))
