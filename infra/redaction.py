"""Masking credentials in free text: one function for log lines, exception texts and Redis.

It lives here, below `bot/`, because the launcher stores trainer log tails in Redis and must
mask them the same way the daemon's log lines are masked (`infra/` never imports `bot/`).
`bot.logging` wraps it in a structlog processor; nothing here installs handlers or logs.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

# The X credentials, read from the environment only (bot.config.Secrets reads these names).
X_CREDENTIAL_ENV_VARS = (
    "CONSUMER_KEY",
    "CONSUMER_SECRET",
    "ACCESS_TOKEN",
    "ACCESS_TOKEN_SECRET",
    "BEARER_TOKEN",
)
# The X credentials plus what boto3 and a Redis URL may carry.
SECRET_ENV_VARS = (
    *X_CREDENTIAL_ENV_VARS,
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "REDIS_PASSWORD",
)
MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values (a "0", a "dev") would mask half of every line

# No leading \b: in `\r\nAuthorization` or `%26oauth_token%3D` the name follows a letter or digit.
# `%3D`/`%26` are `=`/`&` inside the percent-encoded OAuth signature base string.
_OAUTH_PARAM = re.compile(
    r"""(oauth_\w+(?:['"]?\s*[:=]\s*|%3D))("[^"]*"|'[^']*'|(?:(?!%26)[^\s&,;"'\\])+)""",
    re.IGNORECASE,
)
# oauthlib's debug lines and reprs show parameters as tuples: `('oauth_token', '1234-abc')`.
_OAUTH_TUPLE = re.compile(
    r"""(\(\s*(?:b?'oauth_\w+'|b?"oauth_\w+")\s*,\s*)(b?'[^']*'|b?"[^"]*")""", re.IGNORECASE
)
_AUTH_HEADER = re.compile(
    r"""((?:proxy-)?authorization['"]?\s*[:=]\s*)(b?'[^']*'|b?"[^"]*"|[^\r\n\\]+)""",
    re.IGNORECASE,
)
# A presigned S3 URL or a botocore debug dump carries the session token and the SigV4
# signature (query string `X-Amz-Security-Token=…`, header `X-Amz-Security-Token: …`).
_AMZ_TOKEN = re.compile(
    r"""(x-amz-security-token['"]?\s*(?:[:=]\s*|%3D))(b?'[^']*'|b?"[^"]*"|[^\s&,;'"\\]+)""",
    re.IGNORECASE,
)
# `Signature=` in a SigV4 Authorization header, `X-Amz-Signature=` in a presigned URL.
_SIGNATURE = re.compile(r"""((?:x-amz-)?signature\s*(?:=|%3D))[^\s&,;'"\\]+""", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9\-._~+/%]{8,}=*")
# Any scheme's user:password@ (redis://, rediss://, amqp://, https://): the password goes.
_URL_PASSWORD = re.compile(r"""\b([a-z][a-z0-9+.\-]*://[^\s:/@'"]*:)[^\s@'"]+@""", re.IGNORECASE)


def _quoted_mask(match: re.Match[str]) -> str:
    """Keep the key and the quote style so the masked text still reads like the original."""
    value = match.group(2)
    prefix = "b" if value[:1] == "b" and value[1:2] in ("'", '"') else ""
    quote_char = value[len(prefix)] if value[len(prefix) : len(prefix) + 1] in ("'", '"') else ""
    return f"{match.group(1)}{prefix}{quote_char}{MASK}{quote_char}"


def _env_secrets() -> tuple[str, ...]:
    """The current secret values, read at call time so rotated credentials are masked too.

    Eight dict lookups per call are cheap next to rendering a line. Percent-encoded forms are
    included because OAuth signs and sends values URL-encoded. Longest first, so a secret that
    contains another is masked whole.
    """
    values: set[str] = set()
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_SECRET_LEN:
            values.update((value, quote(value, safe="")))
    return tuple(sorted(values, key=len, reverse=True))


def redact(text: str) -> str:
    """Mask credentials in free text: env secret values, URL passwords, auth headers, OAuth
    params and tuples, AWS session tokens and SigV4 signatures.

    Safe to call on anything about to be shown or stored (exception texts, HTTP error bodies,
    a trainer's log tail). It over-masks rather than under-masks: a whole `Authorization`
    value goes, scheme included.
    """
    for secret in _env_secrets():
        text = text.replace(secret, MASK)
    text = _OAUTH_TUPLE.sub(_quoted_mask, text)
    text = _OAUTH_PARAM.sub(_quoted_mask, text)
    text = _AUTH_HEADER.sub(_quoted_mask, text)
    text = _AMZ_TOKEN.sub(_quoted_mask, text)
    text = _SIGNATURE.sub(rf"\g<1>{MASK}", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def redact_lines(lines: list[str]) -> list[str]:
    """`redact` each line of a log tail before it is stored or shown."""
    return [redact(line) for line in lines]
