"""IMAP authentication: scrypt password check (as SMTP submission) and login throttling.

After ``failures`` failed logins within ``window`` seconds for one user name, or for one
client address, further logins of that user or from that address are refused without a
password check for ``lockout`` seconds (answered ``NO [UNAVAILABLE]`` and audited).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from sqlalchemy import Connection

from mss import store
from mss.passwords import verify_password


@dataclass
class Throttle:
    failures: int = 5
    window: float = 900.0
    lockout: float = 300.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)

    def _keys(self, user: str, address: str) -> tuple[str, str]:
        return f"user:{user.lower()}", f"addr:{address}"

    def blocked(self, user: str, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        for key in self._keys(user, address):
            until = self._locked.get(key)
            if until is not None:
                if until > now:
                    return True
                del self._locked[key]
        return False

    def failed(self, user: str, address: str, now: float | None = None) -> bool:
        """Count a failure; True when it locked the user or the address."""
        now = time.monotonic() if now is None else now
        locked = False
        for key in self._keys(user, address):
            seen = self._seen.setdefault(key, deque())
            seen.append(now)
            while seen and seen[0] < now - self.window:
                seen.popleft()
            if len(seen) >= self.failures:
                self._locked[key] = now + self.lockout
                seen.clear()
                locked = True
        if len(self._seen) > 100_000:  # bounded memory under a spray of names
            self._seen.clear()
        return locked

    def succeeded(self, user: str, address: str) -> None:
        self._seen.pop(f"user:{user.lower()}", None)


def check_login(conn: Connection, login: str, password: str) -> tuple[store.Mailbox | None, str]:
    """(mailbox, reason): the mailbox when the password is right and it is enabled."""
    try:
        address = store.normalize_address(login)
    except store.StoreError:
        address = None
    mailbox = store.get_mailbox(conn, address) if address else None
    ok = verify_password(password, mailbox.password_hash if mailbox else None)
    if mailbox is None:
        return None, "unknown user"
    if not ok:
        return None, "wrong password" if mailbox.password_hash else "mailbox has no password"
    if not mailbox.enabled:
        return None, "mailbox disabled"
    return mailbox, "authenticated"
