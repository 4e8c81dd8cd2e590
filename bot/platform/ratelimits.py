"""Rate limits: after a 429 (or a response saying none are left) no call until the reset.

The reset time lives in Redis, so a restarted daemon, its standby and a CLI command all wait
for it too: X counts calls per account, not per process. A reset close at hand is slept out;
a later one makes the call fail fast with `RateLimited`, and the job tries again on its next
run (a scheduler thread should not sleep for 15 minutes).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis
import structlog

from bot.keys import Keys
from bot.platform.base import RateLimited

log = structlog.get_logger(__name__)

# A 429 without an x-rate-limit-reset header (X always sends one) waits this long.
DEFAULT_WAIT_SECONDS = 60.0
# How long after its reset a record lingers before Redis drops it.
_LINGER_MS = 60_000

# Keep the later of two resets: a stale writer must never shorten a wait.
_RECORD = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local reset = tonumber(ARGV[1])
if reset > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 1
end
return 0
"""


class RateLimitGate:
    def __init__(self, client: redis.Redis, keys: Keys, *, max_sleep_seconds: float) -> None:
        self.redis = client
        self.keys = keys
        self.max_sleep_seconds = max_sleep_seconds

    def reset_at(self, endpoint: str) -> float | None:
        value = self.redis.get(self.keys.rate_limit(endpoint))
        return float(value) if value else None

    def check(self, endpoint: str) -> None:
        """Return once `endpoint` may be called: at once, after a short sleep, or never (raise)."""
        reset = self.reset_at(endpoint)
        if reset is None or reset <= time.time():
            return
        wait = reset - time.time()
        if wait > self.max_sleep_seconds:
            raise RateLimited(
                f"{endpoint} is rate limited until {_iso(reset)} ({wait:.0f} s)", reset_at=reset
            )
        log.info("x.rate_limit_wait", endpoint=endpoint, seconds=round(wait, 3))
        while (left := reset - time.time()) > 0:
            time.sleep(left)

    def record(self, endpoint: str, reset_at: float, *, status: int) -> None:
        """Remember that `endpoint` may not be called before `reset_at` (epoch seconds)."""
        expire_ms = int(reset_at * 1000) + _LINGER_MS
        self.redis.eval(_RECORD, 1, self.keys.rate_limit(endpoint), repr(reset_at), expire_ms)
        log.warning(
            "x.rate_limited",
            endpoint=endpoint,
            status=status,
            reset_at=_iso(reset_at),
            seconds=round(max(0.0, reset_at - time.time()), 3),
        )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
