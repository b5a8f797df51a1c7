"""Configuration: one schema (the dataclasses of mss/config.py) read, checked and rendered
as config/mss.toml (issue 13 #4); a misspelt key or table anywhere stops the loader and
'mss serve' naming its full path (issue 20 #5). Every list below is walked from the schema,
so a new key or section is tested without being named here."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from mss.config import Config, ConfigError, parse_config, render
from tests.node import CLI, Node, make_node

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "mss.toml"
# a commented-out example line of config/mss.toml: '# [table]', '# [[table]]' or '# key = ...'
COMMENTED = re.compile(r"^# (\[\[?[a-z_.]+\]\]?|[a-z_0-9]+ = .*)")


@functools.cache
def _documented() -> str:
    return "\n".join(COMMENTED.sub(r"\1", line) for line in EXAMPLE.read_text().splitlines())


def documented() -> dict[str, Any]:
    """config/mss.toml with its commented-out examples ([[audit.destinations]], [directory],
    logging.file...) enabled, so that every documented table and key is there."""
    return tomllib.loads(_documented())


def schema(cls: type = Config, path: str = "") -> Iterator[tuple[str, dict[str, str]]]:
    """Every table the schema declares (arrays of tables: path[0]; a dict of sections: each
    known name) with its keys and their docs, walked from the field declarations."""
    keys: dict[str, str] = {}
    subs: list[tuple[str, Any]] = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "doc" not in f.metadata:
            continue  # not a key (Config.path, ListenerConfig.name)
        kind, name = hints[f.name], f"{path}.{f.name}" if path else f.name
        sub = next((a for a in (kind, *get_args(kind)) if dataclasses.is_dataclass(a)), None)
        if get_origin(kind) is dict:
            subs += ([(f"{name}.{n}", sub) for n in f.metadata["names"]] if sub
                     else [(name, f.metadata["names"])])
        elif sub is not None:
            subs.append((f"{name}[0]" if get_origin(kind) is tuple else name, sub))
        else:
            keys[f.name] = f.metadata["doc"]
    yield path, keys
    for name, sub in subs:
        if isinstance(sub, Mapping):  # a table of strings (directory.attributes)
            yield name, dict.fromkeys(sub, "")
        else:
            yield from schema(sub, name)


TABLES = [path for path, _ in schema() if path]
DOCS = {(path, key): doc for path, keys in schema() for key, doc in keys.items()}
KEYS = list(DOCS)


def table_at(raw: dict[str, Any], path: str) -> dict[str, Any]:
    for part in filter(None, re.split(r"\.|\[(\d+)\]", path)):
        raw = raw[int(part)] if part.isdigit() else raw[part]  # type: ignore[index]
    return raw


def misspell(key: str) -> str:
    if len(key) < 4:
        return key + key[-1]  # mx -> mxx
    i = next(i for i in range(1, len(key) - 1) if key[i] != key[i + 1])
    return key[:i] + key[i + 1] + key[i] + key[i + 2:]  # two letters swapped: host -> hsot


def with_typo(raw: dict[str, Any], path: str, key: str) -> str:
    """*raw* with *key* of table *path* misspelt; the message the loader must give."""
    table = table_at(raw, path)
    table[misspell(key)] = table.pop(key)
    return f"config: {path}.{misspell(key)}: unknown key (did you mean {key}?)"


def test_schema_walk_sees_every_section() -> None:
    assert {"smtp", "listeners.imaps", "whitelist.fetch", "audit.destinations[0]",
            "directory", "directory.attributes", "directory.publish", "pki",
            "limits"} <= set(TABLES)
    assert len(KEYS) > 120


def test_every_field_is_a_declared_key() -> None:
    """A field added the old way (a plain default, no key()) would be neither read nor
    rendered: only the two fields that are not keys are allowed to lack a declaration."""
    sections, seen = [Config], set()
    while sections:
        cls = sections.pop()
        seen.add(cls)
        for kind in get_type_hints(cls).values():
            sections += [a for a in (kind, *get_args(kind)) if dataclasses.is_dataclass(a)
                         and a not in seen]
        plain = {f.name for f in dataclasses.fields(cls) if "doc" not in f.metadata}
        assert plain <= {"Config": {"path"}, "ListenerConfig": {"name"}}.get(cls.__name__, set())
    assert len(seen) > 15


def test_committed_file_is_the_render() -> None:
    """config/mss.toml is what the schema renders (run 'python -m mss.config --write')."""
    assert EXAMPLE.read_text() == render()
    out = subprocess.run([sys.executable, "-m", "mss.config", "--check"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out


def test_rendered_file_holds_the_defaults(tmp_path: Path) -> None:
    """The shipped file loads to exactly the configuration of an empty file: every value it
    shows is the default the loader applies; and with its examples enabled it loads too."""
    cfg = tmp_path / "mss.toml"
    assert parse_config(tomllib.loads(EXAMPLE.read_text()), cfg) == parse_config({}, cfg)
    config = parse_config(documented(), cfg)
    assert config.directory is not None and config.directory.publish is not None
    assert config.audit.destinations[0].server_name == "audit.example.fr"


def words(text: str) -> str:
    return " ".join(text.replace("#", " ").split())


@pytest.mark.parametrize("path, key", KEYS, ids=[f"{p}.{k}" for p, k in KEYS])
def test_every_key_is_in_the_file_with_its_doc(path: str, key: str) -> None:
    """Keys without a default (commented-out examples) and optional tables included."""
    assert key in table_at(documented(), path), f"{path}.{key} is not in config/mss.toml"
    doc = DOCS[path, key]
    assert doc or path == "directory.attributes"
    assert words(doc) in words(EXAMPLE.read_text())


@pytest.mark.parametrize("path, key", KEYS, ids=[f"{p}.{k}" for p, k in KEYS])
def test_every_key_misspelt_is_refused_naming_its_path(tmp_path: Path, path: str,
                                                       key: str) -> None:
    """Each key of each table, misspelt, stops the loader with its full path and the right
    name suggested (crl_file for crl_files once let a revoked operator's mail in)."""
    raw = documented()
    message = with_typo(raw, path, key)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path / "mss.toml")
    assert str(caught.value) == message


@pytest.mark.parametrize("path, key", KEYS, ids=[f"{p}.{k}" for p, k in KEYS])
def test_every_key_of_the_wrong_type_is_refused_naming_its_path(tmp_path: Path, path: str,
                                                                key: str) -> None:
    raw = documented()
    table = table_at(raw, path)
    table[key] = 7 if isinstance(table[key], str) else "x"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path / "mss.toml")
    assert str(caught.value).startswith(f"config: {path}.{key}: must be "), caught.value


@pytest.mark.parametrize("path", TABLES)
def test_every_table_misspelt_is_refused_naming_its_path(tmp_path: Path, path: str) -> None:
    raw = documented()
    parent, name = path.removesuffix("[0]").rpartition(".")[::2]
    table = table_at(raw, parent)
    table[misspell(name)] = table.pop(name)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, tmp_path / "mss.toml")
    parent = f"{parent}." if parent else ""
    assert str(caught.value) == (f"config: {parent}{misspell(name)}: unknown table "
                                 f"(did you mean {name}?)")


def test_bad_values_name_the_key_and_the_rule(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    for raw, message in (
        ({"smtp": {"max_message_size": "x"}},
         'config: smtp.max_message_size: must be an integer >= 1 (got "x")'),
        ({"smtp": {"max_message_size": 0}},
         "config: smtp.max_message_size: must be an integer >= 1 (got 0)"),
        ({"pki": {"crl_unavailable": "maybe"}},
         'config: pki.crl_unavailable: must be "fail-closed" or "fail-open" (got "maybe")'),
        ({"listeners": {"relay": {"port": 70000}}},
         "config: listeners.relay.port: must be an integer between 0 and 65535 (got 70000)"),
        ({"delivery": {"nameservers": "10.0.0.53"}},
         'config: delivery.nameservers: must be a list (a string each) (got "10.0.0.53")'),
        ({"audit": {"destinations": [{"host": "a.example"}, {"host": "b.example",
                                                              "name": "destination0"}]}},
         "config: audit.destinations[1].name: duplicate name 'destination0'"),
        ({"directory": {"base_dn": "o=x"}}, "config: directory.urls: required"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, cfg)
        assert str(caught.value).startswith(message), caught.value


def test_reported_typos_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    for raw, message in (
        ({"pki": {"crl_file": ["revoked.crl"]}},
         "config: pki.crl_file: unknown key (did you mean crl_files?)"),
        ({"smtp": {"max_mesage_size": 3}},
         "config: smtp.max_mesage_size: unknown key (did you mean max_message_size?)"),
        ({"delivery": {"enabeld": False}},
         "config: delivery.enabeld: unknown key (did you mean enabled?)"),
        ({"smpt": {"hostname": "x"}}, "config: smpt: unknown table (did you mean smtp?)"),
        ({"listeners": {"mx": {"hots": "0.0.0.0"}}},
         "config: listeners.mx.hots: unknown key (did you mean host?)"),
        ({"listeners": {"pop3": {}}}, "config: listeners.pop3: unknown table"),
        ({"audit": {"destinations": [{"host": "a.example", "prot": 1}]}},
         "config: audit.destinations[0].prot: unknown key (did you mean port?)"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, cfg)
        assert str(caught.value) == message


@pytest.mark.parametrize("command", [["mailbox", "list"], ["serve"]])
def test_cli_refuses_unknown_key_with_one_line(tmp_path: Path, command: list[str]) -> None:
    """Any command, 'mss serve' included, exits 2 with one line naming the key, before it
    opens the database or a socket."""
    cfg = tmp_path / "mss.toml"
    cfg.write_text('[listeners.mx]\nhots = "0.0.0.0"\nport = 2525\n')
    out = subprocess.run([sys.executable, "-m", "mss", "--config", str(cfg), *command],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [
        "mss: error: config: listeners.mx.hots: unknown key (did you mean host?)"]
    assert not (tmp_path / "mss.db").exists()


def dump(table: dict[str, Any], path: str = "") -> list[str]:
    """*table* as TOML (JSON strings, numbers, booleans and arrays are TOML values)."""
    def scalars(t: dict[str, Any]) -> list[str]:
        return [f"{k} = {json.dumps(v)}" for k, v in t.items() if not is_table(v)]

    def is_table(v: Any) -> bool:
        return isinstance(v, dict) or isinstance(v, list) and bool(v) and all(
            isinstance(i, dict) for i in v)

    lines = [f"[{path}]", *scalars(table)] if path else scalars(table)
    for k, v in table.items():
        sub = f"{path}.{k}" if path else k
        if isinstance(v, dict):
            lines += dump(v, sub)
        elif is_table(v):
            lines += [line for item in v for line in [f"[[{sub}]]", *scalars(item)]]
    return lines


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("config"), with_whitelist=False)


def typo_config(node: Node, path: str) -> tuple[Path, str]:
    """A real node's config with table *path* (from the documented examples) holding its
    first key misspelt, and the one line 'mss serve' must answer."""
    raw = tomllib.loads(node.config.read_text())
    top = path.split(".")[0].removesuffix("[0]")
    raw[top] = {**documented()[top], **raw.get(top, {})}
    message = with_typo(raw, path, next(k for p, k in KEYS if p == path))
    broken = node.config.with_name(f"typo-{path}.toml")
    broken.write_text("\n".join(dump(raw)) + "\n")
    return broken, f"mss: error: {message}"


def test_serve_stops_on_a_typo_in_every_section(node: Node) -> None:
    """For every table of the schema, 'mss serve' on a real node's config with one key of
    that table misspelt exits 2 with one line naming the key's path (each run forked from
    the tests' CLI server: no Python start-up per table)."""
    wrong = []
    for path in TABLES:
        cfg, line = typo_config(node, path)
        proc = CLI.run(["--config", str(cfg), "serve"], None)
        if proc.returncode != 2 or proc.stderr.strip().splitlines() != [line]:
            wrong.append((path, proc.returncode, proc.stderr))
    assert not wrong
