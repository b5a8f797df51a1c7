"""Why a token was not accepted: the reason is precise and private (the audit's), the
class says what the client is told (a permanent or a temporary failure)."""

from __future__ import annotations


class TokenError(Exception):
    """A token not accepted; *reason* is for the audit only (never the token itself)."""

    def __init__(self, reason: str, issuer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer = issuer  # the [[auth.oidc]] name, when known


class TokenRejected(TokenError):
    """Permanent: expired, not yet valid, bad signature, wrong audience or issuer, acr
    missing, unknown issuer or key, inactive (RFC 7628 §3.2.2 "invalid_token")."""


class TokenUnavailable(TokenError):
    """Temporary: the issuer cannot be reached and no cached key or answer may be used;
    never an acceptance (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE])."""
