"""One poster per account: a renewed Redis lease elects the daemon that may post.

A second daemon for the same account keeps trying to acquire and takes over once the
holder stops renewing (it died, or it lost Redis for longer than the lease).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Replace the lease only while it still holds the dead daemon's token; returns the
# milliseconds that lease had left (what the takeover saved), or -1 when it was not replaced.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local remaining = math.max(redis.call('PTTL', KEYS[1]), 0)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return remaining
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_ms: int) -> None:
        self._redis = client
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or we already do)."""
        if self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease; False means someone else holds it now."""
        return bool(self._redis.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    def release(self) -> None:
        """Give the lease up at once so a standby daemon need not wait out the TTL."""
        self._redis.eval(_RELEASE, 1, self.key, self.owner)

    def take_over_from(self, dead_owner: str) -> int | None:
        """Take the lease at once from a daemon known to be dead (see `bot.instance_lock`).

        One script compares and sets, so a lease that lapsed and went to a live standby
        meanwhile is left alone. Returns the milliseconds the dead lease still had, or
        None when the lease did not hold `dead_owner` (nothing was changed).
        """
        remaining = int(
            self._redis.eval(_TAKE_OVER, 1, self.key, dead_owner, self.owner, self.ttl_ms)
        )
        return None if remaining < 0 else remaining

    def holder(self) -> str | None:
        return self._redis.get(self.key)

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.owner)


@dataclass(frozen=True)
class Fence:
    """The poster lease's key and this daemon's token, carried by every write that may post.

    A daemon can lose its lease while a job is in flight (a long pause, a partition). A
    record of a post or reply intent written through a script that starts with
    `FENCE_CHECK` succeeds only while the lease still holds this token, so a daemon that
    was replaced can no longer claim anything to post.
    """

    key: str
    token: str


# The first lines of every Lua script that records an intent to post. KEYS[1] is the lease
# key and ARGV[1] the token; an empty token (no daemon: the CLI, tests) skips the check.
FENCE_CHECK = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
"""


def fence_args(fence: Fence | None, lease_key: str) -> tuple[str, str]:
    """The (KEYS[1], ARGV[1]) pair for `FENCE_CHECK`; no fence means no check."""
    return (fence.key, fence.token) if fence is not None else (lease_key, "")
