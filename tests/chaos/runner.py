"""One chaos run: start the world, break it on a timeline while mentions arrive, judge.

Three threads run beside the timeline: the mention feed, the health watch (every live
daemon's /healthz, twice a second) and the killer. The timeline injects everything else,
each fault followed by the check that the bot handled it; a check that fails is recorded,
and the run goes on, so one report shows every problem.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import yaml

from bot.config import load_config
from bot.keys import Keys
from bot.platform.budgets import Budgets
from infra.job import Job, JobState
from infra.retrain_queue import RetrainQueue
from tests.chaos import checkpoints
from tests.chaos.accounting import BotReply, Verdict, judge
from tests.chaos.killer import Killer
from tests.chaos.operator import Operator
from tests.chaos.processes import http_health
from tests.chaos.world import World
from tests.support.aws import publish_to_s3
from tests.support.daemon_process import DaemonProcess, wait_until
from tests.support.x_emulator import CREATE, MENTIONS, TIMELINE, Fault

log = structlog.get_logger(__name__)

# The mention the Redis-restart check adds: far from the feed's and the budget phase's numbers,
# and eligible (World.add_mention's offsets within its traffic cycle are not: 0 is eligible).
RESTART_MENTION = 200_004  # 0 in the traffic cycle: an eligible mention


@dataclass
class FaultRecord:
    kind: str
    at: float  # monotonic: when recovery is measured from
    detail: str = ""
    verified: bool | None = None  # None: not checked (yet)
    note: str = ""


@dataclass
class Run:
    world: World
    faults: list[FaultRecord] = field(default_factory=list)
    healthy: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stop_feed: threading.Event = field(default_factory=threading.Event)
    stop_watch: threading.Event = field(default_factory=threading.Event)
    feed_paused: threading.Event = field(default_factory=threading.Event)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        world = self.world
        self.client = world.redis.client()
        self.keys = Keys(world.account)
        self.queue = RetrainQueue(self.client, world.account)
        config = load_config(world.config_path)
        self.budgets = Budgets(
            self.client, self.keys, config.platform.x.budgets, config.platform.x.prices
        )
        self.killer = Killer(
            world.pool,  # type: ignore[arg-type]
            self.client,
            self.keys.lease,
            target=world.settings.kills,
            pool_size=world.settings.pool_size,
            seed=world.settings.seed,
        )
        world.emulator.hooks.append(self.killer.hook)
        self.operator = Operator(config, world.redis.client())

    # --- background threads -------------------------------------------------------------
    def start_threads(self) -> None:
        for target, name in ((self._feed, "feed"), (self._watch, "health-watch")):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.operator.start()

    def _feed(self) -> None:
        """Mentions keep arriving; held back near the post cap so the budget phase decides."""
        number = 0
        while not self.stop_feed.wait(self.world.settings.mention_interval):
            if not self.healthy or self.feed_paused.is_set() or self._near_cap():
                continue
            self.world.add_mention(number)
            number += 1
        self.extra["feed_next"] = number

    def _near_cap(self, margin: int = 15) -> bool:
        left = self._writes_left()
        return left is not None and self._waiting() >= left - margin

    def _writes_left(self) -> int | None:
        try:
            return self.budgets.writes_left_today()
        except Exception:  # Redis restarting: do not add to the pile meanwhile
            return 0

    def _waiting(self) -> int:
        answered = {target for _id, target in self.world.bot_replies()}
        return sum(1 for m in list(self.world.mentions) if m.eligible and m.id not in answered)

    def _watch(self) -> None:
        """Twice a second, the lease holder's /healthz (only a leader can be healthy)."""
        while not self.stop_watch.wait(0.5):
            leader = self.killer.leader()
            if leader is None:
                continue
            leader.refresh()
            if leader.health_url is None:
                continue
            answer = http_health(leader.health_url)
            if answer is not None and answer[0] == 200:
                self.healthy.append(time.monotonic())

    # --- helpers -------------------------------------------------------------------------
    def record(self, kind: str, detail: str = "", at: float | None = None) -> FaultRecord:
        fault = FaultRecord(kind, time.monotonic() if at is None else at, detail)
        self.faults.append(fault)
        log.info("chaos.fault", kind=kind, detail=detail, t=round(fault.at - self.started, 1))
        return fault

    def check(self, fault: FaultRecord, ok: bool, note: str = "") -> None:
        fault.verified = ok if fault.verified is None else fault.verified and ok
        fault.note = "; ".join(filter(None, [fault.note, note]))
        report = log.info if ok else log.error
        report("chaos.checked", kind=fault.kind, ok=ok, note=note)

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """`predicate`'s first truthy value within `timeout`, or None: a failed check is
        recorded and the run goes on, so one report shows every problem."""
        try:
            return wait_until(predicate, timeout=timeout, message="")
        except AssertionError:
            return None

    def leader_health(self) -> dict[str, Any] | None:
        leader = self.killer.leader()
        if leader is None or leader.health_url is None:
            return None
        answer = http_health(leader.health_url)
        return answer[1] if answer is not None and answer[0] == 200 else None

    def serving_version(self) -> str | None:
        health = self.wait(self.leader_health, 30)
        return health["model_version"] if health else None

    def any_daemon_event(self, name: str, where: Callable[[dict[str, Any]], bool]) -> Any:
        pool = self.world.pool
        assert pool is not None
        for daemon in list(pool.daemons):
            found = daemon.tail.find(name, where)
            if found is not None:
                return found
        return None

    def replies_since(self, at: float) -> int:
        return sum(1 for t in list(self.world.reply_commits) if t > at)

    def phase(self, offset: float) -> None:
        """Wait until `offset` seconds into the fault phase (a timeline, not a sync point)."""
        self.stop_feed.wait(max(0.0, self.started + offset - time.monotonic()))

    # --- X faults ------------------------------------------------------------------------
    def lost_responses(self) -> None:
        """From now on some replies are created and their answer lost, or answered 503."""
        emulator = self.world.emulator
        emulator.inject(CREATE, Fault("lost_response", times=None, probability=0.12))
        emulator.inject(
            CREATE, Fault("status_after_commit", status=503, times=None, probability=0.04)
        )

    def server_error_burst(self, number: int) -> None:
        emulator = self.world.emulator
        for endpoint, status, times in ((MENTIONS, 503, 6), (CREATE, 500, 3), (TIMELINE, 502, 3)):
            emulator.inject(endpoint, Fault("status", status=status, times=times))
        self.record("5xx burst", f"burst {number}: 503x6 mentions, 500x3 posts, 502x3 timelines")

    def rate_limit_storm(self, waves: int = 3, seconds: float = 6.0) -> None:
        emulator = self.world.emulator
        for wave in range(waves):
            for endpoint in (MENTIONS, CREATE, TIMELINE):
                emulator.exhaust(endpoint, reset_in=seconds)
            fault = self.record("429 storm", f"wave {wave + 1}: every endpoint for {seconds:.0f}s")
            fault.at += seconds  # recovery counts from the reset X announced
            self.stop_feed.wait(seconds + 1.5)

    # --- checkpoints ---------------------------------------------------------------------
    def corrupt_checkpoint(self, variant: str) -> None:
        """Publish a broken version as LATEST: it must be refused and marked bad everywhere,
        never served, and the leader must serve the last good version."""
        from training.publish import read_latest

        world = self.world
        assert world.pretrained is not None
        good = read_latest(world.model_dir)
        if variant == "checksum":
            version = checkpoints.publish_with_bad_checksum(
                world.pretrained, world.model_dir, world.root / "scratch"
            )
        else:
            version = checkpoints.republish(world.pretrained, world.model_dir, damage_weights=True)
        fault = self.record("corrupt checkpoint", f"{variant}: {version}")
        refused = self.wait(
            lambda: self.any_daemon_event("hotload.refused", lambda e: e.get("version") == version),
            60,
        )
        bad = self.client.hexists(self.keys.model_bad, version)
        # The leader may change meanwhile; whoever leads must end up on the last good version.
        serving = self.wait(
            lambda: (h := self.leader_health()) and h["model_version"] == good and good, 60
        )
        served = self.any_daemon_event("hotload.swapped", lambda e: e.get("version") == version)
        self.check(
            fault,
            bool(refused) and bad and bool(serving) and served is None,
            f"{variant}: refused and marked bad {bool(refused) and bad}, never served "
            f"{served is None}, last good version serving {bool(serving)}",
        )

    # --- config --------------------------------------------------------------------------
    def invalid_config_edit(self) -> None:
        world = self.world
        self.killer.pause()  # a daemon started now would (rightly) refuse the broken file
        try:
            pool = world.pool
            assert pool is not None
            # One spawned a moment ago may not have read its config yet: let it first.
            self.wait(lambda: all(d.tail.find("daemon.starting") for d in pool.live()), 60)
            good = world.config_path.read_text()
            leader = self.wait(self.killer.leader, 30)
            if leader is None:
                self.check(self.record("invalid config edit"), False, "no leader to watch")
                return
            seen = len(leader.tail.events)
            world.write_config(good.replace("post_every_seconds: 5", "post_every_seconds: -1"))
            fault = self.record("invalid config edit", "schedule.post_every_seconds: -1")
            invalid = self.wait(
                lambda: (
                    leader.tail.poll() is not None
                    and next(
                        (e for e in leader.tail.events[seen:] if e["event"] == "config.invalid"),
                        None,
                    )
                ),
                20,
            )
            replied = self.wait(lambda: self.replies_since(fault.at), 30)
            healthy = http_health(leader.health_url or "")
            alive = leader.alive()
            world.write_config(good)
            self.check(
                fault,
                bool(invalid)
                and bool(replied)
                and alive
                and healthy is not None
                and healthy[0] == 200,
                f"refused (config.invalid) {bool(invalid)}, same leader alive, healthy and "
                f"replying on the old config {alive and bool(replied)}",
            )
        finally:
            self.killer.resume()

    def bump_retrain(self) -> Job | None:
        """A valid live edit: ask for a retrain; returns the job once queued."""
        data = self.world.config_data
        data["training"]["retrain_request"] += 1
        trigger = f"retrain_request:{data['training']['retrain_request']}"
        self.world.write_config(data)
        return self.wait(
            lambda: next((j for j in self.queue.list_jobs(10) if j.trigger == trigger), None), 60
        )

    # --- spot training -------------------------------------------------------------------
    def _running(self, job_id: str, attempt: int) -> Job | None:
        from infra.aws.cloud import TAG_VOLUME, tag_value

        def ready() -> Job | None:
            job = self.queue.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.attempt != attempt:
                return None
            found = [i for i in self.world.cloud.instances() if i["InstanceId"] == job.instance_id]
            return job if found and tag_value(found[0], TAG_VOLUME) else None

        return self.wait(ready, 120)

    def _act_as_instance(self, job: Job) -> str:
        """What the user-data does after training: publish a new version to S3, manifest last."""
        world = self.world
        assert world.pretrained is not None
        scratch = world.root / "instance" / job.id
        version = checkpoints.republish(world.pretrained, scratch)
        prefix = f"{world.cloud_exchange().job_prefix(job.id)}/versions/char_rnn/{version}"
        publish_to_s3(world.cloud, prefix, scratch / version)
        return version

    def _finish_and_serve(self, fault: FaultRecord, job: Job) -> None:
        version = self._act_as_instance(job)
        done = self.wait(lambda: (j := self.queue.get(job.id)) and j.state.terminal and j, 120)
        served = self.wait(
            lambda: self.any_daemon_event("hotload.swapped", lambda e: e.get("version") == version),
            240,
        )
        self.check(
            fault,
            bool(done) and done.state is JobState.DONE and bool(served),
            f"job {done.state if done else 'unfinished'}, new version hot-loaded {bool(served)}",
        )
        self.extra.setdefault("versions_trained", []).append(version)

    def _start_retrain(self, kind: str) -> tuple[FaultRecord, Job | None]:
        """Ask for a retrain (a live config edit); its job once the first attempt runs."""
        job = self.bump_retrain()
        fault = self.record(kind)
        running = self._running(job.id, 1) if job else None
        if running is None:
            self.check(fault, False, "the retrain never ran on a spot instance")
        return fault, running

    def spot_interruption(self) -> None:
        fault, first = self._start_retrain("spot interruption")
        if first is None:
            return
        self.world.cloud.ec2.terminate_instances(InstanceIds=[first.instance_id])
        fault.at, fault.detail = time.monotonic(), f"job {first.id}: {first.instance_id} reclaimed"
        second = self._running(first.id, 2)
        requeued = second is not None and second.instance_id != first.instance_id
        self.check(
            fault,
            requeued,
            f"requeued and relaunched on a new instance {requeued}",
        )
        if second is not None:
            history = self.queue.history(first.id)
            self.check(
                fault,
                history[:6] == ["queued", "launching", "running", "queued", "launching", "running"],
                "states " + ">".join(history),
            )
            self._finish_and_serve(fault, second)

    def killed_launcher(self) -> None:
        fault, running = self._start_retrain("killed launcher")
        if running is None:
            return
        pid = int(running.consumer.split(":")[-2])
        victim = next((la for la in self.world.launchers if la.process and la.pid == pid), None)
        if victim is None:
            self.check(fault, False, f"no launcher with pid {pid}")
            return
        victim.kill()
        fault.at, fault.detail = time.monotonic(), f"launcher {victim.name} held job {running.id}"
        adopted = self.wait(
            lambda: (
                (j := self.queue.get(running.id))
                and j.consumer != running.consumer
                and j.state is JobState.RUNNING
                and j
            ),
            60,
        )
        ok = bool(adopted) and adopted.instance_id == running.instance_id and adopted.attempt == 1
        self.extra["launcher_adoption_seconds"] = round(time.monotonic() - fault.at, 1)
        self.check(fault, ok, f"adopted by the other launcher, same instance {ok}")
        self.world.start_launcher(f"{victim.name}-restarted")
        if adopted:
            self._finish_and_serve(fault, adopted)

    # --- Redis ---------------------------------------------------------------------------
    def redis_restart(self) -> None:
        self.killer.pause()  # the killer finds the leader through Redis
        self.feed_paused.set()
        try:
            pattern = f"{self.keys.prefix}:reply:*"
            before = sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))
            _down, back = self.world.redis.restart(down_seconds=3.0)
            fault = self.record("redis restart", "SIGTERM, 3s down, restart on the AOF", at=back)
            after = sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))
            # Something to answer: with the feed paused the bot may have answered everything
            # before the restart, and "replying again" would then wait for nothing.
            self.world.add_mention(RESTART_MENTION)
            healthy = self.wait(lambda: self.healthy and self.healthy[-1] > back, 60)
            replied = self.wait(lambda: self.replies_since(back), 60)
            can_reply = self._writes_left() != 0  # a spent budget answers nothing, rightly
            self.check(
                fault,
                after >= before and bool(healthy) and (bool(replied) or not can_reply),
                f"reply records {before} -> {after}, healthy again {bool(healthy)}, "
                f"replying again {bool(replied)}" + ("" if can_reply else " (budget spent)"),
            )
        finally:
            self.feed_paused.clear()
            self.killer.resume()

    def redis_eviction(self) -> None:
        """Redis switched to an evicting policy: a daemon that starts now says so, by name,
        and one with `redis.require_durable` refuses to start (exit 2) rather than risk
        losing the reply records. The policy is put back afterwards."""
        self.killer.pause()  # the warned daemon must not become a leader the killer ignores
        fault = self.record("redis eviction policy", "CONFIG SET maxmemory-policy allkeys-lru")
        world = self.world
        durable_config = world.root / "bot-durable.yaml"
        durable_config.write_text(
            yaml.safe_dump({**world.config_data, "redis": {"require_durable": True}})
        )
        try:
            self.client.config_set("maxmemory-policy", "allkeys-lru")
            strict = DaemonProcess(durable_config, world.logs / "daemon-durable.log").start()
            warned = DaemonProcess(world.config_path, world.logs / "daemon-evicting.log").start()
            refused = self._exit_code(strict, 120) == 2 and bool(strict.named("redis.not_durable"))
            risk = self.wait(
                lambda: [e for e in warned.named("redis.durability_risk") if "allkeys-lru" in
                         str(e.get("risk", ""))],
                120,
            )  # fmt: skip
            try:
                stopped = warned.stop(timeout=30) == 0
            except AssertionError:
                stopped = False
            self.check(
                fault,
                refused and bool(risk) and stopped,
                f"require_durable refused to start {refused}, warning named the policy "
                f"{bool(risk)}, warned daemon stopped cleanly {stopped}",
            )
        finally:
            self.client.config_set("maxmemory-policy", "noeviction")
            self.killer.resume()

    @staticmethod
    def _exit_code(process: DaemonProcess, timeout: float) -> int | None:
        try:
            return process.process.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            process.process.kill()  # type: ignore[union-attr]
            return None

    # --- the end -----------------------------------------------------------------------
    def spend_the_budget(self, extra: int = 6) -> None:
        """Mentions beyond the post cap: the bot must stop at the cap, not past it."""
        left = self._writes_left() or 0
        wanted = max(0, left - self._waiting()) + extra
        start = len(self.world.mentions)
        for number in range(wanted):
            self.world.add_mention(100_000 + start + number)
        self.extra["budget_mentions"] = wanted
        spent = self.wait(lambda: self._writes_left() == 0, 300)
        self.extra["budget_spent"] = bool(spent)

    def verdict(self) -> Verdict:
        world = self.world
        replies = [BotReply(tweet_id, target) for tweet_id, target in world.bot_replies()]
        records = {m.id: self.client.hgetall(self.keys.reply(m.id)) for m in world.mentions}
        return judge(
            list(world.mentions),
            replies,
            records,
            bot_posts=world.bot_post_count(),
            post_cap=world.settings.post_cap,
            budget_spent=self._writes_left() == 0,
        )

    def drain(self, timeout: float = 120.0) -> Verdict:
        """Wait until every eligible mention is answered and recorded, or budget-accounted.

        With the budget spent the bot reads no mentions until the next day, so an intent
        whose answer was lost stays unreconciled until then: that is not waited for.
        """

        def settled() -> Verdict | None:
            verdict = self.verdict()
            spent = self._writes_left() == 0
            return verdict if verdict.lost == 0 and (spent or not verdict.unreconciled) else None

        return self.wait(settled, timeout) or self.verdict()
