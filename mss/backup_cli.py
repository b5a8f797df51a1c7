"""``mss backup ...``: consistent online backups, their verification, restore (docs/backup.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mss.cli_support import actor, fail, node

if TYPE_CHECKING:
    from mss.config import Config

backup_app = typer.Typer(no_args_is_help=True, help="Backups of the database (docs/backup.md).")

DirArg = Annotated[Path, typer.Argument(help="The backup directory.")]


def _config(ctx: typer.Context) -> Config:
    from mss.config import load_config, resolve_config_path

    return load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))


@backup_app.command("create")
def backup_create(ctx: typer.Context, directory: DirArg) -> None:
    """Copy the database into DIRECTORY (new or empty, made 0700) while mss serve runs:
    ciphertext and wrapped keys only, never a key file; a manifest says what it holds and
    which key files a restore needs."""
    from mss.backup import BackupError, create

    with node(ctx) as app:
        try:
            manifest = create(app.config, directory, actor(), app.engine)
        except BackupError as exc:
            fail(str(exc))
    head = manifest["audit"]["head"]
    counts = manifest["counts"]
    print(f"backup {directory}: {manifest['backend']}, {counts['messages']} messages, "
          f"{counts['mailboxes']} mailboxes, {counts['queue']} queued, audit head record "
          f"{head['id'] if head else '-'}")
    print("  key files it needs (not in the backup): "
          + ", ".join(f"{f['name']} {f['path']}" for f in manifest["key_files"]))


@backup_app.command("verify")
def backup_verify(ctx: typer.Context, directory: DirArg) -> None:
    """Check DIRECTORY: file hashes, the copy opens, its audit chain verifies (with this
    node's audit signing key) up to the manifest's head. Exit 0 when good, 1 when not."""
    from mss.backup import verify

    config = _config(ctx)
    verdict = verify(directory, config.audit.signing_key_file)
    print(verdict.message)
    if not verdict.ok:
        raise typer.Exit(1)


@backup_app.command("restore")
def backup_restore(ctx: typer.Context, directory: DirArg) -> None:
    """Restore DIRECTORY into this node's database, which must be empty, with the key files
    of the backup (checked first: nothing is written when they differ). The node must not
    be serving."""
    from sqlalchemy.exc import DBAPIError

    from mss.backup import BackupError, restore
    from mss.db import unusable

    config = _config(ctx)
    try:
        restored = restore(config, directory, actor())
    except BackupError as exc:
        fail(str(exc))
    except DBAPIError as exc:  # the target database cannot be reached or written
        raise unusable(config.database_url, exc) from None
    shredded = (f" ({restored.shredded} messages of crypto-shredded mailboxes do not, on "
                f"purpose)" if restored.shredded else "")
    print(f"restored {directory} into {restored.database}: {restored.messages} messages and "
          f"{restored.queued} queued copies decrypt{shredded}; {restored.chain}")
