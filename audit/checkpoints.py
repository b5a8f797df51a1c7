"""Signed, chained checkpoints of the audit trail, and retention that keeps it verifiable.

A checkpoint signs, with the node's Ed25519 key (``keys/audit-signing.key``, 0600), its
sequence number, the record it covers (id and hash), the number of records in the chain up
to it (purged ones included), the hash of the previous checkpoint, and its time. Someone who
can write the database but not read the key can then neither rewrite the chain up to a
checkpoint, nor remove a checkpoint that a later one follows, without ``mss audit verify``
failing.

What the database alone cannot show is a cut tail: delete the newest checkpoints and every
record after the one before, and what is left is consistent. So each checkpoint is also
written to the journal as an ``audit.checkpoint`` record, which the shipper sends to the
audit repositories like any other; ``mss audit verify --witness FILE`` reads the checkpoints
as a repository received them (the receiver's file of DICOM messages, or JSON lines from
``mss audit export``) and reports any that is missing here or differs. The node signs one at
start, every ``audit.checkpoint_interval`` seconds when records were added, and at a clean
stop.

``purge`` deletes records older than the retention period after signing a checkpoint on the
last one deleted: verification then starts from that checkpoint's hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError, fromstring

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection, delete, func, insert, select

from audit.events import Event
from audit.journal import GENESIS, AuditRecord, append, lock_chain
from audit.verify import VerifyResult, verify_chain
from mss import db

MIN_RETENTION_DAYS = 183  # the national recommendation: traces kept six months at least
CHECKPOINT_EVENT = Event.AUDIT_CHECKPOINT
CHECKPOINT_TYPE_CODE = "MSS-AUDIT-CHECKPOINT"  # its EventTypeCode in DICOM and FHIR exports


class CheckpointError(Exception):
    """A checkpoint or purge request is refused; one-line message."""


def signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, creating it (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return loaded


def _payload_v1(record_id: int, record_hash: str, created_at: float) -> bytes:
    return f"mss-audit-checkpoint-v1|{record_id}|{record_hash}|{created_at:.6f}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint (v2: chained)."""

    seq: int
    record_id: int
    record_hash: str
    record_count: int
    prev_hash: str
    created_at: float
    signature: bytes

    def payload(self) -> bytes:
        return (f"mss-audit-checkpoint-v2|{self.seq}|{self.prev_hash}|{self.record_id}|"
                f"{self.record_hash}|{self.record_count}|{self.created_at:.6f}").encode()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.payload() + self.signature).hexdigest()

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(self.signature, self.payload())
        except InvalidSignature:
            return False
        return True

    def detail(self) -> dict[str, Any]:
        """The ``detail`` of its ``audit.checkpoint`` record (what the witnesses receive)."""
        return {"seq": self.seq, "record_id": self.record_id, "record_hash": self.record_hash,
                "record_count": self.record_count, "prev_hash": self.prev_hash,
                "created_at": f"{self.created_at:.6f}", "hash": self.hash,
                "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> Checkpoint:
        return cls(seq=int(detail["seq"]), record_id=int(detail["record_id"]),
                   record_hash=str(detail["record_hash"]),
                   record_count=int(detail["record_count"]),
                   prev_hash=str(detail["prev_hash"]),
                   created_at=float(detail["created_at"]),
                   signature=base64.b64decode(str(detail["signature"]), validate=True))

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        return cls(seq=row["seq"], record_id=row["record_id"], record_hash=row["record_hash"],
                   record_count=row["record_count"], prev_hash=row["prev_hash"],
                   created_at=row["created_at"], signature=row["signature"])


def _chained(conn: Connection) -> list[Checkpoint]:
    t = db.audit_checkpoints
    return [Checkpoint.from_row(r._mapping) for r in
            conn.execute(select(t).where(t.c.seq.is_not(None)).order_by(t.c.seq, t.c.id))]


def _base_count(conn: Connection, first_prev_hash: str | None) -> int:
    """Records before the oldest one left (purged, covered by a checkpoint), 0 if none."""
    if first_prev_hash is None or first_prev_hash == GENESIS:
        return 0
    t = db.audit_checkpoints
    count = conn.execute(select(t.c.record_count).where(
        (t.c.record_hash == first_prev_hash) & t.c.record_count.is_not(None))
        .limit(1)).scalar()
    return int(count or 0)


def _count_upto(conn: Connection, record_id: int) -> int:
    t = db.audit_log
    first = conn.execute(select(t.c.prev_hash).order_by(t.c.id).limit(1)).scalar()
    here = conn.execute(select(func.count()).select_from(t).where(t.c.id <= record_id)).scalar()
    return _base_count(conn, first) + int(here or 0)


def _nothing_new(conn: Connection, last: Checkpoint) -> bool:
    """True when the only record after *last*'s is its own audit.checkpoint record."""
    t = db.audit_log
    newest = conn.execute(select(t.c.id, t.c.event, t.c.detail).order_by(t.c.id.desc())
                          .limit(1)).first()
    if newest is None or newest.id <= last.record_id:
        return True
    if newest.event != CHECKPOINT_EVENT or not newest.detail:
        return False
    return bool(json.loads(newest.detail).get("seq") == last.seq)


def write_checkpoint(conn: Connection, key: Ed25519PrivateKey,
                     record_id: int | None = None) -> int | None:
    """Sign the newest record (or *record_id*) in a checkpoint chained to the previous one,
    and journal it as an ``audit.checkpoint`` record (shipped to the witnesses); returns the
    record id signed, None when the trail is empty. The chain's cluster lock is taken
    first: with several nodes, the newest record and the previous checkpoint read here stay
    the newest until commit (the unique ``seq`` index would refuse a second seq anyway)."""
    lock_chain(conn)
    t = db.audit_log
    stmt = select(t.c.id, t.c.hash)
    stmt = stmt.where(t.c.id == record_id) if record_id is not None \
        else stmt.order_by(t.c.id.desc()).limit(1)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    chain = _chained(conn)
    last = chain[-1] if chain else None
    if record_id is None and last is not None and _nothing_new(conn, last):
        return last.record_id
    now = time.time()
    unsigned = Checkpoint(seq=last.seq + 1 if last else 1, record_id=int(row.id),
                          record_hash=row.hash, record_count=_count_upto(conn, int(row.id)),
                          prev_hash=last.hash if last else GENESIS, created_at=now,
                          signature=b"")
    checkpoint = Checkpoint(**{**unsigned.__dict__, "signature": key.sign(unsigned.payload())})
    conn.execute(insert(db.audit_checkpoints).values(
        record_id=checkpoint.record_id, record_hash=checkpoint.record_hash, created_at=now,
        signature=checkpoint.signature, seq=checkpoint.seq,
        record_count=checkpoint.record_count, prev_hash=checkpoint.prev_hash,
        hash=checkpoint.hash))
    append(conn, [AuditRecord(CHECKPOINT_EVENT, actor="mss", detail=checkpoint.detail())])
    return checkpoint.record_id


@dataclass(frozen=True)
class FullResult:
    chain: VerifyResult
    checkpoints: int
    problem: str | None = None
    witness: str | None = None  # what the witness comparison found, when asked

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.problem is None

    @property
    def message(self) -> str:
        if self.problem:
            return self.problem
        if not self.chain.ok:
            return self.chain.message
        text = f"{self.chain.message}, {self.checkpoints} signed checkpoints valid"
        return f"{text}; {self.witness}" if self.witness else text


def _check_signatures(conn: Connection, public: Ed25519PublicKey) -> str | None:
    for r in conn.execute(select(db.audit_checkpoints).where(
            db.audit_checkpoints.c.seq.is_(None))):
        try:
            public.verify(r.signature, _payload_v1(r.record_id, r.record_hash, r.created_at))
        except InvalidSignature:
            return f"checkpoint on record {r.record_id} has a bad signature"
    for cp in _chained(conn):
        if not cp.valid(public):
            return f"checkpoint on record {cp.record_id} has a bad signature"
    return None


def _check_sequence(chain: list[Checkpoint]) -> str | None:
    """Checkpoints 1..n, each chained to the one before: none removed, none slipped in."""
    expected_seq, expected_prev = 1, GENESIS
    for cp in chain:
        if cp.seq > expected_seq:
            missing = (f"{expected_seq}" if cp.seq == expected_seq + 1
                       else f"{expected_seq} to {cp.seq - 1}")
            return (f"signed checkpoint {missing} is missing (checkpoint {cp.seq}, on record "
                    f"{cp.record_id}, follows checkpoint {expected_seq - 1})")
        if cp.seq < expected_seq or cp.prev_hash != expected_prev:
            return f"checkpoint {cp.seq} does not chain to checkpoint {cp.seq - 1}"
        expected_seq, expected_prev = cp.seq + 1, cp.hash
    return None


def _check_journal(conn: Connection, chain: list[Checkpoint], first_id: int | None,
                   first_prev_hash: str | None) -> str | None:
    """One pass over the records left: each checkpoint's record has its signed hash and its
    signed position; each audit.checkpoint record names a checkpoint that is still here."""
    by_record = {cp.record_id: cp for cp in chain
                 if first_id is not None and cp.record_id >= first_id}
    by_seq = {cp.seq: cp for cp in chain}
    t = db.audit_log
    position = _base_count(conn, first_prev_hash)
    rows = db.in_pages(conn, select(t.c.id, t.c.hash, t.c.event, t.c.detail), t.c.id)
    for row in rows:
        position += 1
        cp = by_record.pop(row.id, None)
        if cp is not None:
            if row.hash != cp.record_hash:
                return (f"the chain up to record {cp.record_id} was rewritten "
                        "(it no longer matches its signed checkpoint)")
            if position != cp.record_count:
                return (f"record {cp.record_id} is record {position} of the chain, "
                        f"checkpoint {cp.seq} signed it as record {cp.record_count}")
        if row.event == CHECKPOINT_EVENT and row.detail:
            seq = json.loads(row.detail).get("seq")
            if isinstance(seq, int) and seq not in by_seq:
                return (f"signed checkpoint {seq} is missing (record {row.id} journals it)")
    if by_record:
        cp = min(by_record.values(), key=lambda c: c.record_id)
        return f"record {cp.record_id} (signed in checkpoint {cp.seq}) was deleted"
    return None


def verify_all(conn: Connection, key: Ed25519PrivateKey,
               witnessed: Iterable[Checkpoint] | None = None) -> FullResult:
    """Signatures, the checkpoint chain, the record chain, each checkpoint against its
    record; with *witnessed* (checkpoints a repository received), each against ours."""
    public = key.public_key()
    chain = _chained(conn)
    total = int(conn.execute(select(func.count()).select_from(db.audit_checkpoints)).scalar()
                or 0)
    bad = _check_signatures(conn, public) or _check_sequence(chain)
    if bad:
        return FullResult(VerifyResult(False, 0), total, bad)
    first = conn.execute(select(db.audit_log.c.id, db.audit_log.c.prev_hash)
                         .order_by(db.audit_log.c.id).limit(1)).first()
    start = GENESIS
    if first is not None and first.prev_hash != GENESIS:
        # records were purged: the chain must resume from a signed checkpoint
        hashes = {r.record_hash for r in conn.execute(select(db.audit_checkpoints.c.record_hash))}
        if first.prev_hash not in hashes:
            return FullResult(VerifyResult(False, 0, "deleted", first.id), total,
                              f"records deleted before record {first.id} "
                              "(no signed checkpoint covers them)")
        start = first.prev_hash
    result = verify_chain(conn, start)
    if not result.ok:
        return FullResult(result, total)
    problem = _check_journal(conn, chain, first.id if first else None,
                             first.prev_hash if first else None)
    if problem:
        return FullResult(result, total, problem)
    if witnessed is None:
        return FullResult(result, total)
    witness_problem, summary = compare_witness(chain, list(witnessed), public)
    return FullResult(result, total, witness_problem, summary)


def compare_witness(chain: list[Checkpoint], witnessed: list[Checkpoint],
                    public: Ed25519PublicKey) -> tuple[str | None, str]:
    """(problem or None, summary): every checkpoint a repository received must be here,
    equal; a missing one means the tail was cut (or the checkpoints rewritten)."""
    ours = {cp.seq: cp for cp in chain}
    newest_here = max(ours, default=0)
    seen: dict[int, Checkpoint] = {}
    for cp in witnessed:
        if not cp.valid(public):
            return (f"the witness holds checkpoint {cp.seq} not signed by this node's key",
                    "")
        seen.setdefault(cp.seq, cp)
    if not seen:
        return "the witness file holds no signed checkpoint of this node", ""
    for seq in sorted(seen):
        cp = seen[seq]
        mine = ours.get(seq)
        if mine is None:
            return (f"checkpoint {seq} (on record {cp.record_id}, {cp.record_count} records), "
                    f"received by the witness, is missing here: the trail was cut after "
                    f"checkpoint {newest_here}", "")
        if mine.hash != cp.hash:
            return (f"checkpoint {seq} differs from the one the witness received: "
                    "the trail was rewritten", "")
    newest = seen[max(seen)]
    return None, (f"{len(seen)} checkpoints match the witness (newest: {newest.seq}, on "
                  f"record {newest.record_id})")


# --------------------------------------------------------------------------- witness files

def _from_dicom(xml: str) -> dict[str, Any] | None:
    try:
        root = fromstring(xml)
    except ParseError:
        return None
    codes = {e.get("csd-code") for e in root.iter("EventTypeCode")}
    if CHECKPOINT_TYPE_CODE not in codes:
        return None
    detail: dict[str, Any] = {}
    for item in root.iter("ParticipantObjectDetail"):
        try:
            detail[str(item.get("type"))] = base64.b64decode(str(item.get("value")),
                                                             validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
    return detail


def _from_json(line: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("event") == CHECKPOINT_EVENT and isinstance(doc.get("detail"), dict):
        return dict(doc["detail"])  # mss audit export --format jsonl
    if doc.get("resourceType") == "AuditEvent" and any(  # --format fhir-json
            c.get("code") == CHECKPOINT_TYPE_CODE for c in doc.get("subtype", [])):
        for entity in doc.get("entity", []):
            details = {d.get("type"): d.get("valueString") for d in entity.get("detail", [])}
            if "seq" in details:
                return details
    return None


def read_witness(text: str) -> list[Checkpoint]:
    """The checkpoints in a repository's copy of the trail: lines of RFC 5424 messages whose
    MSG is a DICOM AuditMessage (as an rsyslog file holds them), or JSON lines (jsonl or
    fhir-json exports). Lines that are no checkpoint are skipped."""
    found: list[Checkpoint] = []
    for line in text.splitlines():
        start = line.find("<AuditMessage")
        if start >= 0:
            end = line.find("</AuditMessage>", start)
            detail = _from_dicom(line[start:end + len("</AuditMessage>")]) if end > 0 else None
        elif line.lstrip().startswith("{"):
            detail = _from_json(line)
        else:
            detail = None
        if detail:
            try:
                found.append(Checkpoint.from_detail(detail))
            except (KeyError, ValueError, TypeError, binascii.Error):
                continue
    return found


# --------------------------------------------------------------------------- retention

def purge(conn: Connection, key: Ed25519PrivateKey, before_iso: str, now_iso: str,
          retention_days: int) -> dict[str, Any]:
    """Delete records older than *before_iso*, never younger than the retention period."""
    from datetime import datetime, timedelta

    now = datetime.fromisoformat(now_iso.replace("Z", "+00:00"))
    cutoff = datetime.fromisoformat(before_iso.replace("Z", "+00:00"))
    floor = now - timedelta(days=max(retention_days, MIN_RETENTION_DAYS))
    lock_chain(conn)  # the records counted and deleted are those the checkpoint signs
    if cutoff > floor:
        raise CheckpointError(
            f"refused: records younger than {max(retention_days, MIN_RETENTION_DAYS)} days "
            f"are kept (purge before {floor.strftime('%Y-%m-%d')} at the latest)")
    t = db.audit_log
    last = conn.execute(select(func.max(t.c.id)).where(t.c.ts < before_iso)).scalar()
    if last is None:
        return {"deleted": 0, "checkpoint": None}
    write_checkpoint(conn, key, int(last))
    deleted = conn.execute(delete(t).where(t.c.id <= last)).rowcount
    return {"deleted": deleted, "checkpoint": int(last)}
