"""The retrain queue on a real Redis: coalescing, one job per model, acks, reclaiming."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from bot.keys import Keys
from infra.job import Job, JobSpec, JobState
from infra.keys import LAUNCHER_GROUP, InfraKeys
from infra.retrain_queue import RetrainQueue
from tests.support.daemon_process import wait_until
from tests.support.retrain import job_spec


def spec(account: str, trigger: str = "test", model_kind: str = "char_rnn") -> JobSpec:
    return job_spec(
        account, ["/data/datasets/poorrichard.jsonl"], trigger=trigger, model_kind=model_kind
    )


@pytest.fixture
def queue(redis_client: redis.Redis, account: str) -> RetrainQueue:
    queue = RetrainQueue(redis_client, account)
    queue.ensure_group()
    return queue


def idle_ms(queue: RetrainQueue, entry: str) -> int:
    (pending,) = queue.redis.xpending_range(queue.keys.stream, LAUNCHER_GROUP, entry, entry, 1)
    return pending["time_since_delivered"]


def take(queue: RetrainQueue, consumer: str) -> tuple[str, Job]:
    (delivery,) = queue.read_new(consumer, block_ms=100)
    job = queue.get(delivery.job_id)
    assert job is not None
    return delivery.entry_id, job


def test_a_job_record_round_trips_with_its_types(queue: RetrainQueue, account: str) -> None:
    job = queue.request(spec(account)).job
    stored = queue.get(job.id)
    assert stored == dataclasses.replace(job)
    assert stored.state is JobState.QUEUED and isinstance(stored.state, str)
    raw = queue.redis.hgetall(queue.keys.job(job.id))
    assert raw["state"] == "queued" and raw["trigger"] == "test"  # plain text in Redis
    assert queue.ids_in_state(JobState.QUEUED) == [job.id]


def test_requests_coalesce_while_a_job_waits_and_queue_one_more_while_it_runs(
    queue: RetrainQueue, account: str
) -> None:
    first = queue.request(spec(account, "retrain_request:1"))
    merged = queue.request(spec(account, "retrain_request:2"))
    assert not first.coalesced and merged.coalesced
    assert merged.job.id == first.job.id
    assert queue.get(first.job.id).coalesced == ["retrain_request:2"]
    assert queue.redis.xlen(queue.keys.stream) == 1

    entry, job = take(queue, "launcher-a")
    assert queue.acquire(job)
    queue.set_state(job, JobState.RUNNING)
    # While it runs: the next request is a new job; the one after merges into that.
    follow = queue.request(spec(account, "retrain_request:3"))
    again = queue.request(spec(account, "retrain_request:4"))
    assert not follow.coalesced and again.coalesced and again.job.id == follow.job.id
    assert queue.redis.xlen(queue.keys.stream) == 2
    assert queue.in_flight("char_rnn") == (follow.job.id, job.id)

    # At most one job per model in flight: the follow-up waits for the slot.
    _entry2, follow_job = take(queue, "launcher-b")
    assert not queue.acquire(follow_job)
    queue.finish(job, entry, JobState.DONE, outcome="published v1", version="v1")
    assert queue.acquire(follow_job)
    # Another model is independent.
    other = queue.request(spec(account, "cli", model_kind="gpt2")).job
    assert queue.acquire(queue.get(other.id))


def test_finish_records_the_outcome_acks_and_frees_the_slot_in_one_step(
    queue: RetrainQueue, account: str
) -> None:
    job = queue.request(spec(account)).job
    entry, job = take(queue, "launcher-a")
    assert queue.acquire(job)
    queue.set_state(job, JobState.LAUNCHING, attempt=1, started_at=time.time())
    queue.set_state(job, JobState.RUNNING, instance_id="i-123")
    assert queue.redis.xpending(queue.keys.stream, LAUNCHER_GROUP)["pending"] == 1
    queue.finish(job, entry, JobState.DONE, outcome="published v1", version="v1")

    stored = queue.get(job.id)
    assert stored.state is JobState.DONE and stored.version == "v1"
    assert stored.finished_at is not None and stored.instance_id == "i-123"
    assert queue.history(job.id) == ["queued", "launching", "running", "done"]
    assert queue.ids_in_state(JobState.DONE) == [job.id]
    for state in (JobState.QUEUED, JobState.LAUNCHING, JobState.RUNNING):
        assert queue.ids_in_state(state) == []
    assert queue.redis.xpending(queue.keys.stream, LAUNCHER_GROUP)["pending"] == 0
    assert queue.in_flight("char_rnn") == (None, None)
    with pytest.raises(ValueError):
        queue.finish(job, entry, JobState.RUNNING)


def test_a_dead_consumers_entry_is_reclaimed_but_a_live_one_keeps_its_own(
    queue: RetrainQueue, account: str
) -> None:
    queue.request(spec(account))
    entry, _job = take(queue, "alive")
    wait_until(lambda: idle_ms(queue, entry) > 1100, timeout=10, message="entry never aged")
    assert queue.touch(entry, "alive")  # a heartbeat resets the idle time
    assert queue.reclaim("other", min_idle_ms=1000) == []

    # The owner stops touching (it died): after min-idle another consumer takes the entry.
    claimed = wait_until(
        lambda: queue.reclaim("other", min_idle_ms=1000), timeout=10, message="never reclaimed"
    )
    assert [d.entry_id for d in claimed] == [entry]
    assert not queue.touch(entry, "alive"), "the old owner must not steal it back"
    assert [d.entry_id for d in queue.pending("other")] == [entry]


def test_a_released_entry_can_be_claimed_at_once(queue: RetrainQueue, account: str) -> None:
    queue.request(spec(account))
    entry, _job = take(queue, "stopping")
    queue.release(entry, "stopping")
    claimed = queue.reclaim("next", min_idle_ms=60_000)
    assert [d.entry_id for d in claimed] == [entry]


def test_infra_keys_share_the_bot_prefix_and_never_collide_with_bot_keys(account: str) -> None:
    bot, infra = Keys(account), InfraKeys(account)
    assert infra.prefix == bot.prefix == f"parrotbot:{account}"
    bot_keys = {
        bot.lease, bot.scheduler_jobs, bot.scheduler_run_times, bot.cursor("mentions"),
        bot.reply("1"), bot.posted, bot.model_current, bot.model_bad, bot.user_ids,
        bot.retrain_request_handled, bot.new_tweets_since_training,
    }  # fmt: skip
    infra_keys = {
        infra.stream, infra.job("1"), infra.job_history("1"), infra.jobs,
        infra.state_index("queued"), infra.queued_slot("m"), infra.running_slot("m"),
    }  # fmt: skip
    assert all(key.startswith(f"{infra.prefix}:retrain:") for key in infra_keys)
    assert not any(key.startswith(f"{bot.prefix}:retrain:") for key in bot_keys)
    assert all("::" not in key for key in bot_keys | infra_keys)
