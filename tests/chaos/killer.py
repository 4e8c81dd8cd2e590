"""SIGKILL of daemons at random points, with a restart after each, in a thread of its own.

Most kills hit the lease holder (the daemon that posts), at a point chosen at random: when
its reply request reaches X (X never sees it), right after X created its reply (the answer
never arrives), while it reads mentions, while it reads its own timeline (reconciling), or at
a random moment. The rest hit a warm standby or a daemon still starting. Each kill is
followed by a fresh daemon, so a leader and warm standbys stay available.

The point-kills run inside the X emulator's request path (a hook), which is what makes them
land exactly there.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog

from tests.chaos.processes import Daemon, DaemonPool
from tests.support.x_emulator import CREATE, MENTIONS, TIMELINE, Request

log = structlog.get_logger(__name__)

POINTS: list[tuple[str, str | None]] = [
    ("received", CREATE),
    ("committed", CREATE),
    ("received", MENTIONS),
    ("received", TIMELINE),
    ("timer", None),
]
POINT_WAIT_SECONDS = 5.0  # a point that does not come by then: kill at once (a "fallback")
# After most leader kills, while the lease lapses, a fresh daemon is killed at a random
# age in its start-up: a cheap kill (no warm restart to pay for) that costs the run no time.
START_KILLS = (0, 1, 1)
# Matching requests a leader may make before the armed point kills it: some leaders die at
# their first reply, others after answering a few (more replies in flight across kills).
SKIPS = (0, 0, 1, 2)
LEADER_WAIT_SECONDS = 40.0


@dataclass
class Kill:
    at: float
    daemon: int
    role: str  # leader, standby, starting
    point: str


class Killer:
    def __init__(
        self,
        pool: DaemonPool,
        client: redis.Redis,
        lease_key: str,
        *,
        target: int,
        pool_size: int,
        seed: int,
        non_leader_every: int = 15,
    ) -> None:
        self.pool = pool
        self.redis = client
        self.lease_key = lease_key
        self.target = target
        self.pool_size = pool_size
        self.non_leader_every = non_leader_every
        self.random = random.Random(seed)
        self.kills: list[Kill] = []
        self.leader_timeouts = 0
        self.lock = threading.RLock()  # held for one kill cycle; `pause` waits for it
        # Only guards the armed point: the hook runs in X's request path and must never wait
        # for a kill cycle (that would stall the daemon's request and fake a timeout).
        self._arm_lock = threading.Lock()
        self.running = threading.Event()
        self.running.set()
        self.stopped = threading.Event()
        self._armed: tuple[str, str] | None = None
        self._skip = 0  # matching requests to let pass before the armed kill
        self._fired = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="killer", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """No kill and no restart until `resume` (returns once the current cycle ended)."""
        self.running.clear()
        self._disarm()
        with self.lock:
            pass

    def resume(self) -> None:
        self.running.set()

    def stop(self, timeout: float = 60.0) -> None:
        self.stopped.set()
        self.running.set()
        self._disarm()
        if self._thread is not None:
            self._thread.join(timeout)

    def done(self) -> bool:
        return len(self.kills) >= self.target

    def by_role(self) -> Counter[str]:
        return Counter(kill.role for kill in self.kills)

    def by_point(self) -> Counter[str]:
        return Counter(kill.point.split(" (")[0] for kill in self.kills)

    # --- the emulator hook --------------------------------------------------------------
    def hook(self, phase: str, request: Request) -> bool:
        """At "received" a killed daemon's request is dropped: X never saw it."""
        with self._arm_lock:
            if self._armed != (phase, request.endpoint):
                return False
            if self._skip > 0:  # let the leader get this far a few times first
                self._skip -= 1
                return False
            self._armed = None
        killed = self.kill_leader(f"{phase} {request.endpoint}")
        if killed:
            self._fired.set()
        return killed and phase == "received"

    def _disarm(self) -> None:
        with self._arm_lock:
            self._armed = None

    # --- kills ---------------------------------------------------------------------------
    def leader(self) -> Daemon | None:
        try:
            holder = self.redis.get(self.lease_key)
        except redis.RedisError:
            return None
        if not holder:
            return None
        try:
            pid = int(holder.split(":")[-2])
        except (IndexError, ValueError):
            return None
        return self.pool.by_pid(pid)

    def kill_leader(self, point: str) -> bool:
        daemon = self.leader()
        if daemon is None or not self.pool.kill(daemon, point):
            return False
        self._record(daemon, "leader", point)
        return True

    def _record(self, daemon: Daemon, role: str, point: str) -> None:
        self.kills.append(Kill(time.monotonic(), daemon.number, role, point))
        log.info(
            "chaos.killed", daemon=daemon.number, role=role, point=point, kills=len(self.kills)
        )

    def top_up(self) -> None:
        while len(self.pool.live()) < self.pool_size:
            self.pool.spawn()

    def _loop(self) -> None:
        try:
            self._cycles()
        except RuntimeError as exc:  # the pool closed under us: the run is being torn down
            log.info("chaos.killer_stopped", reason=str(exc))

    def _cycles(self) -> None:
        while not self.stopped.is_set() and not self.done():
            self.running.wait()
            if self.stopped.is_set():
                return
            with self.lock:
                if not self.running.is_set():
                    continue
                self.top_up()
                cycle = len(self.kills)
                if cycle % self.non_leader_every == self.non_leader_every - 1:
                    self._kill_standby()
                elif self._kill_leader_cycle():
                    for _ in range(self.random.choice(START_KILLS)):
                        self._kill_during_start()
                if self.running.is_set():
                    self.top_up()

    def _wait(self, predicate: Callable[[], object], timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running.is_set() or self.stopped.is_set():
                return None
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        return None

    def _kill_leader_cycle(self) -> bool:
        """Kill the lease holder at a random point; True when a leader was killed."""
        leader = self._wait(self.leader, LEADER_WAIT_SECONDS)
        if leader is None:
            if self.running.is_set():
                self.leader_timeouts += 1
            return False
        phase, endpoint = self.random.choice(POINTS)
        if endpoint is None:
            delay = self.random.uniform(1.0, 6.0)
            if self.stopped.wait(delay) or not self.running.is_set():
                return False
            return self.kill_leader(f"timer ({delay:.1f}s into leadership)")
        self._fired.clear()
        with self._arm_lock:
            self._armed = (phase, endpoint)
            self._skip = self.random.choice(SKIPS)
        if self._wait(self._fired.is_set, POINT_WAIT_SECONDS):
            return True
        self._disarm()
        if self._fired.is_set():
            return True
        if not self.running.is_set():
            return False
        return self.kill_leader(
            f"fallback (no {phase} {endpoint} within {POINT_WAIT_SECONDS:.0f}s)"
        )

    def _kill_during_start(self) -> None:
        """A fresh daemon killed at a random age while the lease of the killed leader lapses
        (so it costs the run no extra time): it dies importing, loading or preloading."""
        victim = self.pool.spawn()
        age = self.random.uniform(0.3, 3.0)
        if self.stopped.wait(age) or not self.running.is_set():
            return
        role = "standby" if victim.warm() else "starting"
        point = f"{role} ({age:.1f}s after spawn)"
        if self.pool.kill(victim, point):
            self._record(victim, role, point)

    def _kill_standby(self) -> None:
        leader = self.leader()
        standbys = [d for d in self.pool.live() if d is not leader and d.warm()]
        if not standbys:
            return
        victim = self.random.choice(standbys)
        point = "standby (waiting for the lease)"
        if victim is not self.leader() and self.pool.kill(victim, point):
            self._record(victim, "standby", point)
