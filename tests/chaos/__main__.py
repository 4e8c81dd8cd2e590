"""`python -m tests.chaos` (`make chaos`): the chaos suite, one command, one table.

Runs the real daemons and launchers against a private Redis (AOF on), moto_server and the X
API emulator, all on loopback, injects the faults of the [ops] issue while mentions keep
arriving, prints one table, writes tests/chaos/results.json and the table in docs/chaos.md,
and exits 1 when any must-be-zero count is not zero or a fault's check failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

from tests.chaos import report
from tests.chaos.accounting import must_be_zero, recovery_times, scan_logs
from tests.chaos.runner import Run
from tests.chaos.world import SECRETS, Settings, World
from tests.support.x_emulator import CREATE

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
COMMAND = "make chaos"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--kills", type=int, default=Settings.kills)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=Settings.max_seconds,
        help="end the fault phase by then even if kills remain",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="leave results.json and docs/chaos.md alone (trial runs)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder and its logs")
    args = parser.parse_args(argv)
    structlog.configure(
        processors=[
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = Settings(kills=args.kills, seed=args.seed, max_seconds=args.max_seconds)
    root = Path(tempfile.mkdtemp(prefix="parrotbot-chaos-"))
    world = World(settings, root)
    began = time.monotonic()
    try:
        results = _run(world, began)
    finally:
        world.stop()
    from rich.console import Console

    Console(width=140).print(report.render(results))
    if not args.no_write:
        report.write(results, HERE / "results.json", REPO / "docs" / "chaos.md", COMMAND)
    if results["passed"] and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"logs kept in {root}/logs", file=sys.stderr)
    return 0 if results["passed"] else 1


def _run(world: World, began: float) -> dict[str, Any]:
    log = structlog.get_logger("chaos")
    world.start()
    log.info("chaos.world_ready", root=str(world.root), seconds=round(time.monotonic() - began))
    pool = world.pool
    assert pool is not None
    for _ in range(world.settings.pool_size):
        pool.spawn()
    for name in ("a", "b"):
        world.start_launcher(name)
    run = Run(world)
    run.start_threads()
    first = run.wait(lambda: world.reply_commits, 240)
    if not first:
        raise RuntimeError(f"no reply within 240 s of start; logs in {world.logs}")
    run.started = time.monotonic()
    log.info("chaos.faults_begin", warmup_s=round(run.started - began))
    run.killer.start()
    run.lost_responses()
    settings = world.settings
    deadline = run.started + settings.max_seconds
    run.phase(15)
    run.server_error_burst(1)
    run.phase(35)
    run.rate_limit_storm()
    run.phase(65)
    run.corrupt_checkpoint("checksum")
    run.phase(85)
    run.invalid_config_edit()
    run.phase(100)
    run.spot_interruption()
    run.killed_launcher()
    run.redis_restart()
    run.redis_eviction()
    run.server_error_burst(2)
    run.corrupt_checkpoint("unloadable")
    run.wait(lambda: run.killer.done() or time.monotonic() > deadline, settings.max_seconds)
    run.killer.stop()
    fault_phase_s = time.monotonic() - run.started
    log.info("chaos.kills_end", kills=len(run.killer.kills), seconds=round(fault_phase_s))
    run.spend_the_budget()  # answers to replies are still being lost meanwhile
    world.emulator.clear_faults()
    verdict = run.drain()
    run.stop_feed.set()
    run.stop_watch.set()
    run.operator.stop.set()
    exits = pool.stop_all()
    launcher_exits = {la.name: la.stop() for la in world.launchers if not la.killed}
    # Every process that wrote these logs has exited: their last lines are on disk.
    logs = [*sorted(world.logs.rglob("*.log")), world.redis.folder / "redis.log"]
    leaks = scan_logs([p for p in logs if p.exists()], SECRETS)
    return _results(run, verdict, leaks, exits, launcher_exits, began, fault_phase_s)


def _results(
    run: Run,
    verdict: Any,
    leaks: dict[str, list[str]],
    exits: dict[int, int],
    launcher_exits: dict[str, int],
    began: float,
    fault_phase_s: float,
) -> dict[str, Any]:
    world, killer = run.world, run.killer
    pool = world.pool
    assert pool is not None
    requests = world.emulator.requests
    lost = [r for r in requests if r.endpoint == CREATE and r.post_id and r.status is None]
    after_commit = [
        r
        for r in requests
        if r.endpoint == CREATE and r.post_id and r.status is not None and r.status >= 500
    ]
    limited = sum(1 for r in requests if r.status == 429)
    server_errors = sum(1 for r in requests if r.status and r.status >= 500)
    healthy = sorted(run.healthy)
    leader_kills = [k for k in killer.kills if k.role == "leader"]
    leader_recovery = recovery_times([k.at for k in leader_kills], healthy)
    other = [f for f in run.faults if f.kind in ("redis restart", "429 storm")]
    other_recovery = recovery_times([f.at for f in other], healthy)
    replies = sorted(world.reply_commits)
    kill_to_reply = [r for r in recovery_times([k.at for k in leader_kills], replies) if r]
    candidates = [
        (r, f"leader kill at {k.point}") for k, r in zip(leader_kills, leader_recovery, strict=True)
    ]
    candidates += [(r, f.kind) for f, r in zip(other, other_recovery, strict=True)]
    never = [what for r, what in candidates if r is None]
    measured = [(r, what) for r, what in candidates if r is not None]
    worst = max(measured, default=(0.0, "-"))
    faults: dict[str, dict[str, Any]] = {}
    roles = Counter(k.role for k in killer.kills)
    points = Counter(k.point.split(" (")[0] for k in leader_kills)
    faults["daemon SIGKILL"] = {
        "count": len(killer.kills),
        "detail": ", ".join(f"{n} {role}" for role, n in roles.items())
        + "; leader at: "
        + ", ".join(f"{n} {p}" for p, n in points.most_common()),
        "verified": len(killer.kills) >= world.settings.kills and not never,
    }
    faults["lost POST responses"] = {
        "count": len(lost) + len(after_commit),
        "detail": f"{len(lost)} connection closed after create, {len(after_commit)} 503 after "
        "create",
        "verified": None,
    }
    grouped: dict[str, list[Any]] = {}
    for fault in run.faults:
        grouped.setdefault(fault.kind, []).append(fault)
    for kind, items in grouped.items():
        checks = [f.verified for f in items if f.verified is not None]
        detail = "; ".join(f.note or f.detail for f in items)
        if kind == "429 storm":
            detail = f"{len(items)} waves; {limited} calls answered 429 (then the bot waits)"
        elif kind == "5xx burst":
            detail = f"{server_errors} answers 5xx in all (bursts and faults)"
        faults[kind] = {
            "count": len(items),
            "detail": detail,
            "verified": all(checks) if checks else None,
        }
    failed_checks = sum(1 for info in faults.values() if info["verified"] is False)
    unexpected = pool.unexpected_exits()
    operator = run.operator
    edits_changed = [
        mention_id
        for mention_id, edit in operator.edited.items()
        if (texts := world.bot_reply_texts(mention_id)) and set(texts) != {edit}
    ]
    zero = must_be_zero(
        verdict,
        leaks,
        second_approvals_accepted=operator.second_approvals_accepted,
        edited_replies_not_as_approved=len(edits_changed),
        unclean_exits=sum(1 for code in exits.values() if code != 0)
        + sum(1 for code in launcher_exits.values() if code != 0)
        + len(unexpected),
        failed_fault_checks=failed_checks,
    )
    return {
        "passed": all(v == 0 for v in zero.values()),
        "finished_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}",
        "seed": world.settings.seed,
        "faults": faults,
        "counts": {
            "mentions": verdict.mentions,
            "eligible": verdict.eligible,
            "replies": verdict.replies,
            "bot_posts": verdict.bot_posts,
            "post_cap": world.settings.post_cap,
            "accounted": verdict.accounted,
            "unreconciled": verdict.unreconciled,
            "daemons_started": len(pool.daemons),
            "leader_wait_timeouts": killer.leader_timeouts,
            "approved": len(operator.approved),
            "approved_edited": len(operator.edited),
        },
        "must_be_zero": zero,
        "problems": {
            "lost_ids": verdict.lost_ids,
            "duplicate_ids": verdict.duplicate_ids,
            "mismatch_ids": verdict.mismatch_ids,
            "leaks": leaks,
            "recovery_never_seen": never,
            "daemon_exit_codes": exits,
            "launcher_exit_codes": launcher_exits,
            "unexpected_exits": [d.number for d in unexpected],
            "edited_replies_not_as_approved": edits_changed,
        },
        "timing": {
            "wall_s": round(time.monotonic() - began),
            "fault_phase_s": round(fault_phase_s),
            "max_recovery_s": round(worst[0], 1),
            "worst_recovery": worst[1],
            "median_leader_recovery_s": round(
                statistics.median([r for r in leader_recovery if r is not None] or [0.0]), 1
            ),
            "max_kill_to_reply_s": round(max(kill_to_reply, default=0.0), 1),
        },
        "extra": run.extra,
    }


if __name__ == "__main__":
    sys.exit(main())
