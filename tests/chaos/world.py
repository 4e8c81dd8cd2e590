"""The world a chaos run lives in: folders, Redis, moto, the X emulator, config, processes.

Built before any fault is injected and torn down after the verdict; nothing here breaks
anything (that is `runner.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from tests.chaos.accounting import Mention
from tests.chaos.processes import DaemonPool, Launcher, MotoServer, RedisServer
from tests.support.aws import REGION, aws_settings_data
from tests.support.configs import SAMPLE_TIMELINE, X_SECRETS, x_config_data
from tests.support.x_emulator import CREATE, XEmulator

log = structlog.get_logger(__name__)

# Distinctive, so a leak into any log is found by a plain substring search. moto accepts any.
AWS_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "awsChaosSecretKey4d1e9b",
    "AWS_SESSION_TOKEN": "awsChaosSessionToken77f0c3",
}
SECRETS = {**X_SECRETS, **AWS_SECRETS}
# The feed's traffic repeats every TRAFFIC_CYCLE mention numbers. At these offsets a mention
# is not eligible, as X serves such posts in the mentions timeline: a reply to the bot that
# does not name it, a retweet of a bot post, a quote of one without an @; and at
# OPT_OUT_OFFSET one of the quitters takes their next step through stop, two mentions, start.
TRAFFIC_CYCLE = 12
NOT_SUMMONED_OFFSET, RETWEET_OFFSET, QUOTE_OFFSET, OPT_OUT_OFFSET = 11, 5, 8, 2
QUITTER_STEPS = ("opt_out", "opted_out", "opted_out", "opt_in", "summoned")
QUITTER_TEXTS = {
    "opt_out": "@parrotbot stop",
    "opted_out": "@parrotbot are you still there? #{number}",
    "opt_in": "@parrotbot start",
    "summoned": "@parrotbot glad to be back, #{number}",
}


@dataclass
class Settings:
    kills: int = 100
    pool_size: int = 4
    mention_interval: float = 2.0
    post_cap: int = 220  # posts_per_day: the budget phase spends it to the last post
    seed: int = 20260301
    max_seconds: float = 780.0  # the fault phase ends here even if kills remain
    log_level: str = "DEBUG"  # the secret scan is strongest where the bot logs the most


@dataclass
class World:
    settings: Settings
    root: Path
    account: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.volume = self.root / "volume"
        self.config_path = self.root / "bot.yaml"
        self.redis = RedisServer(self.root / "redis")
        self.moto = MotoServer(self.logs / "moto.log")
        self.emulator = XEmulator(seed=self.settings.seed)
        self.mentions: list[Mention] = []
        self.mention_lock = threading.Lock()
        self.reply_commits: list[float] = []  # monotonic times X created a reply by the bot
        self.pretrained: Path | None = None
        self.config_data: dict[str, Any] = {}
        self.pool: DaemonPool | None = None
        self.launchers: list[Launcher] = []

    # --- start ---------------------------------------------------------------------------
    def start(self) -> None:
        self.logs.mkdir(parents=True)
        self.redis.start()
        self.moto.start()
        trainer = self._start_trainer()
        self._start_emulator()
        self.moto.wait_ready()
        self._aws_environment()
        if trainer.wait(300) != 0:
            raise RuntimeError(f"training the start model failed: see {self.logs}/trainer.log")
        model_dir = self.root / "pretrained" / "char_rnn"
        self.pretrained = model_dir / (model_dir / "LATEST").read_text().strip()
        self._write_config()
        self.pool = DaemonPool(self.config_path, self.logs, env={})

    def _start_trainer(self) -> subprocess.Popen[bytes]:
        """The real entry point trains the first model (tiny: seconds), as in the tests."""
        folder = self.root / "pretrained"
        folder.mkdir()
        dataset = folder / "poorrichard.jsonl"
        shutil.copyfile(SAMPLE_TIMELINE, dataset)
        request = {
            "model_kind": "char_rnn",
            "datasets": [str(dataset)],
            "checkpoints_dir": str(folder),
            "model_config": {"units": 32, "embedding_dim": 16, "seq_len": 32, "epochs": 1},
            "trigger": "chaos",
        }
        (folder / "request.json").write_text(json.dumps(request))
        with (self.logs / "trainer.log").open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "training.train", "--request", str(folder / "request.json")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _start_emulator(self) -> None:
        emulator = self.emulator
        # Generous windows: the 429s of this run are the injected storms, not accidents.
        for endpoint in ("GET /2/users/:id/mentions", "GET /2/users/:id/tweets", CREATE):
            emulator.limits[endpoint] = 1_000_000
        emulator.start()
        emulator.bot = emulator.add_user("parrotbot", access_token=X_SECRETS["ACCESS_TOKEN"])
        target = emulator.add_user("poorrichard")
        for line in SAMPLE_TIMELINE.read_text().splitlines()[:30]:
            emulator.add_post(target, json.loads(line)["text"])
        self.fans = [emulator.add_user(f"fan{n}") for n in range(40)]
        self.quitters = [emulator.add_user(f"quitter{n}") for n in range(3)]
        self.quitter_steps = [0] * len(self.quitters)
        emulator.hooks.append(self._note_commit)

    def _note_commit(self, phase: str, request: Any) -> bool:
        if phase == "committed" and isinstance(request.body, dict) and request.body.get("reply"):
            self.reply_commits.append(time.monotonic())
        return False

    def _aws_environment(self) -> None:
        """boto3 reaches moto through its own configuration chain, in every process."""
        os.environ.update(
            AWS_ACCESS_KEY_ID="AKIACHAOSTESTING",
            AWS_DEFAULT_REGION=REGION,
            AWS_ENDPOINT_URL=self.moto.url,
            **AWS_SECRETS,
            **X_SECRETS,
        )
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            os.environ.pop(name, None)
        import boto3

        from infra.aws.cloud import Cloud
        from infra.aws.setup import setup
        from infra.settings import AwsSettings

        ec2 = boto3.client("ec2", region_name=REGION)
        images = ec2.describe_images(Owners=["amazon"])["Images"]
        ami_id = next(i["ImageId"] for i in images if len(i["ImageId"]) <= 21)
        self.aws_data = aws_settings_data(ami_id, poll_seconds=1.0)
        self.cloud = Cloud(AwsSettings.model_validate(self.aws_data), self.account)
        setup(self.cloud)

    def _write_config(self) -> None:
        data = x_config_data(self.volume, self.account, self.redis.url, self.emulator.url)
        data["schedule"].update(
            post_every_seconds=5,
            scrape_every_seconds=600,
            pool_refill_seconds=5,
            checkpoint_poll_seconds=2,
            lease_ttl_seconds=3,  # the smallest the config allows: fast takeovers
        )
        x = data["platform"]["x"]
        x["budgets"] = {
            "posts_per_day": self.settings.post_cap,
            "posts_per_month": self.settings.post_cap * 10,
            "reads_per_month": 10_000_000,
        }
        x["rate_limit_max_sleep_seconds"] = 2  # longer storms are waited out by skipping
        data["replies"] = {
            "per_conversation_cap": 3,
            "author_cooldown_seconds": 0,
            "reconcile_grace_seconds": 0,
        }
        # Every reply waits for the suite's operator (tests/chaos/operator.py): approvals are
        # decided while the daemons are killed, and must still go out once each.
        data["review"] = {"replies": "hold"}
        data["training"] = {
            "backend": "aws",
            "launcher": "external",
            "claim_idle_seconds": 5,
            "max_attempts": 3,
            "retrain_request": 0,
            "aws": self.aws_data,
        }
        data["logging"] = {"level": self.settings.log_level}
        self.config_data = data
        self.write_config(data)
        shutil.copytree(
            self.pretrained.parent.parent,
            self.volume / "checkpoints",
            ignore=shutil.ignore_patterns("runs", "request.json", "*.jsonl"),
        )
        (self.volume / "datasets").mkdir(parents=True)
        shutil.copyfile(SAMPLE_TIMELINE, self.volume / "datasets" / "poorrichard.jsonl")

    def write_config(self, data: dict[str, Any] | str) -> None:
        """Replace the config the way an editor's save does: a new file under the name."""
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.config_path)

    def cloud_exchange(self) -> Any:
        """The S3 side of spot training, as the launcher and the daemons see it."""
        from infra.aws.exchange import S3Exchange

        return S3Exchange(self.cloud.settings, self.account, self.cloud)

    @property
    def model_dir(self) -> Path:
        return self.volume / "checkpoints" / "char_rnn"

    # --- mentions --------------------------------------------------------------------
    def add_mention(self, number: int) -> Mention:
        """A fan's mention, or at the cycle's offsets one the rules say to leave alone."""
        fan = self.fans[number % len(self.fans)]
        bot_posts = self._bot_posts()
        offset = number % TRAFFIC_CYCLE
        emulator = self.emulator
        with self.mention_lock:
            if offset == OPT_OUT_OFFSET:
                post, kind = self._quitter_step(number)
            elif offset == NOT_SUMMONED_OFFSET and bot_posts:
                post = emulator.add_post(fan, f"nice one #{number}", reply_to=bot_posts[-1])
                kind = "not_summoned"
            elif offset == RETWEET_OFFSET and bot_posts:
                post, kind = emulator.add_retweet(fan, bot_posts[-1]), "retweet"
            elif offset == QUOTE_OFFSET and bot_posts:
                post, kind = emulator.add_quote(fan, bot_posts[-1], f"ha #{number}"), "quote"
            else:
                post = emulator.add_post(fan, f"@parrotbot tell me something, #{number}")
                kind = "summoned"
            # An opt-in is a command, not a question: it gets no reply either.
            eligible = kind == "summoned"
            mention = Mention(post.id, eligible=eligible, kind=_accounting_kind(kind))
            self.mentions.append(mention)
        return mention

    def _quitter_step(self, number: int) -> tuple[Any, str]:
        """The next quitter's next step: opt out, mention while out, opt back in, be answered."""
        which = (number // TRAFFIC_CYCLE) % len(self.quitters)
        step = QUITTER_STEPS[self.quitter_steps[which] % len(QUITTER_STEPS)]
        self.quitter_steps[which] += 1
        text = QUITTER_TEXTS[step].format(number=number)
        return self.emulator.add_post(self.quitters[which], text), step

    def _bot_posts(self) -> list[Any]:
        with self.emulator.lock:
            return [
                p for p in self.emulator.world.posts.values() if p.author_id == self.emulator.bot.id
            ]

    def bot_replies(self) -> list[tuple[str, str]]:
        """(reply id, what it answers) for every reply by the bot that X holds."""
        found = []
        for post in self._bot_posts():
            for target in post.references("replied_to"):
                found.append((post.id, target))
        return found

    def bot_reply_texts(self, mention_id: str) -> list[str]:
        """The texts of the bot's replies to `mention_id` that X holds."""
        bot = self.emulator.bot.id
        return [p.text for p in self.emulator.replies_to(mention_id) if p.author_id == bot]

    def bot_post_count(self) -> int:
        return len(self._bot_posts())

    def opted_out_now(self) -> list[str]:
        """The quitters whose last step left them opted out (what `status` must show)."""
        out = []
        for quitter, taken in zip(self.quitters, self.quitter_steps, strict=True):
            last = QUITTER_STEPS[(taken - 1) % len(QUITTER_STEPS)] if taken else None
            if last in ("opt_out", "opted_out"):
                out.append(quitter.username)
        return out

    # --- launchers -------------------------------------------------------------------
    def start_launcher(self, name: str) -> Launcher:
        launcher = Launcher(name, self.config_path, self.logs, env={}).start()
        self.launchers.append(launcher)
        return launcher

    # --- stop ----------------------------------------------------------------------------
    def stop(self) -> None:
        for launcher in self.launchers:
            launcher.kill()
        if self.pool is not None:
            self.pool.closed = True
            for daemon in self.pool.daemons:
                daemon.process.kill()
        self.emulator.stop()
        self.redis.stop()
        self.moto.stop()


def _accounting_kind(step: str) -> str:
    """An opt-in is counted with the opt-outs: a reply to either is a reply to a command."""
    return "opt_out" if step == "opt_in" else step
