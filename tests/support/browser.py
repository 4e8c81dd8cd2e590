"""The console's test helpers: a seeded account to look at, and Debian's Chromium to look with.

Seeding goes through the project's own writers (`BotState.record_posted`, the reply rules'
opt-out record, `training.publish.publish`), so the pages are tested on data shaped exactly
as the daemon writes it. Playwright's own browser download cannot reach these machines, so
the browser is Debian's `chromium`, launched by path; the browser tests skip, saying why,
where it or the playwright package is missing.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import BotConfig
from bot.ledger.held import HeldLedger
from bot.platform.base import Tweet
from bot.rules import Command, ReplyRules
from bot.state import BotState, PostedTweet
from training.publish import Manifest, new_staging_dir, publish
from training.trainlog import TrainLog

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "console"


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium under Playwright (never Playwright's own download)."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        # Containers run tests as root, where Chromium's sandbox cannot start.
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )


def publish_version(
    model_dir: Path,
    *,
    steps: int = 40,
    val_every: int = 10,
    base: float = 3.0,
    step: int | None = None,
) -> Manifest:
    """A published version with a dummy weights file and a real train.log (train and val).

    Not a loadable model: the console reads manifests and logs, never weights.
    """
    staging = new_staging_dir(model_dir)
    (staging / "model.weights.bin").write_bytes(b"not a real model")
    log = TrainLog(staging)
    for i in range(1, steps + 1):
        val = base * 0.9 + 1.0 / i if i % val_every == 0 else None
        log.append(step=i, train_loss=base + 2.0 / i, val_loss=val, lr=1e-3)
    return publish(
        staging,
        model_kind="char_rnn",
        step=step or steps,
        train_loss=base + 2.0 / steps,
        val_loss=base * 0.9 + 1.0 / steps,
        dataset_hash="d" * 64,
        config={"units": 32},
    )


def opt_out(state: BotState, config: BotConfig, author_id: str, handle: str) -> None:
    """Record an opt-out as the reply path does for `@bot stop`."""
    mention = Tweet(
        id=f"9{author_id}",
        text=f"@{config.platform.handle} stop",
        author_id=author_id,
        author_handle=handle,
        created_at="2026-01-01T00:00:00Z",
    )
    ReplyRules(state, config.replies).record_command(mention, Command.OPT_OUT)


def seed_history(state: BotState, count: int, *, version: str = "v-test") -> None:
    """`count` posted items, oldest first: every third a reply carrying its mention id."""
    pipe = state.redis.pipeline(transaction=False)
    for i in range(count):
        reply = i % 3 == 2
        state.record_posted(
            PostedTweet(
                tweet_id=str(10_000_000 + i),
                text=f"{'reply' if reply else 'post'} number {i} about thrift",
                kind="reply" if reply else "post",
                model_version=version,
                in_reply_to=str(20_000_000 + i) if reply else None,
            ),
            pipeline=pipe,
        )
    pipe.execute()


def seed_held(state: BotState, count: int, *, first_id: int = 7_000) -> list[str]:
    """`count` held replies, oldest first, as the leader holds them (no lease: no fence);
    their item ids."""
    ledger = HeldLedger(state, keep_days=90, reply_keep_days=60)
    ids = []
    for i in range(count):
        mention_id = str(first_id + i)
        mention = Tweet(
            id=mention_id,
            text=f"@parrotbot question {i}: is thrift a virtue?",
            author_id=str(800 + i),
            author_handle=f"asker{i}",
            created_at="2026-01-01T00:00:00Z",
            conversation_id=mention_id,
        )
        provenance = {
            "model_version": "v-test",
            "step": 40,
            "val_loss": 2.5,
            "dataset_hash": "d" * 64,
            "nearest_training_tweet": {"text": "A penny saved is a penny earned.", "overlap": 0.8},
            "sampling": {"temperature": 0.8, "top_k": 40},
            "filters": {
                "passed": ["too_long", "blocklist"],
                "batch_checked": 8,
                "batch_accepted": 5,
                "batch_rejected": {"too_long": 3},
            },
        }
        ledger.hold_reply(mention, f"A penny saved is answer {i}.", provenance)
        ids.append(f"reply-{mention_id}")
    return ids


@dataclass
class Seeded:
    """What `seed_full` wrote, for the assertions."""

    versions: list[str]  # newest first
    serving: str
    bad_version: str
    opted_out: dict[str, str]  # author id -> handle
    history: int
    held: list[str] = field(default_factory=list)  # held reply item ids, oldest first
    extra: dict[str, Any] = field(default_factory=dict)


def seed_full(config: BotConfig, state: BotState, *, history: int = 50, held: int = 3) -> Seeded:
    """An account with something on every page: two published versions (the newer serving),
    a bad one, a lease holder with a standby, workers, filter counts, a scrape, opt-outs,
    `held` replies waiting for review and `history` posted items."""
    older = publish_version(config.model_dir, base=3.5)
    newer = publish_version(config.model_dir, base=2.5)
    state.set_current_model(
        newer.version,
        {"step": newer.step, "val_loss": newer.val_loss, "created_at": newer.created_at},
    )
    bad = "20200101T000000000000Z-bad000"
    state.mark_bad_version(bad, "smoke test failed: empty output")
    now = time.time()
    state.redis.set(state.keys.lease, "leader-host:100:aaaaaa")
    state.redis.hset(
        state.keys.daemon,
        mapping={
            "instance": "leader-host:100:aaaaaa",
            "started_at": now - 3600,
            "heartbeat_at": now - 2,
        },
    )
    worker = {
        "pid": 4242,
        "host": "leader-host",
        "version": newer.version,
        "rss_bytes": 150 * 2**20,
        "requests": 12,
        "restarts": 0,
    }
    state.record_worker("leader-host:100:aaaaaa", worker)
    state.record_worker("standby-host:200:bbbbbb", {**worker, "pid": 4343, "host": "standby"})
    state.count_filtered(40, 30, {"too_long": 6, "novelty": 4})
    handle = config.targets[0].handle
    state.redis.hset(state.keys.last_scrape, handle, f'{{"at": {now - 60}, "new_tweets": 7}}')
    opted = {"501": "alice_optout", "502": "bob_optout"}
    for author_id, name in opted.items():
        opt_out(state, config, author_id, name)
    seed_history(state, history, version=newer.version)
    held_ids = seed_held(state, held)
    return Seeded(
        versions=[newer.version, older.version],
        serving=newer.version,
        bad_version=bad,
        opted_out=opted,
        history=history,
        held=held_ids,
    )


def csrf_of(html: str) -> str:
    """The CSRF token a console page carries in its forms."""
    import re

    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)
