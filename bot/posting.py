"""Scheduled posts: generate, post, record."""

from __future__ import annotations

import structlog

from bot.generation import GenerationService
from bot.platform.base import Platform, Tweet
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
    tweet = platform.post(generated.text)
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
