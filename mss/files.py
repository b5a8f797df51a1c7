"""Files on disk: the one fsync of a path (a file's data, or a directory's entries), and a
file's SHA-256 read in bounded chunks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """A file's data, or a directory's entries (a rename in it), on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read *chunk* bytes at a time (never the whole file)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
