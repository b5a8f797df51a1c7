"""Refusals of mail store operations."""

from __future__ import annotations

from mss.committer import Refusal


class StoreError(ValueError):
    """Bad input to a store operation; the message is one line naming what is wrong."""


class BackendError(Refusal):
    """A refused store operation; *code* is the IMAP response code (without brackets)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.code = code


class HoldError(BackendError):
    """Refused because the mailbox is under legal hold (:mod:`mss.mailstore.holds`)."""
