"""Scheduled posts: generate, post, record."""

from __future__ import annotations

import structlog

from bot.generation import GenerationService
from bot.platform.base import OutcomeUnknown, Platform, PlatformError, Tweet
from bot.state import BotState, PostedTweet

log = structlog.get_logger(__name__)


def post_scheduled(platform: Platform, state: BotState, service: GenerationService) -> Tweet | None:
    if service.current is None:
        log.info("post.skipped", reason="no_model_yet")
        return None
    # Never post what could not be recorded: without Redis the bot would lose track of
    # its own history (and, for replies, of what it already answered).
    if not state.ping():
        log.warning("post.skipped", reason="redis_unavailable")
        return None
    generated = service.generate_post()
    if generated is None:
        log.warning("post.skipped", reason="no_acceptable_text")
        return None
    try:
        tweet = platform.post(generated.text)
    except OutcomeUnknown as exc:
        # A scheduled post is not worth a duplicate: it is neither retried nor reconciled.
        log.warning("post.outcome_unknown", error=str(exc))
        return None
    except PlatformError as exc:
        log.warning("post.skipped", reason=type(exc).__name__, error=str(exc))
        return None
    state.record_posted(
        PostedTweet(
            tweet_id=tweet.id,
            text=tweet.text,
            kind="post",
            model_version=generated.model_version,
        )
    )
    log.info(
        "post.published",
        tweet_id=tweet.id,
        text=tweet.text,
        model_version=generated.model_version,
    )
    return tweet
