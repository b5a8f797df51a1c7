"""Who a strong login is, in mailboxes: a person's national identifier (a token's claim) and
a client certificate's subject DN (SASL EXTERNAL).

- **National id** (Pro Santé Connect ``idNat``): ``"8" + RPPS`` names the professional
  whose PER mailboxes carry that RPPS; the person may use those and the ORG/APP mailboxes
  granted to them (``mss mailbox grant``). Other idNat forms (ADELI "0...", staff ids)
  name no mailbox here.
- **Certificate**: an APP mailbox is bound to one or more subject DNs (``mss mailbox add
  --type APP --cert FILE|--cert-dn DN``, ``mss mailbox cert add``); a DN is bound to one
  mailbox at most. DNs are compared parsed: the caller gives the canonical key
  (``trustspace.dn``, computed by the runtime and the CLI: the mail store knows no DN
  grammar) and the text kept for display.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError

from mss import db
from mss.mailstore.errors import StoreError
from mss.mailstore.mailboxes import Mailbox, mailbox_of, require_mailbox, select_mailboxes

_RPPS_ID = re.compile(r"8(\d{11})")
C = db.mailbox_certificates


@dataclass(frozen=True)
class CertificateBinding:
    mailbox: str  # the APP mailbox's address
    cert_dn: str  # as registered (RFC 4514)
    created_at: float


def rpps_of(national_id: str) -> str | None:
    """The RPPS of an idNat ``8`` + 11 digits, else None."""
    found = _RPPS_ID.fullmatch(national_id.strip())
    return found.group(1) if found else None


_M, _G = db.mailboxes, db.mailbox_grants
_OWN = _M.alias("own")  # the person's PER mailboxes, through which grants reach them
# One statement built once (SQLAlchemy caches its compiled form), one round trip a login:
# the enabled PER mailboxes of the RPPS, and the enabled mailboxes granted to one of them.
_OF_RPPS = select_mailboxes().where(and_(_M.c.enabled.is_(True), or_(
    and_(_M.c.type == "PER", _M.c.rpps == bindparam("rpps")),
    _M.c.id.in_(select(_G.c.mailbox_id).join(_OWN, _OWN.c.id == _G.c.grantee_id).where(
        and_(_OWN.c.rpps == bindparam("rpps"), _OWN.c.type == "PER",
             _OWN.c.enabled.is_(True))))))).order_by(_M.c.address)
_OF_DN = select_mailboxes().join(C, C.c.mailbox_id == _M.c.id) \
    .where(C.c.dn_key == bindparam("dn"))


def mailboxes_of_national_id(conn: Connection, national_id: str) -> list[Mailbox]:
    """The enabled mailboxes the person may log in to: their PER mailboxes (by RPPS), then
    the ORG/APP mailboxes granted to any of them; by address, each once."""
    rpps = rpps_of(national_id)
    if rpps is None:
        return []
    found = [m for m in (mailbox_of(r) for r in conn.execute(_OF_RPPS, {"rpps": rpps}))
             if m.usable]  # suspended or being deleted: no login (issue 16)
    own = [m for m in found if m.type == "PER" and m.rpps == rpps]
    return [*own, *(m for m in found if m not in own)] if own else []


def grantee_of(conn: Connection, national_id: str, mailbox_id: int) -> Mailbox | None:
    """The person's usable PER mailbox through whose grant a token login reached the
    shared mailbox *mailbox_id* (one holding the send right first, then by address); None
    when it is not reached through a grant of theirs. The transmitter of what that login
    sends, named in ``Sender:`` (mss.mailstore.grants)."""
    rpps = rpps_of(national_id)
    if rpps is None:
        return None
    rows = conn.execute(select(_M).join(_G, _G.c.grantee_id == _M.c.id).where(and_(
        _G.c.mailbox_id == mailbox_id, _M.c.type == "PER", _M.c.rpps == rpps))
        .order_by(_G.c.can_send.desc(), _M.c.address))
    return next((m for m in map(mailbox_of, rows) if m.usable), None)


def mailbox_of_certificate(conn: Connection, dn_key: str) -> Mailbox | None:
    """The mailbox bound to the canonical DN *dn_key* (enabled or not: the caller says
    why it refuses), or None."""
    row = conn.execute(_OF_DN, {"dn": dn_key}).first()
    return mailbox_of(row) if row else None


def bind_certificate(conn: Connection, address: str, cert_dn: str, dn_key: str) -> Mailbox:
    """Bind the subject DN to the APP mailbox *address*."""
    mailbox = require_mailbox(conn, address)
    if mailbox.type != "APP":
        raise StoreError(f"mailbox {mailbox.address} is {mailbox.type}: only APP mailboxes "
                         "log in with a certificate")
    holder = mailbox_of_certificate(conn, dn_key)
    if holder is not None:
        raise StoreError(f"certificate DN {cert_dn} is already bound to {holder.address}")
    try:
        with conn.begin_nested():
            conn.execute(insert(C).values(mailbox_id=mailbox.id, cert_dn=cert_dn,
                                          dn_key=dn_key, created_at=time.time()))
    except IntegrityError:  # bound meanwhile by another command
        raise StoreError(f"certificate DN {cert_dn} is already bound") from None
    return mailbox


def unbind_certificate(conn: Connection, address: str, dn_key: str) -> Mailbox:
    mailbox = require_mailbox(conn, address)
    done = conn.execute(delete(C).where(and_(C.c.mailbox_id == mailbox.id,
                                             C.c.dn_key == dn_key))).rowcount
    if not done:
        raise StoreError(f"no such certificate DN bound to {mailbox.address}")
    return mailbox


def certificates_of(conn: Connection, address: str | None = None) -> list[CertificateBinding]:
    """The bindings of one mailbox, or of every mailbox; by address then DN."""
    query = select(db.mailboxes.c.address, C.c.cert_dn, C.c.created_at).join(
        C, C.c.mailbox_id == db.mailboxes.c.id)
    if address is not None:
        query = query.where(db.mailboxes.c.id == require_mailbox(conn, address).id)
    rows = conn.execute(query.order_by(db.mailboxes.c.address, C.c.cert_dn))
    return [CertificateBinding(r.address, r.cert_dn, r.created_at) for r in rows]
