"""Why a token was not accepted: the reason is precise and private (the audit's), the
class says what the client is told (a permanent or a temporary failure)."""

from __future__ import annotations


class TokenError(Exception):
    """A token not accepted; *reason* is for the audit only (never the token itself)."""

    def __init__(self, reason: str, issuer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer = issuer  # the [[auth.oidc]] name, when known
        self.token_tail: str | None = None  # an opaque token's last <= 32 characters

    def audit_detail(self) -> dict[str, str]:
        """The refusal's audit fields (the reason never quotes the token)."""
        detail = {"reason": self.reason}
        if self.issuer:
            detail["issuer"] = self.issuer
        if self.token_tail:
            detail["token_tail"] = self.token_tail
        return detail


class TokenRejected(TokenError):
    """Permanent: expired, not yet valid, bad signature, wrong audience or issuer, acr
    missing, unknown issuer or key, inactive (RFC 7628 §3.2.2 "invalid_token")."""


class TokenUnavailable(TokenError):
    """Temporary: the issuer cannot be reached and no cached key or answer may be used;
    never an acceptance (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE])."""
