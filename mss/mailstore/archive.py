"""A mailbox as an archive and back (issue 16, reversibility; docs/export.md).

Two formats, both streams of bytes produced or consumed one message at a time (memory
bounded by the largest message, whatever the mailbox's size):

- **mbox** (mboxrd: a body line matching ``^>*From `` gets one more ``>``, removed on read;
  reversible). Every folder in one stream, each message::

      From MAILER-DAEMON <asctime of its internal date, UTC>
      X-Mss-Folder: <folder name, UTF-8>
      Status: <R when \\Seen>O
      X-Status: <A \\Answered, F \\Flagged, T \\Draft, D \\Deleted>
      X-Keywords: <keywords>
      <the message's bytes, escaped>
      <one end of line>

  The four lines after the From_ line are ours (Status, X-Status and X-Keywords as mutt and
  Dovecot write them) and are removed on import when they come first in that order, so the
  message's own bytes come back unchanged; an mbox written elsewhere keeps its headers and
  its flags are read from its Status, X-Status and X-Keywords headers. Line ends are the
  message's (CRLF for mail received over SMTP). The separator is one end of line after the
  message, removed on read: a message that does not end with a line end comes back exact.

- **maildir**: a tar stream (POSIX pax, UTF-8 names) of a Maildir++ tree: ``Maildir/`` for
  INBOX, ``Maildir/.<name>/`` for another folder (``/`` of the hierarchy written ``.``; a
  ``.`` or ``%`` inside a name written ``%2E`` / ``%25``), each with ``cur new tmp`` and,
  when its messages carry keywords, ``dovecot-keywords`` (Dovecot's letters a-z for up to 26
  keywords) before its messages; ``cur/<date>.<n>.mss:2,<flags>`` per message (flags D F R S
  T and keyword letters, in ASCII order; RFC-less, as documented by the Maildir spec and
  Dovecot), its mtime the internal date. A Maildir directory on disk is read the same way.

Import writes every message in the caller's transaction: a malformed message raises
:class:`ArchiveError` naming its number, and the caller's rollback leaves the mailbox as it
was. Internal dates are kept to the second (IMAP's INTERNALDATE resolution).
"""

from __future__ import annotations

import calendar
import io
import re
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from sqlalchemy import Connection, Engine, select

from mss import crypto, db
from mss.mailstore import folders as folder_store
from mss.mailstore.errors import StoreError
from mss.mailstore.messages import CopySource, copy_messages, new_id

FORMATS = ("mbox", "maildir")
PAGE = 200  # messages read per statement on export (ciphertext: a few MB at most)
BATCH = 500  # messages inserted per statement on import
BATCH_BYTES = 16 * 1024 * 1024

_ASCTIME = re.compile(rb"([A-Z][a-z]{2}) +([A-Z][a-z]{2}) +(\d{1,2}) +(\d{1,2}):(\d\d):(\d\d) +"
                      rb"(?:[A-Z]{3,4} +|[+-]\d{4} +)?(\d{4})")
_HEADER_END = re.compile(rb"\n\r?\n")
_MONTHS = MappingProxyType({m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)})
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")  # RFC 5322 §2.2 field name, then ":"
_FLAG_LETTERS = (("\\Draft", "D"), ("\\Flagged", "F"), ("\\Answered", "R"), ("\\Seen", "S"),
                 ("\\Deleted", "T"))  # Maildir info "2," letters, in ASCII order
_X_STATUS = (("\\Answered", "A"), ("\\Flagged", "F"), ("\\Draft", "T"), ("\\Deleted", "D"))
_OURS = (b"X-Mss-Folder: ", b"Status: ", b"X-Status: ", b"X-Keywords: ")
ROOT = "Maildir"
MAX_KEYWORDS = 26  # Dovecot's dovecot-keywords letters a-z


class ArchiveError(StoreError):
    """An archive that cannot be read or written (the message number when it is one)."""


@dataclass(frozen=True)
class ArchivedMessage:
    folder: str
    flags: tuple[str, ...]
    internal_date: float
    data: bytes


@dataclass(frozen=True)
class ArchivedFolder:
    """A folder of a Maildir tree, with or without messages (kept even when empty)."""

    name: str


Item = ArchivedMessage | ArchivedFolder


@dataclass
class Counts:
    messages: int = 0
    bytes: int = 0
    folders: set[str] = field(default_factory=set)
    created: int = 0  # folders created by an import

    def detail(self) -> dict[str, int]:
        return {"messages": self.messages, "bytes": self.bytes, "folders": len(self.folders),
                "folders_created": self.created}


# --------------------------------------------------------------------------- export: reading

def exported(reader: Engine, keyring: crypto.Keyring, mailbox_id: int,
             counts: Counts | None = None) -> Iterator[ArchivedMessage]:
    """Every message of the mailbox, folder by folder in UID order, decrypted one at a time;
    each page of :data:`PAGE` rows its own autocommit statement (no transaction held open).
    TamperedError names the first message that does not open."""
    for _, messages in exported_folders(reader, keyring, mailbox_id, counts):
        yield from messages


def exported_folders(reader: Engine, keyring: crypto.Keyring, mailbox_id: int,
                     counts: Counts | None = None
                     ) -> Iterator[tuple[folder_store.Folder, Iterator[ArchivedMessage]]]:
    with reader.connect() as conn:
        found = sorted(folder_store.folders(conn, keyring, mailbox_id),
                       key=lambda f: (f.name != "INBOX", f.name))
        key_id = crypto.mailbox_key_id(mailbox_id)
        owner_key = keyring.key(key_id, conn)
    for folder in found:
        yield folder, _folder_messages(reader, owner_key, key_id, folder, counts)


def _folder_messages(reader: Engine, owner_key: object, key_id: str,
                     folder: folder_store.Folder, counts: Counts | None
                     ) -> Iterator[ArchivedMessage]:
    m = db.messages.c
    query = select(m.uid, m.id, m.flags, m.internal_date, m.key_blob, m.body_blob).where(
        m.folder_id == folder.id)
    last = 0
    while True:
        with reader.connect() as conn:
            rows = conn.execute(query.where(m.uid > last).order_by(m.uid).limit(PAGE)).all()
        for row in rows:
            try:
                data = crypto.open_message(owner_key, key_id, row.id,  # type: ignore[arg-type]
                                           row.key_blob, row.body_blob)
            except crypto.TamperedError:
                raise crypto.TamperedError(f"message {row.id} does not decrypt") from None
            if counts is not None:
                counts.messages += 1
                counts.bytes += len(data)
                counts.folders.add(folder.name)
            yield ArchivedMessage(folder.name, tuple(row.flags.split()) if row.flags else (),
                                  float(row.internal_date), data)
        if len(rows) < PAGE:
            return
        last = rows[-1].uid


def folder_keywords(reader: Engine, folder_id: int) -> list[str]:
    """The keywords (flags not starting with \\) the folder's messages carry, sorted."""
    found: set[str] = set()
    with reader.connect() as conn:
        rows = db.in_pages(conn, select(db.messages.c.uid, db.messages.c.flags).where(
            db.messages.c.folder_id == folder_id), db.messages.c.uid)
        for row in rows:
            found.update(f for f in (row.flags or "").split() if not f.startswith("\\"))
    return sorted(found)


# --------------------------------------------------------------------------- mbox

def _eol(data: bytes) -> bytes:
    return b"\r\n" if data.endswith(b"\r\n") or (b"\r\n" in data[:1000]
                                                 and not data.endswith(b"\n")) else b"\n"


def _status(flags: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    status = ("R" if "\\Seen" in flags else "") + "O"
    x_status = "".join(letter for flag, letter in _X_STATUS if flag in flags)
    keywords = " ".join(f for f in flags if not f.startswith("\\"))
    return status.encode(), x_status.encode(), keywords.encode("utf-8")


def mbox_chunks(messages: Iterable[ArchivedMessage]) -> Iterator[bytes]:
    """The mboxrd stream of *messages*, one chunk per message."""
    for message in messages:
        eol = _eol(message.data)
        status, x_status, keywords = _status(message.flags)
        when = time.asctime(time.gmtime(int(message.internal_date))).encode()
        head = b"".join((b"From MAILER-DAEMON ", when, eol,
                         _OURS[0], message.folder.encode("utf-8"), eol,
                         _OURS[1], status, eol, _OURS[2], x_status, eol,
                         _OURS[3], keywords, eol))
        body = message.data
        if b"From " in body:  # every line to escape holds it
            if b"\n>" in body or body.startswith((b">", b"From ")):
                body = _ESCAPE.sub(rb">\1", body)
            else:  # no line starts with ">": only "From " lines, a faster scan
                body = body.replace(b"\nFrom ", b"\n>From ")
        yield head
        yield body
        yield eol


def _from_date(line: bytes, number: int) -> float:
    found = _ASCTIME.search(line)
    if found is None:
        raise ArchiveError(f"message {number}: From_ line has no date")
    _, month, day, hour, minute, second, year = found.groups()
    fields = (int(year), _MONTHS.get(month, 0), int(day), int(hour), int(minute), int(second))
    if not (fields[1] and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60
            and fields[5] < 61):
        raise ArchiveError(f"message {number}: From_ line has an invalid date")
    return float(calendar.timegm(fields))


def _header_flags(data: bytes) -> tuple[str, ...]:
    """Flags of a message written by another tool: its Status, X-Status, X-Keywords."""
    flags: list[str] = []
    end = _HEADER_END.search(data)
    for line in data[:end.start() if end else len(data)].splitlines():
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"status" and b"R" in value:
            flags.append("\\Seen")
        elif name == b"x-status":
            flags += [flag for flag, letter in _X_STATUS if letter.encode() in value]
        elif name == b"x-keywords":
            flags += value.decode("utf-8", "replace").replace(",", " ").split()
    return tuple(dict.fromkeys(flags))


def _check(data: bytes, number: int, max_size: int) -> None:
    if not data or data.isspace():  # isspace stops at the first other byte
        raise ArchiveError(f"message {number}: empty")
    if len(data) > max_size:
        raise ArchiveError(f"message {number}: larger than {max_size} bytes")
    if not _HEADER_LINE.match(data):
        raise ArchiveError(f"message {number}: does not start with a header field "
                           "(RFC 5322 §2.2)")


_UNESCAPE = re.compile(rb"(?m)^>(>*From )")
_ESCAPE = re.compile(rb"(?m)^(>*From )")
READ = 1024 * 1024


def _finish(number: int, block: bytes, default_folder: str, max_size: int) -> ArchivedMessage:
    """One message of an mbox: *block* from its From_ line to the separator included."""
    end = block.find(b"\n") + 1
    when = _from_date(block[:end], number)
    folder, flags = default_folder, None
    if block.startswith(_OURS[0], end):  # our four lines, in their order
        lines, at = [], end
        for prefix in _OURS:
            stop = block.find(b"\n", at) + 1
            if not stop or not block.startswith(prefix, at):
                break
            lines.append(block[at + len(prefix):stop].rstrip(b"\r\n"))
            at = stop
        if len(lines) == len(_OURS):
            try:
                folder = lines[0].decode("utf-8")
            except UnicodeDecodeError:
                raise ArchiveError(f"message {number}: X-Mss-Folder is not UTF-8") from None
            if not folder:
                raise ArchiveError(f"message {number}: empty X-Mss-Folder")
            flags = (("\\Seen",) if b"R" in lines[1] else ()) + tuple(
                flag for flag, letter in _X_STATUS if letter.encode() in lines[2]) + tuple(
                lines[3].decode("utf-8", "replace").split())
            end = at
    # the separator: the end of line after the message
    stop = len(block) - (2 if block.endswith(b"\r\n") else 1 if block.endswith(b"\n") else 0)
    data = block[end:stop]
    if b"From " in data:
        data = _UNESCAPE.sub(rb"\1", data)
    _check(data, number, max_size)
    return ArchivedMessage(folder, flags if flags is not None else _header_flags(data),
                           when, data)


def parse_mbox(stream: BinaryIO, default_folder: str = "INBOX",
               max_size: int = 50 * 1024 * 1024) -> Iterator[ArchivedMessage]:
    """The messages of an mboxrd stream, one at a time (read by blocks: a message is cut at
    the next line starting ``From ``); ArchiveError names the first malformed message
    (1-based)."""
    buffer, start, number, eof = b"", 0, 0, False
    limit = max_size + 64 * 1024  # the message, its From_ line and our four lines
    while not buffer.lstrip(b"\r\n") and not eof:
        more = stream.read(READ)
        eof = not more
        buffer += more
    buffer = buffer.lstrip(b"\r\n")
    if not buffer:
        return
    if not buffer.startswith(b"From "):
        raise ArchiveError("message 1: the mbox does not start with a From_ line")
    searched = 0
    while True:
        cut = buffer.find(b"\nFrom ", max(start, searched))
        if cut >= 0:
            number += 1
            yield _finish(number, buffer[start:cut + 1], default_folder, max_size)
            start = searched = cut + 1
            continue
        if eof:
            if start < len(buffer):
                number += 1
                yield _finish(number, buffer[start:], default_folder, max_size)
            return
        if len(buffer) - start > limit:
            raise ArchiveError(f"message {number + 1}: larger than {max_size} bytes")
        searched = max(start, len(buffer) - 6)  # "\nFrom " may straddle two reads
        more = stream.read(READ)
        eof = not more
        buffer = buffer[start:] + more
        searched -= start
        start = 0


# --------------------------------------------------------------------------- maildir

def folder_dir(name: str) -> str:
    """The Maildir++ directory of a folder: INBOX the root, else ``.`` + its name."""
    if name == "INBOX":
        return ROOT
    parts = [p.replace("%", "%25").replace(".", "%2E") for p in name.split("/")]
    return f"{ROOT}/." + ".".join(parts)


def folder_name(directory: str) -> str:
    """The folder of a Maildir++ directory name (the inverse of :func:`folder_dir`)."""
    if not directory.startswith("."):
        raise ArchiveError(f"{directory[:100]!r} is not a Maildir++ folder")
    parts = directory[1:].split(".")
    return "/".join(p.replace("%2E", ".").replace("%25", "%") for p in parts)


def maildir_info(flags: tuple[str, ...], keywords: list[str]) -> str:
    letters = [letter for flag, letter in _FLAG_LETTERS if flag in flags]
    letters += sorted(chr(ord("a") + keywords.index(f)) for f in flags if f in keywords)
    return ":2," + "".join(letters)


def parse_info(name: str, keywords: dict[str, str]) -> tuple[str, ...]:
    """Flags of a Maildir file name (``...:2,<letters>``; ``!`` also, as on Windows)."""
    for sep in (":2,", "!2,"):
        if sep in name:
            letters = name.rsplit(sep, 1)[1]
            break
    else:
        return ()
    system = {letter: flag for flag, letter in _FLAG_LETTERS}
    out = [system[c] for c in letters if c in system]
    out += [keywords[c] for c in letters if c in keywords]
    return tuple(sorted(set(out), key=out.index))


def _tar_member(name: str, data: bytes | None, mtime: float, mode: int = 0o600) -> bytes:
    info = tarfile.TarInfo(name)
    info.mtime = int(mtime)
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o700
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    info.size = len(data)
    pad = (-len(data)) % tarfile.BLOCKSIZE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict") + data + b"\0" * pad


def maildir_chunks(reader: Engine, keyring: crypto.Keyring, mailbox_id: int,
                   counts: Counts | None = None) -> Iterator[bytes]:
    """The tar stream of the mailbox as a Maildir++ tree, one chunk per member. Members
    other than messages get mtime 0: the same mailbox gives the same bytes."""
    now = 0.0
    yield _tar_member(ROOT + "/", None, now)
    for folder, messages in exported_folders(reader, keyring, mailbox_id, counts):
        base = folder_dir(folder.name)
        if base != ROOT:
            yield _tar_member(base + "/", None, now)
        for sub in ("cur", "new", "tmp"):
            yield _tar_member(f"{base}/{sub}/", None, now)
        keywords = folder_keywords(reader, folder.id)
        if len(keywords) > MAX_KEYWORDS:
            raise ArchiveError(f"a folder has {len(keywords)} keywords; Maildir keeps "
                               f"{MAX_KEYWORDS}: export as mbox")
        if keywords:
            text = "".join(f"{i} {k}\n" for i, k in enumerate(keywords)).encode("utf-8")
            yield _tar_member(f"{base}/dovecot-keywords", text, now)
        for n, message in enumerate(messages, 1):
            name = f"{base}/cur/{int(message.internal_date)}.{n}.mss" + \
                maildir_info(message.flags, keywords)
            yield _tar_member(name, message.data, message.internal_date)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)  # end of archive (POSIX.1-2001)


def _keywords_file(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORDS and name:
            out[chr(ord("a") + int(index))] = name
    return out


def _order(name: str) -> tuple[object, ...]:
    """Maildir files in delivery order: the numbers of their names compared as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"[.:]", name))


def _split_member(path: str) -> tuple[str, str, str] | None:
    """(folder, sub-directory, file) of a tar member under Maildir/, else None."""
    parts = path.strip("/").split("/")
    if parts[0] == ".":
        parts = parts[1:]
    if not parts or parts[0] != ROOT:
        return None
    if len(parts) == 3 and parts[1].startswith("."):  # a folder's dovecot-keywords
        return folder_name(parts[1]), "", parts[2]
    if len(parts) == 3:
        return "INBOX", parts[1], parts[2]
    if len(parts) == 4:
        return folder_name(parts[1]), parts[2], parts[3]
    if len(parts) == 2:
        return "INBOX", "", parts[1]
    return None


def parse_maildir_tar(stream: BinaryIO, max_size: int = 50 * 1024 * 1024
                      ) -> Iterator[Item]:
    """The folders and messages of a Maildir++ tar stream (as :func:`maildir_chunks`
    writes it)."""
    keywords: dict[str, dict[str, str]] = {}
    number = 0
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 (a stream)
        for member in archive:
            where = _split_member(member.name)
            if where is None:
                continue
            folder, sub, name = where
            if member.isdir() and name == "cur":  # Maildir/cur, Maildir/.X/cur
                yield ArchivedFolder(folder)
                continue
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            if sub == "" and name == "dovecot-keywords":
                keywords[folder] = _keywords_file(handle.read(64 * 1024))
                continue
            if sub not in ("cur", "new"):
                continue
            number += 1
            if member.size > max_size:
                raise ArchiveError(f"message {number}: larger than {max_size} bytes")
            data = handle.read()
            _check(data, number, max_size)
            yield ArchivedMessage(folder, parse_info(name, keywords.get(folder, {})),
                                  float(member.mtime), data)
    except tarfile.TarError as exc:
        raise ArchiveError(f"message {number + 1}: not a tar archive ({exc})") from None


def parse_maildir_dir(root: Path, max_size: int = 50 * 1024 * 1024
                      ) -> Iterator[Item]:
    """The messages of a Maildir++ directory on disk (INBOX at *root*, folders in .name)."""
    if not (root / "cur").is_dir():
        raise ArchiveError(f"{root} is not a Maildir (no cur/)")
    found = [("INBOX", root)] + sorted(
        (folder_name(p.name), p) for p in root.iterdir()
        if p.name.startswith(".") and p.name not in (".", "..") and (p / "cur").is_dir())
    number = 0
    for folder, path in found:
        yield ArchivedFolder(folder)
        keys_file = path / "dovecot-keywords"
        keywords = _keywords_file(keys_file.read_bytes()) if keys_file.is_file() else {}
        files = sorted((f for sub in ("cur", "new") for f in (path / sub).iterdir()
                        if f.is_file()), key=lambda f: _order(f.name))
        for file in files:
            number += 1
            stat = file.stat()
            if stat.st_size > max_size:
                raise ArchiveError(f"message {number}: larger than {max_size} bytes")
            data = file.read_bytes()
            _check(data, number, max_size)
            yield ArchivedMessage(folder, parse_info(file.name, keywords), stat.st_mtime, data)


def sniff(head: bytes) -> str | None:
    """"mbox", "maildir" (a tar) or None, from the first bytes of a plain archive."""
    stripped = head.lstrip(b"\r\n")
    if stripped.startswith(b"From "):
        return "mbox"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "maildir"
    return None


# --------------------------------------------------------------------------- import: writing

def import_messages(conn: Connection, keyring: crypto.Keyring, mailbox_id: int,
                    messages: Iterable[Item],
                    on_batch: Callable[[int], None] | None = None) -> Counts:
    """Seal and store *messages* in the caller's transaction (folders created as needed),
    :data:`BATCH` at a time; the caller commits, or rolls back on ArchiveError."""
    counts = Counts()
    key_id = crypto.mailbox_key_id(mailbox_id)
    owner_key = keyring.key(key_id, conn)
    folder_ids: dict[str, int] = {}
    batch: list[CopySource] = []
    batch_folder: int | None = None
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch and batch_folder is not None:
            copy_messages(conn, batch_folder, mailbox_id, batch, [])
            if on_batch is not None:
                on_batch(len(batch))
        batch, batch_bytes = [], 0

    for message in messages:
        if isinstance(message, ArchivedFolder):
            if message.name not in folder_ids:
                folder_ids[message.name] = _folder_id(conn, keyring, mailbox_id, message.name,
                                                      counts)
            continue
        target = folder_ids.get(message.folder)
        if target is None:
            target = _folder_id(conn, keyring, mailbox_id, message.folder, counts)
            folder_ids[message.folder] = target
        if target != batch_folder or len(batch) >= BATCH or batch_bytes >= BATCH_BYTES:
            flush()
            batch_folder = target
        row_id = new_id()
        batch.append(CopySource(row_id, crypto.seal_message(owner_key, key_id, row_id,
                                                            message.data),
                                len(message.data), message.flags, message.internal_date))
        batch_bytes += len(message.data)
        counts.messages += 1
        counts.bytes += len(message.data)
        counts.folders.add(message.folder)
    flush()
    return counts


def _folder_id(conn: Connection, keyring: crypto.Keyring, mailbox_id: int, name: str,
               counts: Counts) -> int:
    if "\r" in name or "\n" in name or "\0" in name or name.startswith("/"):
        raise ArchiveError("a folder name holds a control character or starts with /")
    found = folder_store.folder_by_name(conn, keyring, mailbox_id, name)
    if found is None:
        folder_store.create_folder(conn, keyring, mailbox_id, name, [])
        counts.created += 1
        found = folder_store.folder_by_name(conn, keyring, mailbox_id, name)
        assert found is not None
    return found.id


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what pyrage.encrypt_io pulls).
    ``error``: the exception a read raised (a message that does not decrypt, Ctrl-C),
    which pyrage turns into its own: the caller raises it again."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            while not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return 0
                self._pending = memoryview(chunk)
            size = min(len(buffer), len(self._pending))
            buffer[:size] = self._pending[:size]
            self._pending = self._pending[size:]
            return size
        except BaseException as exc:
            self.error = exc
            raise


