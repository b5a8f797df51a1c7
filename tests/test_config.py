"""Configuration strictness: every key config/mss.toml documents is known to the loader, and a
misspelt key anywhere stops the loader and the CLI naming its path (issue 20 #5)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mss.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "mss.toml"
# a commented-out example line of config/mss.toml: '# [table]', '# [[table]]' or '# key = ...'
COMMENTED = re.compile(r"^# (\[\[?[a-z_.]+\]\]?|[a-z_0-9]+ = .*)")


def documented() -> dict[str, Any]:
    """config/mss.toml with its commented-out examples ([[audit.destinations]], [directory],
    logging.file...) enabled, so that every documented table and key is walked."""
    lines = [COMMENTED.sub(r"\1", line) for line in EXAMPLE.read_text().splitlines()]
    return tomllib.loads("\n".join(lines))


def tables(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every table of a parsed TOML document, with its dotted path (arrays: path[i])."""
    yield path, node
    for key, value in node.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield from tables(value, sub)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                yield from tables(item, f"{sub}[{index}]")


def misspell(key: str) -> str:
    if len(key) < 4:
        return key + key[-1]  # mx -> mxx
    i = next(i for i in range(1, len(key) - 1) if key[i] != key[i + 1])
    return key[:i] + key[i + 1] + key[i] + key[i + 2:]  # two letters swapped: host -> hsot


def test_documented_config_loads_with_no_unknown_key(tmp_path: Path) -> None:
    raw = documented()
    paths = {path for path, _ in tables(raw)}
    assert {"audit.destinations[0]", "directory", "directory.attributes",
            "directory.publish", "whitelist.fetch", "listeners.imaps"} <= paths
    assert "file" in raw["logging"] and "server_name" in raw["audit"]["destinations"][0]
    config = parse_config(raw, tmp_path / "mss.toml")
    assert config.directory is not None and config.directory.publish is not None
    assert config.audit.destinations[0].server_name == "audit.example.fr"
    parse_config(tomllib.loads(EXAMPLE.read_text()), EXAMPLE)  # as shipped


def test_every_documented_key_misspelt_is_refused_naming_it(tmp_path: Path) -> None:
    """Each key of each table that config/mss.toml documents, misspelt in turn, stops the
    loader with its full path and the right name suggested (crl_file for crl_files once let
    a revoked operator's mail in)."""
    checked = 0
    for path, table in tables(documented()):
        for key in list(table):
            if isinstance(table[key], list) and table[key] and isinstance(table[key][0], dict):
                continue  # an array of tables: its own tables are walked
            raw = documented()
            target = raw
            for part in filter(None, re.split(r"\.|\[(\d+)\]", path)):
                target = target[int(part)] if part.isdigit() else target[part]
            target[misspell(key)] = target.pop(key)
            name = f"{path}.{misspell(key)}" if path else misspell(key)
            with pytest.raises(ConfigError) as caught:
                parse_config(raw, tmp_path / "mss.toml")
            assert f"unknown {'table' if isinstance(target[misspell(key)], dict) else 'key'} " \
                   f"{name!r} (did you mean {key!r}?)" in str(caught.value), (name, caught.value)
            checked += 1
    assert checked > 120  # every section, not a sample


def test_reported_typos_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    for raw, message in (
        ({"pki": {"crl_file": ["revoked.crl"]}}, "'pki.crl_file' (did you mean 'crl_files'?)"),
        ({"smtp": {"max_recipeints": 3}}, "'smtp.max_recipeints' (did you mean"),
        ({"delivery": {"enabeld": False}}, "'delivery.enabeld' (did you mean 'enabled'?)"),
        ({"smpt": {"hostname": "x"}}, "unknown table 'smpt' (did you mean 'smtp'?)"),
        ({"listeners": {"mx": {"hots": "0.0.0.0"}}}, "'listeners.mx.hots' (did you mean"),
        ({"listeners": {"pop3": {}}}, "unknown table 'listeners.pop3'"),
        ({"audit": {"destinations": [{"host": "a.example", "prot": 1}]}},
         "'audit.destinations[0].prot' (did you mean 'port'?)"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(raw, cfg)


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
        "mss: error: config: unknown key 'listeners.mx.hots' (did you mean 'host'?)"]
    assert not (tmp_path / "mss.db").exists()
