"""The one output style of every listing command: a table that fits the terminal, or JSON.

    from mss.cli_output import JSON_OPTION, Column, emit

    @app.command("list")
    def things_list(ctx: typer.Context, json_out: JSON_OPTION = False) -> None:
        rows = [{"name": "a", "size": 3, "updated": 1.7e9}, ...]
        emit(rows, [Column("name"), Column("size", justify="right"),
                    Column("updated", format=when)], json_out=json_out)

A table (rich) is never wider than the terminal: ``COLUMNS`` when set, else the terminal's
width, else 80 (a pipe). Long cells wrap (``overflow="fold"``) or are cut with an ellipsis
(``overflow="ellipsis"``); no markup is read from the data. With ``--json``: one JSON list
of objects on stdout, each row with every key it was given (it may carry more than the
table shows), values unformatted (numbers stay numbers, timestamps stay epoch seconds, None
is null): what a script parses. ``emit_fields`` is the same for one record (``mss mailbox
show``): aligned ``label: value`` lines or one object.

Light to import (rich is loaded when a table is printed): every admin command loads this.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from rich.console import Console

JSON_OPTION = Annotated[bool, typer.Option(
    "--json", help="Print a JSON list of objects (one object for a single record) instead "
    "of a table.")]

Cell = Callable[[object], str]


@dataclass(frozen=True)
class Column:
    """One column: the row key it shows, its header (default the key), how its cell reads
    in the table (``format``; JSON always carries the raw value)."""

    key: str
    header: str | None = None
    justify: Literal["left", "right"] = "left"
    overflow: Literal["fold", "ellipsis"] = "fold"
    format: Cell | None = None
    min_width: int | None = None
    max_width: int | None = None


def when(value: object) -> str:
    """Epoch seconds (or a datetime) as ISO 8601 UTC to the second; None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        return str(value)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def text(value: object) -> str:
    """The default cell: None '-', booleans yes/no, sequences comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(text(v) for v in value)
    if isinstance(value, dt.datetime):
        return when(value)
    return str(value)


def plain(value: object) -> object:
    """A value as JSON carries it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def print_json(value: object) -> None:
    json.dump(plain(value), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def emit(rows: Sequence[Mapping[str, object]], columns: Sequence[Column], *, json_out: bool,
         title: str | None = None, caption: str | None = None,
         json_skip: Sequence[str] = ()) -> None:
    """Print *rows* as a table of *columns* fitting the terminal, or (``json_out``) as a
    JSON list of the rows themselves: every key of each row (a row may carry more than the
    table shows) except *json_skip* (a key made for the table only). *title* and *caption*
    go with the table only."""
    if json_out:
        print_json([{k: v for k, v in row.items() if k not in json_skip} for row in rows])
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=title, caption=caption, pad_edge=False,
                  show_edge=False, title_justify="left", caption_justify="left")
    out = console()
    headers = [c.header if c.header is not None else c.key for c in columns]
    cells = [[(c.format or text)(row.get(c.key)) for c in columns] for row in rows]
    widths = fit_widths(columns, headers, cells, out.width)
    for i, (c, header) in enumerate(zip(columns, headers, strict=True)):
        table.add_column(header, justify=c.justify, overflow=c.overflow,
                         width=widths[i] if widths else None,
                         no_wrap=c.overflow == "ellipsis")
    for line in cells:
        table.add_row(*(Text(cell) for cell in line))
    out.print(table)


def fit_widths(columns: Sequence[Column], headers: Sequence[str],
               cells: Sequence[Sequence[str]], width: int) -> list[int] | None:
    """Each column's width so that the table fits *width*: the widest columns shrink first,
    none below its floor (its min_width, its header's longest word, at most its content);
    None (rich's own even reduction) when even the floors do not fit."""
    from rich.cells import cell_len

    def longest(value: str) -> int:
        return max((cell_len(line) for line in value.splitlines()), default=0)

    natural = []
    for i, (c, header) in enumerate(zip(columns, headers, strict=True)):
        wanted = max([longest(header), 1, *(longest(line[i]) for line in cells)])
        natural.append(min(wanted, c.max_width) if c.max_width else wanted)
    floors = [min(n, max(c.min_width or 1, *(cell_len(w) for w in h.split()), 1))
              for c, h, n in zip(columns, headers, natural, strict=True)]
    room = width - 3 * (len(columns) - 1)  # a column's padding and the divider: 3 cells
    if sum(natural) <= room:
        return natural
    if sum(floors) > room:  # headers broken rather than columns dropped
        floors = [min(n, c.min_width or 1) for c, n in zip(columns, natural, strict=True)]
    if sum(floors) > room:
        floors = [1] * len(columns)
    if sum(floors) > room:
        return None
    low, high = 1, max(natural)  # the largest cap that fits (water-filling)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(max(f, min(n, cap)) for f, n in zip(floors, natural, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    widths = [max(f, min(n, low)) for f, n in zip(floors, natural, strict=True)]
    spare = room - sum(widths)  # what the cap's rounding left: to the columns still cut
    for i, n in enumerate(natural):
        give = min(spare, n - widths[i])
        widths[i] += give
        spare -= give
    return widths


def emit_fields(record: Mapping[str, object], *, json_out: bool,
                labels: Mapping[str, str] | None = None,
                formats: Mapping[str, Cell] | None = None) -> None:
    """One record: ``label: value`` lines aligned (wrapped to the terminal), or one JSON
    object with the raw values."""
    if json_out:
        print_json(dict(record))
        return
    from rich.table import Table
    from rich.text import Text

    labels, formats = labels or {}, formats or {}
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in record.items():
        grid.add_row(Text(f"{labels.get(key, key)}:"), Text(formats.get(key, text)(value)))
    console().print(grid)


def console() -> Console:
    """stdout as rich sees it: COLUMNS honoured, no markup, no highlighting, no emoji."""
    from rich.console import Console

    return Console(markup=False, highlight=False, emoji=False, soft_wrap=False)


__all__ = ["JSON_OPTION", "Column", "emit", "emit_fields", "print_json", "text", "when"]
