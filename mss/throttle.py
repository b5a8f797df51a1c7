"""Login throttling shared by IMAP and SMTP AUTH (submission and relay listeners).

After ``failures`` failed logins within ``window`` seconds for one user name, or for one
client address, further logins of that user or from that address are refused without a
password check for ``lockout`` seconds, and audited. Per serving process (with several
workers a client gets that many budgets).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


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
