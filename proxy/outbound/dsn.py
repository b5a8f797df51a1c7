"""Delivery status notifications of the queue (RFC 3464): the builder lives in the core
(:mod:`mss.dsn`, shared with the SMTP listeners' ``delivered`` reports); re-exported here
for the queue's modules."""

from __future__ import annotations

from mss.dsn import build_dsn, build_report, is_report

__all__ = ["build_dsn", "build_report", "is_report"]
