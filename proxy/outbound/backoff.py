"""When to try a deferred row again: exponential backoff with jitter."""

from __future__ import annotations

import random

from mss.config import DeliveryConfig


def retry_delay(attempts: int, cfg: DeliveryConfig, rng: random.Random | None = None) -> float:
    """Seconds to wait after the *attempts*-th failed attempt (1-based): retry_base times
    retry_factor^(attempts-1), capped at retry_max, then +/- jitter at random (so rows
    deferred together by one outage do not all come back in the same second)."""
    wait = min(cfg.retry_base * cfg.retry_factor ** max(attempts - 1, 0), cfg.retry_max)
    spread = wait * cfg.jitter
    return max(0.0, wait + (rng or random).uniform(-spread, spread))


def gives_up(attempts: int, created_at: float, next_at: float, cfg: DeliveryConfig) -> bool:
    """True when no attempt is left: *attempts* used up or the next one beyond max_age."""
    return attempts >= cfg.max_attempts or next_at - created_at > cfg.max_age
