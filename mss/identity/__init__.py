"""Identity service: who a bearer token says its holder is (OpenID Connect, OAuth 2.0).

Knows issuers, keys and tokens, nothing of mailboxes: :mod:`mss.identity.tokens` checks an
access token (a JWT against the issuer's JWKS, or an opaque token by RFC 7662
introspection) and returns a :class:`~mss.identity.tokens.TokenIdentity`; the runtime's
authenticator maps its national identifier to mailboxes. Every request to an issuer goes
over verified TLS, bounded in time and size (:mod:`mss.identity.fetch`).
"""
