"""Signed checkpoints of the audit chain, and retention that keeps it verifiable.

A checkpoint signs (record id, record hash, time) with the node's Ed25519 key
(``keys/audit-signing.key``, 0600). Someone who can write the database but not read the key
cannot rewrite the chain up to a checkpoint without the signature check failing, nor cut
its tail below the newest checkpoint unnoticed. ``purge`` deletes records older than the
retention period after signing a checkpoint on the last one deleted: verification then
starts from that checkpoint's hash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, delete, func, insert, select

from audit.journal import GENESIS
from audit.verify import VerifyResult, verify_chain
from mss import db

MIN_RETENTION_DAYS = 183  # the national recommendation: traces kept six months at least


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


def _payload(record_id: int, record_hash: str, created_at: float) -> bytes:
    return f"mss-audit-checkpoint-v1|{record_id}|{record_hash}|{created_at:.6f}".encode()


def write_checkpoint(conn: Connection, key: Ed25519PrivateKey,
                     record_id: int | None = None) -> int | None:
    """Sign the newest record (or *record_id*); returns its id, None when the trail is empty."""
    t = db.audit_log
    stmt = select(t.c.id, t.c.hash)
    stmt = stmt.where(t.c.id == record_id) if record_id is not None \
        else stmt.order_by(t.c.id.desc()).limit(1)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    if record_id is None:
        last = conn.execute(select(func.max(db.audit_checkpoints.c.record_id))).scalar()
        if last is not None and last >= row.id:
            return int(last)  # nothing new since the last checkpoint
    now = time.time()
    conn.execute(insert(db.audit_checkpoints).values(
        record_id=row.id, record_hash=row.hash, created_at=now,
        signature=key.sign(_payload(row.id, row.hash, now))))
    return int(row.id)


@dataclass(frozen=True)
class FullResult:
    chain: VerifyResult
    checkpoints: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.problem is None

    @property
    def message(self) -> str:
        if self.problem:
            return self.problem
        if not self.chain.ok:
            return self.chain.message
        return f"{self.chain.message}, {self.checkpoints} signed checkpoints valid"


def verify_all(conn: Connection, key: Ed25519PrivateKey) -> FullResult:
    public = key.public_key()
    checkpoints = [dict(r._mapping) for r in conn.execute(
        select(db.audit_checkpoints).order_by(db.audit_checkpoints.c.record_id))]
    for cp in checkpoints:
        try:
            public.verify(cp["signature"], _payload(cp["record_id"], cp["record_hash"],
                                                    cp["created_at"]))
        except InvalidSignature:
            return FullResult(VerifyResult(False, 0), len(checkpoints),
                              f"checkpoint on record {cp['record_id']} has a bad signature")
    first = conn.execute(select(db.audit_log.c.id, db.audit_log.c.prev_hash)
                         .order_by(db.audit_log.c.id).limit(1)).first()
    start = GENESIS
    if first is not None and first.prev_hash != GENESIS:
        # records were purged: the chain must resume from a signed checkpoint
        boundary = [cp for cp in checkpoints if cp["record_hash"] == first.prev_hash]
        if not boundary:
            return FullResult(VerifyResult(False, 0, "deleted", first.id), len(checkpoints),
                              f"records deleted before record {first.id} "
                              "(no signed checkpoint covers them)")
        start = first.prev_hash
    chain = verify_chain(conn, start)
    if not chain.ok:
        return FullResult(chain, len(checkpoints))
    for cp in checkpoints:
        purged = first is not None and cp["record_id"] < first.id
        if purged:
            continue
        signed = conn.execute(select(db.audit_log.c.hash)
                              .where(db.audit_log.c.id == cp["record_id"])).scalar()
        if signed is None:
            return FullResult(chain, len(checkpoints),
                              f"record {cp['record_id']} (signed in a checkpoint) was deleted")
        if signed != cp["record_hash"]:
            return FullResult(chain, len(checkpoints),
                              f"the chain up to record {cp['record_id']} was rewritten "
                              "(it no longer matches its signed checkpoint)")
    return FullResult(chain, len(checkpoints))


def purge(conn: Connection, key: Ed25519PrivateKey, before_iso: str, now_iso: str,
          retention_days: int) -> dict[str, Any]:
    """Delete records older than *before_iso*, never younger than the retention period."""
    from datetime import datetime, timedelta

    now = datetime.fromisoformat(now_iso.replace("Z", "+00:00"))
    cutoff = datetime.fromisoformat(before_iso.replace("Z", "+00:00"))
    floor = now - timedelta(days=max(retention_days, MIN_RETENTION_DAYS))
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
