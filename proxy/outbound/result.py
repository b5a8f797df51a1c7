"""What one delivery attempt ended with."""

from __future__ import annotations

from dataclasses import dataclass


class DeliveryFailure(Exception):
    """An attempt failed; *permanent* (5xx, null MX, no such domain) bounces the row, else
    it is deferred and retried. *reply* is the remote reply when there was one."""

    def __init__(self, reason: str, *, permanent: bool, reply: str | None = None,
                 host: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.reply = reply
        self.host = host

    @property
    def status(self) -> str:
        """RFC 3463 enhanced status code for a DSN: from the reply when it has one."""
        if self.reply:
            parts = self.reply.split(" ", 2)
            if len(parts) > 1 and parts[1][:1] in "245" and parts[1].count(".") == 2:
                return parts[1]
        return "5.0.0" if self.permanent else "4.0.0"


@dataclass(frozen=True)
class Delivered:
    host: str  # "name[address]:port" of the peer that answered 250
    reply: str  # its reply to the end of DATA, e.g. "250 2.0.0 OK queued as ..."
    peer_dn: str | None = None  # RFC 4514 subject DN of the certificate it presented
    dsn: bool = False  # the peer offered DSN (RFC 3461): the DSN parameters went on to it
