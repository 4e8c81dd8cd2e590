"""Every Redis key infra/ uses (the retrain queue and its job records), built in one place.

infra/ may not import bot/ (layers: bot → infra → training), so its keys cannot live in
bot/keys.py. They follow the same template (`parrotbot:<account>:<part>:…`) under one segment
of their own, `retrain`, which no key in bot/keys.py uses; tests check that the two sets of
templates share the prefix and never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "parrotbot"
# The consumer group every launcher of an account reads the retrain stream with.
LAUNCHER_GROUP = "launchers"


@dataclass(frozen=True)
class InfraKeys:
    account: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}:{self.account}"

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, "retrain", *parts))

    # Stream of job ids to run (XADD by triggers, XREADGROUP by launchers, XACK on an outcome).
    @property
    def stream(self) -> str:
        return self._key("stream")

    # Hash: one job's record (spec, state, times, instance, cost, outcome, log tail).
    def job(self, job_id: str) -> str:
        return self._key("job", job_id)

    # List: "<state> <unix time>" for each state the job went through, oldest first.
    def job_history(self, job_id: str) -> str:
        return self._key("job", job_id, "history")

    # Sorted set of every job id, scored by creation time (what `parrotbot jobs` lists).
    @property
    def jobs(self) -> str:
        return self._key("jobs")

    # Sorted set per state (queued, launching, …): the state's index, scored by change time.
    def state_index(self, state: str) -> str:
        return self._key("state", state)

    # String: the id of the job waiting to run for a model; later requests merge into it.
    def queued_slot(self, model_kind: str) -> str:
        return self._key("slot", model_kind, "queued")

    # String: the id of the one job in flight for a model.
    def running_slot(self, model_kind: str) -> str:
        return self._key("slot", model_kind, "running")
