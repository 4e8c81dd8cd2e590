"""Budgets: posts per day and month, reads per month, counted in Redis before each X call.

X bills per use and caps each plan, so the bot must never make a call the operator did not
budget for, even with several processes (a daemon, its standby, a CLI command) sharing an
account. One Lua script checks every cap that applies and counts the call in the same step,
so two processes can never both take the last unit. A spent budget means the call is not
made: the caller logs it and moves on.

Reads are reserved before the call at the most a page can return, then the unused part is
given back once the answer says how many posts came (X bills per post read). A reservation
whose process dies before settling stays counted: the budget errs on the safe side.

Periods are UTC days and months. Each counter expires a little after its period ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import redis
import structlog

from bot.config import XBudgetsConfig, XPricesConfig
from bot.keys import Keys
from bot.platform.base import BudgetExhausted

log = structlog.get_logger(__name__)

MICRO = 1_000_000  # spend is kept in micro-dollars: integers add exactly
_DAY_TTL = 3 * 24 * 3600
_MONTH_TTL = 35 * 24 * 3600
_NO_CAP = -1


class Spend(StrEnum):
    """What a call is billed as: each value names its price in `XPricesConfig`."""

    POST = "post"
    POST_WITH_URL = "post_with_url"
    REPLY = "reply"
    READ = "read"  # another account's posts (a target's timeline)
    OWN_READ = "own_read"  # the bot's own posts or its mentions
    USER_READ = "user_read"  # a user lookup

    @property
    def is_read(self) -> bool:
        return self in _READS


_READS = frozenset({Spend.READ, Spend.OWN_READ, Spend.USER_READ})


# KEYS: the counters to check and bump (1 to 2), then the day's spend hash.
# ARGV: amount wanted, minimum acceptable, spend field, micro-dollars per unit, then one
# (cap, ttl) pair per counter. Grants min(wanted, what every cap still allows), or 0 when that
# is below the minimum; counts the grant everywhere in the same step.
_RESERVE = """
local wanted = tonumber(ARGV[1])
local minimum = tonumber(ARGV[2])
local counters = #KEYS - 1
local grant = wanted
for i = 1, counters do
  local cap = tonumber(ARGV[3 + 2 * i])
  if cap >= 0 then
    local left = cap - tonumber(redis.call('GET', KEYS[i]) or '0')
    if left < grant then grant = left end
  end
end
if grant < minimum or grant <= 0 then return 0 end
for i = 1, counters do
  redis.call('INCRBY', KEYS[i], grant)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 + 2 * i]))
end
redis.call('HINCRBY', KEYS[#KEYS], ARGV[3], grant)
redis.call('HINCRBY', KEYS[#KEYS], 'micro_usd', grant * tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[#KEYS], 'micro_usd:' .. ARGV[3], grant * tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[#KEYS], 40 * 24 * 3600)
return grant
"""

# Give back units that were reserved but not used (a read that returned fewer posts, a
# write that X refused). Counters never go below zero.
_REFUND = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  local now = tonumber(redis.call('GET', KEYS[i]) or '0')
  if now > 0 then redis.call('DECRBY', KEYS[i], math.min(amount, now)) end
end
redis.call('HINCRBY', KEYS[#KEYS], ARGV[2], -amount)
redis.call('HINCRBY', KEYS[#KEYS], 'micro_usd', -amount * tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[#KEYS], 'micro_usd:' .. ARGV[2], -amount * tonumber(ARGV[3]))
return 1
"""


@dataclass(frozen=True)
class _Counter:
    name: str  # the config field that caps it
    key: str
    cap: int | None
    ttl: int


@dataclass(frozen=True)
class Reservation:
    kind: Spend
    amount: int
    day: str
    month: str


class Budgets:
    """Checked-and-counted spending for one account (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        limits: XBudgetsConfig,
        prices: XPricesConfig,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.limits = limits
        self.prices = prices

    def reserve(self, kind: Spend, wanted: int = 1, *, minimum: int | None = None) -> Reservation:
        """Count up to `wanted` units now, or raise BudgetExhausted without counting anything.

        Writes are all-or-nothing (`minimum` = `wanted`); a read may take less than it asked
        for (`minimum` = the smallest page X serves), and the caller asks for that many.
        """
        minimum = wanted if minimum is None else minimum
        day, month = _periods()
        counters = self._counters(kind, day, month)
        keys = [counter.key for counter in counters] + [self.keys.spend(day)]
        args: list[int | str] = [wanted, minimum, str(kind), self._micro(kind)]
        for counter in counters:
            args += [_NO_CAP if counter.cap is None else counter.cap, counter.ttl]
        granted = int(self.redis.eval(_RESERVE, len(keys), *keys, *args))
        if granted <= 0:
            caps = {counter.name: counter.cap for counter in counters}
            log.warning("budget.spent", kind=str(kind), wanted=wanted, caps=caps)
            raise BudgetExhausted(f"the {kind} budget is spent for now ({caps})")
        return Reservation(kind=kind, amount=granted, day=day, month=month)

    def refund(self, reservation: Reservation, amount: int | None = None) -> None:
        """Give back `amount` units of a reservation (all of it by default)."""
        amount = reservation.amount if amount is None else min(amount, reservation.amount)
        if amount <= 0:
            return
        counters = self._counters(reservation.kind, reservation.day, reservation.month)
        keys = [counter.key for counter in counters] + [self.keys.spend(reservation.day)]
        self.redis.eval(
            _REFUND, len(keys), *keys, amount, str(reservation.kind), self._micro(reservation.kind)
        )

    def writes_left_today(self) -> int | None:
        """Posts and replies still allowed today (None: no cap), for skipping work early."""
        day, month = _periods()
        lefts = [
            counter.cap - int(self.redis.get(counter.key) or 0)
            for counter in self._counters(Spend.POST, day, month)
            if counter.cap is not None
        ]
        return max(0, min(lefts)) if lefts else None

    def remaining(self) -> dict[str, int]:
        """What each capped counter still allows in its current period, by config field name."""
        day, month = _periods()
        counters = [
            counter
            for kind in (Spend.POST, Spend.READ)
            for counter in self._counters(kind, day, month)
            if counter.cap is not None
        ]
        used = self.redis.mget([counter.key for counter in counters]) if counters else []
        return {
            counter.name: max(0, counter.cap - int(value or 0))
            for counter, value in zip(counters, used, strict=True)
            if counter.cap is not None
        }

    def spend_today(self) -> dict[str, float]:
        """Calls (units) per kind and the estimated dollars for the current UTC day."""
        day, _month = _periods()
        raw = self.redis.hgetall(self.keys.spend(day))
        report: dict[str, float] = {str(kind): float(raw.get(str(kind), 0)) for kind in Spend}
        report["usd"] = int(raw.get("micro_usd", 0)) / MICRO
        return report

    def usd_by_kind(self, *, month: bool = False) -> dict[str, float]:
        """Estimated dollars per kind of call, today or since the first of the month (a day
        counted before the spend was kept by kind shows only in the totals)."""
        pipe = self.redis.pipeline(transaction=False)
        for each in _days_of(month):
            pipe.hgetall(self.keys.spend(each))
        totals = dict.fromkeys(map(str, Spend), 0)
        for raw in pipe.execute():
            for kind in totals:
                totals[kind] += int(raw.get(f"micro_usd:{kind}", 0))
        return {kind: micro / MICRO for kind, micro in totals.items()}

    def spend_this_month(self) -> float:
        """Estimated dollars since the first of the current UTC month."""
        pipe = self.redis.pipeline(transaction=False)
        for each in _days_of(True):
            pipe.hget(self.keys.spend(each), "micro_usd")
        return sum(int(value or 0) for value in pipe.execute()) / MICRO

    def _counters(self, kind: Spend, day: str, month: str) -> list[_Counter]:
        limits, keys = self.limits, self.keys
        if kind.is_read:  # every read counts against the one reads cap
            return [
                _Counter("reads_per_month", keys.budget("reads", f"month:{month}"),
                         limits.reads_per_month, _MONTH_TTL),
            ]  # fmt: skip
        return [
            _Counter("posts_per_day", keys.budget("posts", f"day:{day}"),
                     limits.posts_per_day, _DAY_TTL),
            _Counter("posts_per_month", keys.budget("posts", f"month:{month}"),
                     limits.posts_per_month, _MONTH_TTL),
        ]  # fmt: skip

    def _micro(self, kind: Spend) -> int:
        return round(getattr(self.prices, str(kind)) * MICRO)


def _days_of(month: bool) -> list[str]:
    """Today, or every day of the current UTC month up to today, as spend-hash days."""
    day, this_month = _periods()
    if not month:
        return [day]
    return [f"{this_month}{d:02d}" for d in range(1, int(day[-2:]) + 1)]


def _periods(now: float | None = None) -> tuple[str, str]:
    moment = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%d", moment), time.strftime("%Y%m", moment)
