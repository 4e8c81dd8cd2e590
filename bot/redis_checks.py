"""Start-up checks of the Redis the bot keeps its state in: can it lose or evict that state?

All of the bot's memory is in Redis: which mentions were answered, each post slot's intent,
the lease, the budgets. A Redis without the append-only file loses the writes since its last
snapshot when it restarts; one whose `maxmemory-policy` evicts deletes keys under memory
pressure (`volatile-*` ones delete keys with a TTL, and the lease and rate-limit keys have
one). Either way the bot can answer a mention twice or post a slot twice. The daemon reads
`INFO persistence` and `CONFIG GET maxmemory-policy` once at start and warns, naming the
risk; `redis.require_durable: true` refuses to start instead. Managed Redis services and
ACLs often refuse `CONFIG`: then the log says what could not be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
import structlog

log = structlog.get_logger(__name__)

SAFE_POLICY = "noeviction"
RISK_AOF_OFF = (
    "AOF is off (appendonly no): a Redis restart or crash loses every write since the last "
    "snapshot (replied-to mentions, post intents), and the bot may reply or post twice"
)
RISK_EVICTION = (
    "maxmemory-policy {policy} lets Redis delete keys under memory pressure ({which}), "
    "losing reply records, post intents, the lease or the budgets; use noeviction"
)


@dataclass(frozen=True)
class Durability:
    """What the server said, the risks it implies, and what it would not tell."""

    aof_enabled: bool | None = None
    maxmemory_policy: str | None = None
    risks: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        return not self.risks and not self.unchecked


def inspect_durability(client: redis.Redis) -> Durability:
    """Read the server's persistence and eviction settings; never raises for a refusal."""
    risks: list[str] = []
    unchecked: list[str] = []
    aof = _aof_enabled(client, unchecked)
    if aof is False:
        risks.append(RISK_AOF_OFF)
    policy = _maxmemory_policy(client, unchecked)
    if policy is not None and policy != SAFE_POLICY:
        which = "any key" if policy.startswith("allkeys") else "keys with a TTL, such as the lease"
        risks.append(RISK_EVICTION.format(policy=policy, which=which))
    return Durability(aof, policy, risks, unchecked)


def _aof_enabled(client: redis.Redis, unchecked: list[str]) -> bool | None:
    try:
        info = client.info("persistence")
    except redis.RedisError as exc:  # NOPERM, a renamed command, no answer
        unchecked.append(f"INFO persistence: {exc}")
        return None
    if "aof_enabled" not in info:
        unchecked.append("INFO persistence: the server does not report aof_enabled")
        return None
    return str(info["aof_enabled"]) == "1"


def _maxmemory_policy(client: redis.Redis, unchecked: list[str]) -> str | None:
    try:
        answer = client.config_get("maxmemory-policy")
    except redis.RedisError as exc:
        unchecked.append(f"CONFIG GET maxmemory-policy: {exc}")
        return None
    policy = _text(answer.get("maxmemory-policy") or answer.get(b"maxmemory-policy"))
    if not policy:  # some managed services answer CONFIG GET with nothing
        unchecked.append("CONFIG GET maxmemory-policy: the server did not say")
        return None
    return policy


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def check_redis_durability(client: redis.Redis, *, require_durable: bool) -> bool:
    """Log what the server risks; False when `require_durable` and it is not shown durable.

    Called once, right after connecting: the daemon exits with status 2 on False.
    """
    found = inspect_durability(client)
    for reason in found.unchecked:
        log.warning("redis.durability_unchecked", reason=reason)
    for risk in found.risks:
        log.warning("redis.durability_risk", risk=risk)
    if found.durable:
        log.info(
            "redis.durability_checked", aof_enabled=True, maxmemory_policy=found.maxmemory_policy
        )
        return True
    if not require_durable:
        return True
    log.error(
        "redis.not_durable",
        error="redis.require_durable is true and this Redis "
        + ("may lose or evict the bot's state" if found.risks else "could not be checked")
        + ": refusing to start (set appendonly yes and maxmemory-policy noeviction, allow "
        "INFO and CONFIG GET, or set redis.require_durable: false)",
        risks=found.risks,
        unchecked=found.unchecked,
    )
    return False
