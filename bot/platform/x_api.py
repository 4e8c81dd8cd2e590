"""The one request path to X: budget first, then the call, then our exceptions.

Every X call the bot makes goes through `XApi.read` or `XApi.write`:

- the budget is reserved in Redis before the call (`bot.platform.budgets`), given back when X
  refused the call or a read returned fewer posts than reserved;
- the rate-limit gate and the timeout sit in the session (`x_session.XSession`);
- reads retry 5xx and network errors with exponential backoff and jitter (tenacity); writes
  never retry: a write whose answer was lost raises `OutcomeUnknown` and is reconciled by the
  caller, because repeating it could post twice;
- tweepy's and requests' exceptions become the small tree in `bot.platform.base`, with
  messages that say what to fix and never carry a credential.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import structlog
import tweepy
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from bot.config import PlatformConfig, Secrets
from bot.logging import redact
from bot.platform.base import (
    AuthError,
    Forbidden,
    NotFound,
    NotPermitted,
    OutcomeUnknown,
    PlatformError,
    RateLimited,
    ReplyNotAllowed,
    ServerError,
)
from bot.platform.budgets import Budgets, Spend
from bot.platform.ratelimits import DEFAULT_WAIT_SECONDS, RateLimitGate
from bot.platform.x_session import XSession
from bot.state import BotState

log = structlog.get_logger(__name__)

T = TypeVar("T")
USER_CREDENTIALS = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET")
# Errors worth another try for a read: X had a hiccup, or the network did.
_TRANSIENT = (tweepy.TwitterServerError, requests.ConnectionError, requests.Timeout)
_PERMISSION_HINT = (
    "check the app's permissions in the X developer portal (Read and Write), then regenerate "
    "the access token and secret so they carry the new permissions"
)


class XApi:
    """A tweepy `Client` on our session, with budgets, retries and exception mapping."""

    def __init__(self, platform: PlatformConfig, secrets: Secrets, state: BotState) -> None:
        """Builds objects only: no request is made until the first call."""
        x = platform.x
        has_user_context = all(getattr(secrets, name.lower()) for name in USER_CREDENTIALS)
        if not has_user_context and not (platform.dry_run and secrets.bearer_token):
            missing = [name for name in USER_CREDENTIALS if not getattr(secrets, name.lower())]
            raise AuthError(
                "X credentials missing from the environment: "
                f"{', '.join(missing)} (a dry run can read with BEARER_TOKEN alone)"
            )
        self.has_user_context = has_user_context
        # App-only auth (a bearer token) is enough for public reads and keeps the user's
        # own rate limits for what needs them.
        self.read_user_auth = secrets.bearer_token is None
        self.read_attempts = x.read_attempts
        self.gate = RateLimitGate(
            state.redis, state.keys, max_sleep_seconds=x.rate_limit_max_sleep_seconds
        )
        self.budgets = Budgets(state.redis, state.keys, x.budgets, x.prices)
        self.client = tweepy.Client(
            bearer_token=secrets.bearer_token,
            consumer_key=secrets.consumer_key,
            consumer_secret=secrets.consumer_secret,
            access_token=secrets.access_token,
            access_token_secret=secrets.access_token_secret,
            return_type=dict,
            wait_on_rate_limit=False,
        )
        self.client.session = XSession(
            platform.api_base_url,
            timeout=(x.connect_timeout_seconds, x.read_timeout_seconds),
            gate=self.gate,
        )

    def read(
        self,
        call: Callable[[int], dict[str, Any]],
        *,
        kind: Spend,
        want: int = 1,
        minimum: int = 1,
    ) -> dict[str, Any]:
        """Run a read billed as `kind`; `call` gets how many results it may ask for (the
        budget's grant)."""
        reservation = self.budgets.reserve(kind, want, minimum=minimum)
        used = 0
        try:
            retrying = Retrying(
                retry=retry_if_exception_type(_TRANSIENT),
                wait=wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5),
                stop=stop_after_attempt(self.read_attempts),
                before_sleep=_log_retry,
                reraise=True,
            )
            try:
                body = retrying(call, reservation.amount)
            except Exception as exc:
                raise translate(exc, write=False) from exc
            used = _results(body)
            return body
        finally:
            self.budgets.refund(reservation, reservation.amount - used)

    def write(self, kind: Spend, call: Callable[[], T], *, reply: bool = False) -> T:
        """Run a post or reply once, budget counted first; see the module docstring. A reply
        may be billed as a post with a URL, so `reply` says which it is."""
        reservation = self.budgets.reserve(kind)
        try:
            result = call()
        except Exception as exc:
            error = translate(exc, write=True, reply=reply)
            if not isinstance(error, OutcomeUnknown):
                self.budgets.refund(reservation)  # X refused it: nothing was posted
            raise error from exc
        log.info("x.spend_today", kind=str(kind), **self.budgets.spend_today())
        return result


def translate(exc: Exception, *, write: bool, reply: bool = False) -> PlatformError:
    """tweepy's and requests' exceptions as ours (see `bot.platform.base`)."""
    if isinstance(exc, PlatformError):
        return exc  # the rate-limit gate refused before sending
    if isinstance(exc, tweepy.HTTPException):
        return _http_error(exc, write=write, reply=reply)
    if isinstance(exc, requests.RequestException):
        detail = redact(f"{type(exc).__name__}: {exc}")
        if write and not _surely_unsent(exc):
            return OutcomeUnknown(f"the answer to a write was lost ({detail})")
        return ServerError(f"X could not be reached ({detail})")
    if isinstance(exc, ValueError):  # a body that is not JSON
        if write:
            return OutcomeUnknown(f"the answer to a write was unreadable ({exc})")
        return ServerError(f"X sent an unreadable answer ({exc})")
    raise exc


def _http_error(exc: tweepy.HTTPException, *, write: bool, reply: bool) -> PlatformError:
    status = exc.response.status_code
    detail = redact("; ".join(str(m) for m in exc.api_messages) or exc.response.reason or "")
    if isinstance(exc, tweepy.TooManyRequests):
        reset = exc.reset_time or time.time() + DEFAULT_WAIT_SECONDS
        return RateLimited(f"X rate limit reached (429): {detail}", reset_at=float(reset))
    if isinstance(exc, tweepy.Unauthorized):
        return AuthError(
            f"X rejected the credentials (401 {detail}): check CONSUMER_KEY, CONSUMER_SECRET, "
            "ACCESS_TOKEN and ACCESS_TOKEN_SECRET (or BEARER_TOKEN)"
        )
    if isinstance(exc, tweepy.Forbidden):
        lowered = detail.lower()
        if reply and ("reply" in lowered or "mentioned" in lowered):
            return ReplyNotAllowed(f"X does not allow this reply (403): {detail}")
        if "permission" in lowered or "oauth1" in lowered:
            return NotPermitted(f"X refused the call (403 {detail}): {_PERMISSION_HINT}")
        return Forbidden(f"X refused the call (403): {detail}")
    if isinstance(exc, tweepy.NotFound):
        return NotFound(f"not found on X (404): {detail}")
    if isinstance(exc, tweepy.TwitterServerError):
        if write:
            return OutcomeUnknown(f"X answered a write with {status}: {detail}")
        return ServerError(f"X failed ({status}): {detail}")
    return PlatformError(f"X refused the request ({status}): {detail}")


def _log_retry(attempt: RetryCallState) -> None:
    error = attempt.outcome.exception() if attempt.outcome else None
    log.warning(
        "x.read_retry",
        attempt=attempt.attempt_number,
        sleep_seconds=round(attempt.next_action.sleep, 3) if attempt.next_action else None,
        error=redact(f"{type(error).__name__}: {error}"),
    )


def _surely_unsent(exc: requests.RequestException) -> bool:
    """A connection that never opened carried no request: the write did not happen."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = repr(exc)
    return isinstance(exc, requests.ConnectionError) and (
        "NewConnectionError" in text or "Connection refused" in text
    )


def _results(body: dict[str, Any]) -> int:
    """How many posts or users a read returned (what X bills as reads)."""
    data = body.get("data")
    if isinstance(data, list):
        return len(data)
    return 1 if data else 0
