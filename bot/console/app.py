"""The console's Starlette app: the login, the guard every page passes, and the routes.

Endpoints are plain functions run in Starlette's thread pool, because every one of them
talks to Redis or the volume with blocking calls. The guard is a wrapper rather than a
middleware so that a POST's form is read once and handed to the endpoint with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.config import BotConfig
from bot.console import pages
from bot.console.auth import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, Access
from bot.console.render import HERE, Call, ConfigSource, Console, Endpoint
from bot.state import BotState

# Sent with every answer: no caching of pages that show the account, no framing (a page
# framed by another site could be clicked through), no referrer (the login URL holds the
# token), and only our own files as scripts, styles and form targets.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
}
NOT_LOGGED_IN = (
    "Not logged in: open the login link shown on the terminal at start, "
    "or /login?token=... with the token in data_dir/console.token.\n"
)


def build_app(config: ConfigSource | BotConfig, state: BotState, token: str) -> Starlette:
    """The console as an ASGI app; `config` may be a callable returning the live config."""
    source: ConfigSource = config if callable(config) else (lambda: config)  # type: ignore[assignment]
    console = Console(source, state, Access(token))

    def guard(endpoint: Endpoint, *, post: bool = False) -> Callable[[Request], Any]:
        async def guarded(request: Request) -> Response:
            cookie = request.cookies.get(COOKIE_NAME)
            if not console.access.session_ok(cookie):
                return _secured(PlainTextResponse(NOT_LOGGED_IN, status_code=401))
            assert cookie is not None
            form: dict[str, str] = {}
            if post:
                form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
                offered = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
                if not console.access.csrf_ok(cookie, offered):
                    return _secured(PlainTextResponse("missing or wrong CSRF token\n", 403))
            call = Call(request, form, console.access.csrf_token(cookie))
            return _secured(await run_in_threadpool(endpoint, call))

        return guarded

    def login(request: Request) -> Response:
        if not console.access.login_ok(request.query_params.get("token")):
            return _secured(PlainTextResponse("wrong or missing token\n", status_code=401))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE_NAME, console.access.new_session(), httponly=True, samesite="strict", path="/"
        )
        return _secured(response)

    view = pages.Pages(console)
    routes = [
        Route("/login", login),
        Route("/", guard(view.overview)),
        Route("/overview/fragment", guard(view.overview_fragment)),
        Route("/review", guard(view.review)),
        Route("/review/decide", guard(view.decide, post=True), methods=["POST"]),
        Route("/history", guard(view.history)),
        Route("/models", guard(view.models)),
        Route("/models/rollback", guard(view.rollback, post=True), methods=["POST"]),
        Route("/models/retrain", guard(view.retrain, post=True), methods=["POST"]),
        Route("/opt-outs", guard(view.opt_outs)),
        Route("/opt-outs/remove", guard(view.remove_opt_out, post=True), methods=["POST"]),
        # htmx and the style sheet: public code, no account data, so no login needed.
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
