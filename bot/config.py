"""The operator's YAML config, parsed into frozen pydantic models.

The config is the operator's only control surface (targets, schedule, model, retrain
requests), so a mistake in it must come back as one line per problem naming the file,
the line and the field path, never as a traceback. Secrets never live here: they come
from the environment only (see `Secrets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infra.redaction import X_CREDENTIAL_ENV_VARS
from infra.settings import AwsSettings
from training.char_rnn_config import CharRNNConfig
from training.cleaning import CleaningOptions
from training.gpt2_config import GPT2Settings

HANDLE_PATTERN = r"^[A-Za-z0-9_]{1,15}$"
ACCOUNT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SECRET_ENV_VARS = X_CREDENTIAL_ENV_VARS  # named once, in infra.redaction (the launcher needs them)


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one readable line per fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    """Unknown keys are typos: rejecting them beats silently ignoring a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    handle: Annotated[str, Field(pattern=HANDLE_PATTERN)]
    weight: Annotated[float, Field(gt=0)] = 1.0


class LocalPlatformConfig(_Strict):
    seed_timelines_dir: Path | None = Field(
        default=None,
        description="Timelines copied into data_dir/local/timelines when missing there "
        "(the offline default ships a sample corpus this way).",
    )


Cap = Annotated[int, Field(ge=0)] | None
Price = Annotated[float, Field(ge=0)]


class XBudgetsConfig(_Strict):
    """Caps per period, counted in Redis before each call; null means no cap.

    Posts and replies share the post caps (X counts both as posts). Reads count the posts
    (and users) a read returns, as X bills them. Set them from your X plan.
    """

    posts_per_day: Cap = 50
    posts_per_month: Cap = 1500
    reads_per_month: Cap = 10_000


class XPricesConfig(_Strict):
    """Pay-per-use prices in US dollars, for the estimated spend (X's price card, April 2026).

    Each call is counted under one of these kinds; status, /metrics and the console show the
    spend by kind. Set them from your X plan when its prices differ.
    """

    post: Price = Field(default=0.015, description="A post without a URL.")
    post_with_url: Price = Field(default=0.20, description="A post or reply that holds a URL.")
    reply: Price = Field(
        default=0.010, description="A reply to a mention of the bot (a summoned reply)."
    )
    read: Price = Field(default=0.005, description="Per post read of another account (a target).")
    own_read: Price = Field(
        default=0.001, description="Per post read of the bot's own posts or its mentions."
    )
    user_read: Price = Field(default=0.010, description="Per user looked up (the bot, a target).")


class XPlatformConfig(_Strict):
    exclude: list[Literal["retweets", "replies"]] = Field(
        default=["retweets"], description="What scraping leaves out of targets' timelines."
    )
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    read_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 20.0
    read_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        default=4, description="Tries per read on 5xx and network errors (writes: one)."
    )
    rate_limit_max_sleep_seconds: Annotated[float, Field(ge=0, le=900)] = Field(
        default=5.0,
        description="A rate-limit reset closer than this is slept out; a later one skips the call.",
    )
    find_reply_pages: Annotated[int, Field(ge=1, le=32)] = Field(
        default=5, description="Pages of the bot's own timeline searched to reconcile a reply."
    )
    budgets: XBudgetsConfig = XBudgetsConfig()
    prices: XPricesConfig = XPricesConfig()

    @field_validator("exclude")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each of retweets, replies at most once")
        return value


def _is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    from ipaddress import ip_address
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # a malformed [::1 bracket
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class PlatformConfig(_Strict):
    kind: Literal["local", "x"] = "local"
    api_base_url: str = "https://api.x.com"
    handle: Annotated[str, Field(pattern=HANDLE_PATTERN)] = "parrotbot"
    dry_run: bool = Field(
        default=False,
        description="x only: read from X, write posts and replies to the local outbox.",
    )
    local: LocalPlatformConfig = LocalPlatformConfig()
    x: XPlatformConfig = XPlatformConfig()

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://api.x.com")
        if value.lower().startswith("http://") and not _is_loopback_url(value):
            # Every request carries the OAuth signature or the bearer token.
            raise ValueError(
                "must use https; plain http is allowed only for a loopback host "
                "(127.0.0.1, ::1, localhost), such as a local X emulator"
            )
        return value.rstrip("/")


PositiveSeconds = Annotated[int, Field(gt=0)]


class ScheduleConfig(_Strict):
    post_every_seconds: PositiveSeconds | None = 3600
    post_cron: str | None = Field(
        default=None, description="Crontab line (`m h dom mon dow`); overrides post_every_seconds."
    )
    mentions_every_seconds: PositiveSeconds = 60
    scrape_every_seconds: PositiveSeconds = 3600
    checkpoint_poll_seconds: PositiveSeconds = 10
    config_poll_seconds: PositiveSeconds = 5
    pool_refill_seconds: PositiveSeconds = 30
    post_reconcile_grace_seconds: Annotated[float, Field(ge=0)] = Field(
        default=30,
        description="A scheduled post whose outcome is unknown is looked for on X only after "
        "this long; its slot waits meanwhile.",
    )
    lease_ttl_seconds: Annotated[int, Field(ge=3)] = Field(
        default=15,
        description="How soon a standby daemon takes over from a dead one. Each Redis call "
        "times out after a tenth of it (one retry), so a hung call ends before the lease does.",
    )
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like UTC)") from None
        return value

    @field_validator("post_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"not a valid crontab expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _some_post_schedule(self) -> ScheduleConfig:
        if self.post_every_seconds is None and self.post_cron is None:
            raise ValueError("set post_every_seconds or post_cron")
        return self


class ModelConfig(_Strict):
    """Which family serves and trains; each family's settings are the trainer's own classes."""

    kind: Literal["char_rnn", "gpt2"] = "char_rnn"
    char_rnn: CharRNNConfig = CharRNNConfig()
    gpt2: GPT2Settings = GPT2Settings()

    def hyperparameters(self) -> dict[str, Any]:
        """The settings of the selected family, as the trainer's request carries them."""
        return getattr(self, self.kind).to_dict()


class GenerationConfig(_Strict):
    """How texts are sampled (training.sampling applies them the same way to both families)."""

    temperature: Annotated[float, Field(gt=0, le=5)] = Field(
        default=0.8, description="Below 1 sharpens the distribution (safer), above 1 flattens it."
    )
    top_k: Annotated[int, Field(ge=0, le=50_000)] = Field(
        default=0, description="Sample only among the k likeliest tokens; 0 is off, 1 is greedy."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.95,
        description="Nucleus sampling: only the likeliest tokens holding this much probability; "
        "1 is off. 0.95 drops the long tail that produces garbled words.",
    )
    repetition_penalty: Annotated[float, Field(ge=1, le=3)] = Field(
        default=1.0,
        description="Divides the odds of tokens already in the prompt or text (CTRL's penalty); "
        "1 is off. Keep it mild (1.1-1.3), and milder for the char-RNN, whose tokens are "
        "characters.",
    )
    max_length: Annotated[int, Field(ge=1, le=280)] = 280
    max_new_tokens: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        default=None,
        description="At most this many sampled tokens per text (GPT-2 tokens, char-RNN "
        "characters); null: only max_length bounds a text.",
    )
    attempts: Annotated[int, Field(ge=1, le=64)] = Field(
        default=8, description="Candidates sampled (as one batch) for a reply or an unpooled post."
    )
    pool_size: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=20, description="Filtered posts kept ready in Redis; 0 generates at post time."
    )
    pool_batch_size: Annotated[int, Field(ge=1, le=256)] = 16

    def sampling(self) -> dict[str, Any]:
        """The keyword arguments of `TextModel.generate` these settings stand for."""
        return {
            "max_length": self.max_length,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }


class FilterConfig(_Strict):
    allow_mentions: bool = Field(
        default=False, description="Allow @handles in generated text (X forbids unsolicited ones)."
    )
    allow_urls: bool = False
    blocklist_words: list[str] = Field(default_factory=list, description="Case-insensitive words.")
    blocklist_patterns: list[str] = Field(
        default_factory=list, description="Regular expressions (case-insensitive)."
    )
    novelty_ngram_words: Annotated[int, Field(ge=3, le=20)] = Field(
        default=6,
        description="A candidate sharing this many consecutive words with a training tweet "
        "(or containing a whole shorter one) is a copy.",
    )
    recent_posts_checked: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=200, description="The bot's own last posts a candidate must not repeat."
    )

    @field_validator("blocklist_patterns")
    @classmethod
    def _compilable(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex ({exc})") from None
        return patterns


class TrainingConfig(_Strict):
    backend: Literal["local", "aws"] = "local"
    retrain_request: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Bump this number to ask the daemon for one retrain."
    )
    auto_after_new_tweets: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Retrain after this many new tweets; absent: never by itself."
    )
    launcher: Literal["auto", "inline", "external"] = Field(
        default="auto",
        description="Who consumes the retrain queue: a thread in the daemon (inline), a "
        "`parrotbot launcher` process (external), or auto: inline for local, external for aws.",
    )
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    claim_idle_seconds: Annotated[float, Field(ge=1)] = Field(
        default=60.0, description="How long a dead launcher's job waits before another takes it."
    )
    aws: AwsSettings | None = None

    @model_validator(mode="after")
    def _aws_needs_settings(self) -> TrainingConfig:
        if self.backend == "aws" and self.aws is None:
            raise ValueError("backend aws needs a training.aws section (bucket, ami_id, …)")
        return self

    @property
    def inline_launcher(self) -> bool:
        """Whether the daemon consumes the retrain queue itself (see `launcher`)."""
        if self.launcher == "auto":
            return self.backend == "local"
        return self.launcher == "inline"


class HealthConfig(_Strict):
    enabled: bool = True
    host: str = Field(
        default="127.0.0.1", description="Loopback only: /metrics is not for the world."
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9464, description="/healthz and /metrics; 0 picks a free port (logged)."
    )

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        import ipaddress

        if value == "localhost":
            return value
        try:
            if ipaddress.ip_address(value).is_loopback:
                return value
        except ValueError:
            pass
        raise ValueError("must be a loopback address (127.0.0.1, ::1 or localhost)")


class ConsoleConfig(_Strict):
    """The operator's web console (docs/console.md): served by every daemon, on loopback."""

    enabled: bool = Field(
        default=True,
        description="Serve the console from the daemon; `parrotbot console` serves it regardless.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Loopback only, as health.host: reach it from elsewhere by an SSH tunnel.",
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9465, description="The console's port; 0 picks a free port (logged)."
    )

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        return HealthConfig._loopback(value)  # one rule for both servers, defined there


class RepliesConfig(_Strict):
    """Limits that keep the bot polite and out of bot-to-bot loops (X's automation rules)."""

    per_conversation_cap: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Most replies the bot makes in one conversation."
    )
    author_cooldown_seconds: Annotated[int, Field(ge=0)] = Field(
        default=60,
        description="After answering someone, their mentions in this window are skipped.",
    )
    reconcile_grace_seconds: Annotated[float, Field(ge=0)] = Field(
        default=30,
        description="A reply whose outcome is unknown is looked for on X only after this long.",
    )
    opt_out_words: Annotated[list[str], Field(min_length=1)] = Field(
        default=["stop", "unsubscribe", "opt out"],
        description="A mention with one of these right after the bot's @handle (any case) opts "
        "its author out: the bot never replies to them again until they opt back in.",
    )
    opt_in_words: Annotated[list[str], Field(min_length=1)] = Field(
        default=["start"],
        description="The same form with one of these opts an author back in.",
    )
    max_attempts: Annotated[int, Field(ge=1)] = Field(
        default=5,
        description="Polls a mention may fail for a reason of its own (no acceptable text, X "
        "refusing it) before it is recorded as gave_up and the cursor moves past it.",
    )
    keep_days: Annotated[int, Field(ge=1)] = Field(
        default=60, description="Reply records (one per mention) expire after this many days."
    )

    @field_validator("opt_out_words", "opt_in_words")
    @classmethod
    def _words_are_words(cls, words: list[str]) -> list[str]:
        cleaned = [" ".join(word.lower().split()) for word in words]
        if not all(cleaned):
            raise ValueError("words must not be empty")
        return cleaned


ReviewMode = Literal["auto", "hold"]


class ReviewConfig(_Strict):
    """What waits for the operator's approval before it is posted (`parrotbot review`).

    X's developer guidelines (2026) ask an app whose AI writes and posts replies to get X's
    prior approval for it: until it has that, replies on X are held for a person to read.
    """

    replies: ReviewMode | None = Field(
        default=None,
        description="hold: each generated reply waits for `parrotbot review approve` (or the "
        "console); auto: replies go out as generated. Unset: hold on platform.kind x (set auto "
        "once X has approved the app for AI replies), auto elsewhere.",
    )
    posts: ReviewMode = Field(
        default="auto",
        description="hold: each scheduled post is chosen by the operator from generated "
        "candidates (`parrotbot review approve`); auto: posts go out as generated.",
    )
    post_candidates: Annotated[int, Field(ge=1, le=20)] = Field(
        default=3,
        description="With posts on hold: how many post candidates may wait for a decision; "
        "each post firing tops them up by one and posts the oldest approved one.",
    )
    expire_hours: Annotated[float, Field(gt=0)] = Field(
        default=12,
        description="A held reply or post candidate not decided within this long expires unsent.",
    )
    keep_days: Annotated[int, Field(ge=1)] = Field(
        default=90,
        description="Decided items (approved, edited, rejected, expired) are kept this long "
        "for `parrotbot review export`.",
    )

    def holds_replies(self, platform_kind: str) -> bool:
        """Whether replies wait for approval on this platform (the one place the default is
        resolved)."""
        mode = self.replies if self.replies is not None else _default_reply_review(platform_kind)
        return mode == "hold"


def _default_reply_review(platform_kind: str) -> ReviewMode:
    return "hold" if platform_kind == "x" else "auto"


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class RedisConfig(_Strict):
    require_durable: bool = Field(
        default=False,
        description="Refuse to start (exit 2) unless Redis shows AOF on and maxmemory-policy "
        "noeviction; false: warn and start.",
    )


class BotConfig(_Strict):
    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)] = Field(
        description="Names this bot's Redis namespace: parrotbot:<account>:…"
    )
    redis_url: str | None = Field(
        default=None, description="Absent: an embedded Redis persisted under data_dir/redis."
    )
    data_dir: Path = Field(description="The volume: datasets/, checkpoints/, local/, logs/.")
    platform: PlatformConfig = PlatformConfig()
    targets: Annotated[list[Target], Field(min_length=1)]
    schedule: ScheduleConfig = ScheduleConfig()
    model: ModelConfig = ModelConfig()
    generation: GenerationConfig = GenerationConfig()
    filters: FilterConfig = FilterConfig()
    training: TrainingConfig = TrainingConfig()
    logging: LoggingConfig = LoggingConfig()
    redis: RedisConfig = RedisConfig()
    health: HealthConfig = HealthConfig()
    console: ConsoleConfig = ConsoleConfig()
    replies: RepliesConfig = RepliesConfig()
    review: ReviewConfig = ReviewConfig()
    cleaning: CleaningOptions = CleaningOptions()

    @field_validator("targets", mode="before")
    @classmethod
    def _handles_as_targets(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"handle": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("redis_url")
    @classmethod
    def _parsable_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from redis.connection import parse_url

        try:
            parse_url(value)
        except ValueError as exc:
            raise ValueError(
                f"not a Redis URL ({exc}); expected redis://host:port/db, "
                "rediss://… or unix:///path"
            ) from None
        return value

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "checkpoints" / self.model.kind


class Secrets(BaseModel):
    """Credentials from the environment; `repr` never shows their values."""

    model_config = ConfigDict(frozen=True)

    consumer_key: str | None = Field(default=None, repr=False)
    consumer_secret: str | None = Field(default=None, repr=False)
    access_token: str | None = Field(default=None, repr=False)
    access_token_secret: str | None = Field(default=None, repr=False)
    bearer_token: str | None = Field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Secrets:
        return cls(**{name.lower(): environ.get(name) or None for name in SECRET_ENV_VARS})


def load_config(path: Path | str) -> BotConfig:
    """Read, validate and resolve a config file; raise ConfigError listing every problem.

    Relative paths in the file are resolved against the file's own folder, so the
    daemon behaves the same whatever directory it is started from.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    return parse_config(text, source=path)


def parse_config(text: str, *, source: Path) -> BotConfig:
    try:
        data = yaml.safe_load(text)
        lines = _line_numbers(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping of settings at the top level"])
    try:
        config = BotConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error, source, lines) for error in exc.errors()]) from None
    return _resolve_paths(config, source.parent)


def _describe(error: Any, source: Path, lines: dict[tuple[Any, ...], int]) -> str:
    location = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    field_path = ".".join(str(part) for part in location) or "(top level)"
    line = _nearest_line(location, lines)
    where = f"{source}:{line}" if line else str(source)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown setting (check the spelling; see the configuration reference)"
    return f"{where}: {field_path}: {message}"


def _nearest_line(location: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the field, or of its closest parent when the field itself is missing."""
    for end in range(len(location), -1, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return None


def _line_numbers(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    if node is None:
        return {}
    found = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[(*path, key.value)] = key.start_mark.line + 1
            found.update(_line_numbers(value, (*path, key.value)))
            found[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_line_numbers(item, (*path, index)))
    return found


def _resolve_paths(config: BotConfig, base: Path) -> BotConfig:
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else (base / path).resolve()

    local = config.platform.local
    seed_dir = local.seed_timelines_dir
    platform = config.platform.model_copy(
        update={
            "local": local.model_copy(
                update={"seed_timelines_dir": resolve(seed_dir) if seed_dir else None}
            )
        }
    )
    return config.model_copy(update={"data_dir": resolve(config.data_dir), "platform": platform})
