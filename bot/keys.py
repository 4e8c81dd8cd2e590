"""Every Redis key the bot uses, built in one place with one template style.

Several bots may share one Redis, so everything lives under `parrotbot:<account>:`.
Keeping the templates here is what stops two modules from spelling one key two ways.
The retrain queue and its job records are infra/'s, built in infra/keys.py (infra may not
import bot) under the `retrain` segment, which no key here uses.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "parrotbot"


@dataclass(frozen=True)
class Keys:
    account: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}:{self.account}"

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # The daemon allowed to post for this account (a lease: SET NX PX, renewed).
    @property
    def lease(self) -> str:
        return self._key("lease")

    # APScheduler's RedisJobStore: jobs (hash) and their next run times (sorted set).
    @property
    def scheduler_jobs(self) -> str:
        return self._key("scheduler", "jobs")

    @property
    def scheduler_run_times(self) -> str:
        return self._key("scheduler", "run_times")

    # since_id cursors: "mentions", or "timeline:<handle>".
    def cursor(self, name: str) -> str:
        return self._key("cursor", name)

    # One hash per mention: intent_at, then tweet_id/outcome once X (or the outbox) answered.
    def reply(self, mention_id: str) -> str:
        return self._key("reply", mention_id)

    # The review queue (bot/ledger/held.py): one hash per held item (its text, provenance,
    # state and decision), and sorted sets of the ids held, approved (waiting to be sent)
    # and decided (for export), each scored by when it got there.
    def review_item(self, item_id: str) -> str:
        return self._key("review", "item", item_id)

    @property
    def review_held(self) -> str:
        return self._key("review", "held")

    @property
    def review_approved(self) -> str:
        return self._key("review", "approved")

    @property
    def review_decided(self) -> str:
        return self._key("review", "decided")

    # Stream of everything the bot posted (posts and replies), newest last.
    @property
    def posted(self) -> str:
        return self._key("posted")

    # Hash per UTC day (YYYYMMDD): posts and replies recorded that day, by kind.
    def posted_count(self, day: str) -> str:
        return self._key("posted_count", day)

    # Epoch seconds of the last scheduled post: a new leader resumes the post cadence from it.
    @property
    def last_post(self) -> str:
        return self._key("post", "last")

    # Epoch seconds when posting was first scheduled: the cadence's start before any post.
    @property
    def post_schedule_start(self) -> str:
        return self._key("post", "schedule_start")

    # One hash per scheduled post slot (bot/ledger.py): intent (text, model_version,
    # intent_at, since_id, attempts), then tweet_id/outcome. The id is the cadence point.
    def post_slot(self, slot_id: str) -> str:
        return self._key("post", "slot", slot_id)

    # Hash: version, loaded_at and the manifest of the model serving now.
    @property
    def model_current(self) -> str:
        return self._key("model", "current")

    # Hash: version -> why it was refused; such versions are never retried.
    @property
    def model_bad(self) -> str:
        return self._key("model", "bad")

    # Integer: the highest training.retrain_request already turned into a training run.
    @property
    def retrain_request_handled(self) -> str:
        return self._key("training", "retrain_request_handled")

    # Integer: tweets scraped since the last training run started.
    @property
    def new_tweets_since_training(self) -> str:
        return self._key("training", "new_tweets")

    # List of ready posts, JSON {"version", "text"}; emptied when the serving version changes.
    @property
    def pool(self) -> str:
        return self._key("pool")

    # Hash: filter reason -> candidates rejected for it, plus "checked" and "accepted".
    @property
    def filter_counts(self) -> str:
        return self._key("filters", "counts")

    # Hash: the lease holder's instance id, started_at and heartbeat_at (status screen).
    @property
    def daemon(self) -> str:
        return self._key("daemon")

    # Hash: instance id -> JSON of that daemon's model worker (pid, host, version, rss_bytes,
    # requests, restarts, at), written by every daemon, leader or standby, each lease round.
    @property
    def workers(self) -> str:
        return self._key("workers")

    # Hash: handle -> JSON {"at", "new_tweets"} of that target's last scrape.
    @property
    def last_scrape(self) -> str:
        return self._key("scrape", "last")

    # Hash: handle -> user id, resolved once.
    @property
    def user_ids(self) -> str:
        return self._key("users")

    # Hash: id and handle of the bot's own account on X, from get_me once.
    @property
    def me(self) -> str:
        return self._key("x", "me")

    # Epoch seconds before which an X endpoint must not be called (its 429 reset).
    def rate_limit(self, endpoint: str) -> str:
        return self._key("x", "ratelimit", endpoint)

    # Integer counters of posts+replies or reads in one period ("day:20260301", "month:202603").
    def budget(self, kind: str, period: str) -> str:
        return self._key("budget", kind, period)

    # Hash for one UTC day: calls per kind and the estimated spend in micro-dollars.
    def spend(self, day: str) -> str:
        return self._key("spend", day)

    # Integer: replies the bot made (or is making) in one conversation.
    def conversation_replies(self, conversation_id: str) -> str:
        return self._key("conversation", conversation_id, "replies")

    # Set while an author is in cooldown after the bot answered them.
    def author_cooldown(self, author_id: str) -> str:
        return self._key("cooldown", author_id)

    # Hash: author id -> JSON {"handle", "at", "mention_id"} of authors who opted out of replies.
    @property
    def opted_out(self) -> str:
        return self._key("replies", "opted_out")
