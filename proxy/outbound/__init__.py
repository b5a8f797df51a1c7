"""Outbound delivery (docs/trust-space.md "Outbound delivery"): the worker that drains the
encrypted queue to peer operators' MX hosts and to per-domain next hops, over mutual TLS.

One job per module: :mod:`claims` (leased row claims and results, SQL), :mod:`backoff`
(when to try again), :mod:`mx` (where to send, dnspython), :mod:`client` (one SMTP
transaction with aiosmtplib, STARTTLS required), :mod:`dsn` (RFC 3464 reports),
:mod:`worker` (the loop in ``mss serve``), :mod:`cli` (``mss queue``).
"""
