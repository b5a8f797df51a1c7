"""mss.cli_output: tables never wider than the terminal, JSON a list of raw objects."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.node import REPO

SCRIPT = """
import sys
from mss.cli_output import Column, emit, emit_fields, when
rows = [{"id": "a" * 40, "status": "queued", "from": "someone@" + "very-long." * 6 + "fr",
         "size": 123456, "next": 1.7e9, "error": "451 4.7.1 [bold]try later[/] " * 8,
         "none": None}] * 3
cols = [Column("id", overflow="ellipsis", max_width=16), Column("status"), Column("from"),
        Column("size", justify="right"), Column("next", header="next attempt", format=when),
        Column("error", header="last error"), Column("none")]
emit(rows, cols, json_out=sys.argv[1] == "json", title="queue", caption="3 row(s)")
if sys.argv[1] != "json":
    emit_fields({"address": "a@b.fr", "created": 1.7e9, "note": "word " * 40},
                json_out=False, formats={"created": when})
"""


def run(mode: str, columns: int) -> str:
    env = {"COLUMNS": str(columns), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60, check=True).stdout


@pytest.mark.parametrize("width", [80, 60, 40])
def test_table_fits_the_terminal_and_keeps_markup_as_text(width: int) -> None:
    out = run("table", width)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "[bold]" in out or width < 60  # data is never read as markup (40: cut up)
    assert "aaa…" in out  # an ellipsis column cut, not wrapped
    assert "2023-11-14" in out and "3 row(s)" in out and "address:" in out


def test_json_is_a_list_of_raw_objects() -> None:
    data = json.loads(run("json", 40))
    assert len(data) == 3
    assert data[0] == {"id": "a" * 40, "status": "queued",
                       "from": "someone@" + "very-long." * 6 + "fr", "size": 123456,
                       "next": 1.7e9, "error": "451 4.7.1 [bold]try later[/] " * 8,
                       "none": None}


def test_import_is_light() -> None:
    code = "import sys, mss.cli_output; print(any(m.startswith('rich') for m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert proc.stdout.strip() == "False"
