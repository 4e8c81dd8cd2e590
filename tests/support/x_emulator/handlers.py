"""The emulator's endpoints: parameters checked as X checks them, answers shaped as X's.

Each handler gets the world (under the server's lock), the recorded request, the path
parameters and the calling account (None for app-only auth) and returns (status, body).
Error bodies follow X: problem objects (`type`, `title`, `detail`, `status`) for refusals,
and `errors` next to (or instead of) `data` for partial results such as an unknown user.
"""

from __future__ import annotations

from typing import Any

from tests.support.x_emulator.world import Account, World, decode_token, page

PROBLEMS = "https://api.x.com/2/problems"
REPLY_NOT_ALLOWED = (
    "Reply to this conversation is not allowed because you have not been mentioned or "
    "otherwise engaged by the author of the post you are replying to."
)
READ_ONLY_APP = (
    "Your client app is not configured with the appropriate oauth1 app permissions for this "
    "endpoint."
)
_TEXT_LIMIT = 280


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": kind, "status": status}


def auth_problem(status: int) -> dict[str, Any]:
    return problem(status, "Unauthorized", "Unauthorized")


def server_problem(status: int, detail: str | None = None) -> dict[str, Any]:
    """The problem body X sends with `status` (an injected fault's answer)."""
    titles = {400: "Invalid Request", 403: "Forbidden", 404: "Not Found Error", 429:
              "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
              503: "Service Unavailable"}  # fmt: skip
    title = titles.get(status, "Server Error")
    return problem(status, title, detail or title)


def invalid(parameter: str, value: str, message: str) -> tuple[int, dict[str, Any]]:
    return 400, {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": f"{PROBLEMS}/invalid-request",
    }


def _unsupported_auth() -> tuple[int, dict[str, Any]]:
    return 403, problem(
        403,
        "Unsupported Authentication",
        "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint. "
        "Supported authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
        f"{PROBLEMS}/unsupported-authentication",
    )


def _user_not_found(parameter: str, value: str) -> tuple[int, dict[str, Any]]:
    return 200, {
        "errors": [
            {
                "value": value,
                "detail": f"Could not find user with {parameter}: [{value}].",
                "title": "Not Found Error",
                "resource_type": "user",
                "parameter": parameter,
                "resource_id": value,
                "type": f"{PROBLEMS}/resource-not-found",
            }
        ]
    }


def handle(
    world: World, request: Any, params: dict[str, str], account: Account | None, *, read_only: bool
) -> tuple[int, dict[str, Any]]:
    endpoint = request.endpoint
    if endpoint == "GET /2/users/me":
        if account is None:
            return _unsupported_auth()
        return 200, {"data": world.render_user(account)}
    if endpoint == "GET /2/users/by/username/:username":
        found = world.account_named(params["username"])
        if found is None:
            return _user_not_found("username", params["username"])
        return 200, {"data": world.render_user(found)}
    if endpoint in ("GET /2/users/:id/tweets", "GET /2/users/:id/mentions"):
        return _posts(world, request, params["id"])
    if endpoint == "POST /2/tweets":
        if account is None:
            return _unsupported_auth()
        if read_only:
            return 403, problem(403, "Forbidden", READ_ONLY_APP, f"{PROBLEMS}/oauth1-permissions")
        return _create(world, request, account)
    return 404, problem(404, "Not Found Error", "no such endpoint")


def _posts(world: World, request: Any, user_id: str) -> tuple[int, dict[str, Any]]:
    query = request.query
    user = world.accounts.get(user_id)
    if user is None:
        return _user_not_found("id", user_id)
    raw_max = query.get("max_results", "10")
    if not raw_max.isdigit() or not 5 <= int(raw_max) <= 100:
        return invalid(
            "max_results",
            raw_max,
            f"The `max_results` query parameter value [{raw_max}] is not between 5 and 100",
        )
    for name in ("since_id", "until_id"):
        if name in query and not query[name].isdigit():
            return invalid(name, query[name], f"The `{name}` query parameter value is invalid")
    exclude = set(filter(None, query.get("exclude", "").split(",")))
    if not exclude <= {"retweets", "replies"}:
        return invalid("exclude", query["exclude"], "exclude must be retweets and/or replies")
    token = query.get("pagination_token")
    if token:
        try:
            decode_token(token)
        except ValueError:
            return invalid("pagination_token", token, "The pagination token is invalid")
    if request.endpoint.endswith("/mentions"):
        if exclude:
            return invalid("exclude", query["exclude"], "exclude is not a mentions parameter")
        posts = world.mention_feed(user)
    else:
        posts = world.timeline(user.id, exclude)
    chosen, next_token = page(
        posts,
        since_id=query.get("since_id"),
        until_id=query.get("until_id"),
        token=token,
        max_results=int(raw_max),
    )
    # X accepts the older `tweet.fields` and the newer `post.fields` spelling.
    fields = set(
        filter(None, (query.get("tweet.fields") or query.get("post.fields") or "").split(","))
    )
    meta: dict[str, Any] = {"result_count": len(chosen)}
    body: dict[str, Any] = {}
    if chosen:
        body["data"] = [world.render(post, fields) for post in chosen]
        meta.update(newest_id=chosen[0].id, oldest_id=chosen[-1].id)
        if "author_id" in query.get("expansions", "").split(","):
            authors = {post.author_id: world.accounts[post.author_id] for post in chosen}
            body["includes"] = {"users": [world.render_user(a) for a in authors.values()]}
    if next_token:
        meta["next_token"] = next_token
    body["meta"] = meta
    return 200, body


def _create(world: World, request: Any, account: Account) -> tuple[int, dict[str, Any]]:
    body = request.body if isinstance(request.body, dict) else {}
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return invalid("text", str(text), "text is required")
    if len(text) > _TEXT_LIMIT:
        return 403, problem(403, "Forbidden", "Your Tweet text is too long.")
    reply = body.get("reply") or {}
    target = None
    if reply:
        target_id = str(reply.get("in_reply_to_tweet_id", ""))
        target = world.posts.get(target_id)
        if target is None:
            return invalid(
                "reply.in_reply_to_tweet_id",
                target_id,
                "The post you are replying to was not found",
            )
        if not world.may_reply(account, target):
            return 403, problem(403, "Forbidden", REPLY_NOT_ALLOWED)
    post = world.add_post(account, text, reply_to=target)
    request.post_id = post.id
    return 201, {"data": {"id": post.id, "text": post.text, "edit_history_tweet_ids": [post.id]}}
