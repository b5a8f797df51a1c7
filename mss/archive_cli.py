"""``mss mailbox export`` and ``mss mailbox import``: a mailbox handed back, and taken in
(issue 16, reversibility; docs/export.md).

The export is encrypted with age (the pyrage binding of the rage implementation, age-encryption
.org/v1) to the recipients given on the command line (X25519 ``age1...`` keys or SSH public
keys): no plaintext touches the disk. It is streamed (a page of messages decrypted at a time,
encrypted as it is written) into a hidden temporary file beside the final name, 0600, flushed
to disk, then renamed: an interrupted export leaves nothing under the final name (a killed
one leaves its ``.NAME.*.part`` file, which a later export does not reuse).

The import reads an mbox, a Maildir directory, a Maildir tar, or an age archive of either
(``--identity KEYFILE``), decrypting as it reads (a thread writes the plaintext into a pipe,
never to disk), and writes every message in one transaction: a malformed message or an
archive that fails to decrypt is reported (the message's number) and nothing is imported.
Both are audited with counts (admin.mailbox.export / admin.mailbox.import).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from audit.events import Event, Outcome
from mss.cli_output import JSON_OPTION, emit_fields
from mss.cli_support import actor, fail, node
from mss.files import fsync_path

if TYPE_CHECKING:
    from mss.app import App

AGE_MAGIC = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")
READ = 1024 * 1024


def parse_recipients(texts: list[str]) -> list[Any]:
    """age recipients: ``age1...`` (X25519) or an SSH public key line; one line error else."""
    from pyrage import RecipientError, ssh, x25519

    out: list[Any] = []
    for text in texts:
        text = text.strip()
        try:
            if text.startswith("age1"):
                out.append(x25519.Recipient.from_str(text))
            elif text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
                out.append(ssh.Recipient.from_str(text))
            else:
                fail(f"recipient {text[:40]!r}: not an age (age1...) or SSH public key")
        except (RecipientError, ValueError) as exc:
            fail(f"recipient {text[:40]!r}: {exc}")
    if not out:
        fail("--recipient: at least one recipient key is needed")
    return out


def parse_identities(path: Path) -> list[Any]:
    """The age identities of a key file (``AGE-SECRET-KEY-1...`` lines, # comments) or an
    unencrypted OpenSSH private key."""
    from pyrage import IdentityError, ssh, x25519

    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"--identity {path}: {exc.strerror or exc}")
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in raw:
            return [ssh.Identity.from_buffer(raw)]
        found = [x25519.Identity.from_str(line.strip()) for line in
                 raw.decode("ascii", "replace").splitlines()
                 if line.strip().startswith("AGE-SECRET-KEY-")]
    except (IdentityError, ValueError) as exc:
        fail(f"--identity {path}: {exc}")
    if not found:
        fail(f"--identity {path}: no AGE-SECRET-KEY-1... line")
    return found


# --------------------------------------------------------------------------- export

def export_mailbox(node_app: App, address: str, fmt: str, to: Path, recipients: list[Any],
                   force: bool = False) -> dict[str, Any]:
    """Write the archive (see the module); the counts. Raises on any failure, leaving no
    file under *to* nor a temporary one."""
    import pyrage

    from mss.mailstore import archive, mailboxes

    with node_app.reader.connect() as conn:
        mailbox = mailboxes.require_mailbox(conn, address)
    if to.is_dir():
        fail(f"--to {to}: is a directory")
    if to.exists() and not force:
        fail(f"--to {to}: exists (--force to replace it)")
    parent = to.parent if str(to.parent) else Path(".")
    if not parent.is_dir():
        fail(f"--to {to}: no directory {parent}")
    counts = archive.Counts()
    if fmt == "mbox":
        chunks = archive.mbox_chunks(archive.exported(node_app.reader, node_app.keyring,
                                                      mailbox.id, counts))
    else:
        chunks = archive.maildir_chunks(node_app.reader, node_app.keyring, mailbox.id, counts)
    reader = archive.ChunkReader(chunks)
    started = time.monotonic()
    fd, temporary = tempfile.mkstemp(dir=parent, prefix=f".{to.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                pyrage.encrypt_io(reader, out, recipients)
            except Exception as exc:  # pyrage.EncryptError, or what a read raised
                if reader.error is not None:  # ours, through pyrage: raised as it was
                    raise reader.error from None
                if str(exc).startswith("KeyboardInterrupt"):  # Ctrl-C while it wrote
                    raise KeyboardInterrupt from None
                raise OSError(f"age encryption failed: {exc}") from None
            if reader.error is not None:
                raise reader.error
            out.flush()
            os.fsync(out.fileno())
            written = out.tell()
        os.replace(temporary, to)
        fsync_path(parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return {"mailbox": mailbox.address, "format": fmt, "file": str(to),
            **counts.detail(), "archive_bytes": written,
            "seconds": round(time.monotonic() - started, 3)}


def export(ctx: typer.Context, address: str,
           fmt: Annotated[str, typer.Option("--format", help="mbox or maildir.")],
           to: Annotated[Path, typer.Option("--to", help="The archive file to write.")],
           recipient: Annotated[list[str], typer.Option(
               "--recipient", help="An age (age1...) or SSH public key the archive is "
               "encrypted to (repeatable).")],
           force: Annotated[bool, typer.Option("--force", help="Replace an existing FILE.")]
           = False,
           json_out: JSON_OPTION = False) -> None:
    """Export every folder of ADDRESS (flags and internal dates kept) to FILE, encrypted to
    the recipients (age); written under a temporary name, then renamed."""
    from audit.journal import AuditRecord
    from mss.crypto import KeyringError, TamperedError

    if fmt not in ("mbox", "maildir"):
        fail(f"--format {fmt!r}: mbox or maildir")
    recipients = parse_recipients(recipient)
    with node(ctx) as node_app:
        try:
            result = export_mailbox(node_app, address, fmt, to, recipients, force)
        except (TamperedError, KeyringError, OSError) as exc:
            node_app.audit(AuditRecord(Event.ADMIN_MAILBOX_EXPORT, Outcome.SERIOUS_FAILURE,
                                       actor=actor(), mailbox=address.lower()[:320],
                                       reason=str(exc).splitlines()[0][:300],
                                       detail={"format": fmt}))
            raise
        node_app.audit(AuditRecord(
            Event.ADMIN_MAILBOX_EXPORT, actor=actor(), mailbox=result["mailbox"],
            detail={"format": fmt, "recipients": [r.strip() for r in recipient],
                    **{k: result[k] for k in ("messages", "bytes", "folders",
                                              "archive_bytes")}}))
    if json_out:
        emit_fields(result, json_out=True)
    else:
        print(f"exported {result['messages']} message(s) in {result['folders']} folder(s) "
              f"of {result['mailbox']} to {to} ({fmt}, age, {result['archive_bytes']} bytes)")


# --------------------------------------------------------------------------- import

class _Decrypted:
    """The plaintext of an age file, read from a pipe a thread writes (never on disk)."""

    def __init__(self, path: Path, identities: list[Any]) -> None:
        read_fd, write_fd = os.pipe()
        self.stream: BinaryIO = os.fdopen(read_fd, "rb", buffering=READ)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, identities, write_fd),
                                        name="age-decrypt", daemon=True)
        self._thread.start()

    def _run(self, path: Path, identities: list[Any], write_fd: int) -> None:
        import pyrage

        try:
            with path.open("rb") as source, os.fdopen(write_fd, "wb") as sink:
                pyrage.decrypt_io(source, sink, identities)
        except BaseException as exc:  # reported by finish(), in the importing thread
            self.error = exc

    def close(self) -> None:
        """Close the pipe's reading end (a thread still writing gets EPIPE) and wait."""
        self.stream.close()
        self._thread.join()

    def finish(self) -> None:
        """Close the pipe, wait for the thread; ArchiveError when it did not decrypt."""
        from mss.mailstore.archive import ArchiveError

        self.close()
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise ArchiveError(f"the archive does not decrypt with --identity: {self.error}")


def _with_head(head: bytes, stream: BinaryIO) -> BinaryIO:
    import io

    from mss.mailstore.archive import ChunkReader

    rest = iter(lambda: stream.read(READ), b"")
    return io.BufferedReader(ChunkReader(itertools.chain([head], rest)), READ)


def _read_head(stream: BinaryIO, size: int = 512) -> bytes:
    head = b""
    while len(head) < size:
        more = stream.read(size - len(head))
        if not more:
            break
        head += more
    return head


def import_archive(node_app: App, address: str, path: Path, identity: Path | None,
                   folder: str, fmt: str = "auto") -> dict[str, Any]:
    """Import FILE into the mailbox in one transaction; the counts (see the module)."""
    from mss.mailstore import archive, mailboxes

    max_size = node_app.config.smtp.max_message_size
    decrypted: _Decrypted | None = None
    source: BinaryIO | None = None
    kind = "maildir-dir"
    try:
        if path.is_dir():
            messages: Iterator[archive.Item] = archive.parse_maildir_dir(
                path, max_size)
        else:
            source = path.open("rb")
            head = _read_head(source, 64)
            encrypted = head.startswith(AGE_MAGIC)
            if encrypted:
                if identity is None:
                    fail(f"{path} is an age archive: give --identity KEYFILE")
                source.close()
                decrypted = _Decrypted(path, parse_identities(identity))
                source = decrypted.stream
                head = b""
            head += _read_head(source, 512 - len(head))
            stream = _with_head(head, source)
            sniffed = archive.sniff(head) if fmt == "auto" else fmt
            if sniffed is None:
                if decrypted is not None:
                    decrypted.finish()
                raise archive.ArchiveError("message 1: neither an mbox (no From_ line) nor "
                                           "a Maildir tar")
            messages = (archive.parse_mbox(stream, folder, max_size) if sniffed == "mbox"
                        else archive.parse_maildir_tar(stream, max_size))
            kind = sniffed + (" (age)" if encrypted else "")
        with node_app.engine.begin() as conn:
            mailbox = mailboxes.require_mailbox(conn, address)
            if mailbox.state == "deleting":  # its rows are about to be purged
                fail(f"mailbox {mailbox.address} is being deleted: nothing imported")
            counts = archive.import_messages(conn, node_app.keyring, mailbox.id, messages)
            if decrypted is not None:  # every byte authenticated before the commit
                decrypted.finish()
                decrypted = None
            from audit.journal import AuditRecord, append
            append(conn, [AuditRecord(Event.ADMIN_MAILBOX_IMPORT, actor=actor(),
                                      mailbox=mailbox.address,
                                      detail={"format": kind, **counts.detail()})])
    finally:
        if decrypted is not None:
            decrypted.close()
        if source is not None:
            source.close()
    return {"mailbox": mailbox.address, "format": kind, **counts.detail()}


def import_command(ctx: typer.Context, address: str,
                   file: Annotated[Path, typer.Argument(
                       metavar="FILE", help="An mbox, a Maildir directory, a Maildir tar, or "
                       "an age archive of mss mailbox export.")],
                   identity: Annotated[Path | None, typer.Option(
                       "--identity", help="age identity file (AGE-SECRET-KEY-1...) or "
                       "OpenSSH private key of an encrypted archive.")] = None,
                   folder: Annotated[str, typer.Option(
                       "--folder", help="Folder of the messages of an mbox written "
                       "elsewhere (mss's name their folder).")] = "INBOX",
                   json_out: JSON_OPTION = False) -> None:
    """Import the messages of FILE into ADDRESS (folders created as needed, flags and
    internal dates kept), all or nothing: a malformed message is reported by number."""
    from audit.journal import AuditRecord
    from mss.mailstore.archive import ArchiveError

    if not file.exists():
        fail(f"{file}: no such file or directory")
    with node(ctx) as node_app:
        try:
            result = import_archive(node_app, address, file, identity, folder)
        except ArchiveError as exc:
            node_app.audit(AuditRecord(Event.ADMIN_MAILBOX_IMPORT, Outcome.SERIOUS_FAILURE,
                                       actor=actor(), mailbox=address.lower()[:320],
                                       reason=str(exc)[:300]))
            fail(f"{file}: {exc}; nothing imported")
    if json_out:
        emit_fields(result, json_out=True)
    else:
        print(f"imported {result['messages']} message(s) into {result['folders']} folder(s) "
              f"of {result['mailbox']} ({result['format']}; {result['folders_created']} "
              "folder(s) created)")
