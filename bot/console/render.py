"""What every console page reads and how it is drawn: the live config, the state, the templates.

Kept apart from the app (`bot.console.app`, the routes and the guard) so the pages can use
it without importing the app that imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from bot.config import BotConfig
from bot.console.auth import Access
from bot.state import BotState

HERE = Path(__file__).parent
ConfigSource = Callable[[], BotConfig]


@dataclass(frozen=True)
class Call:
    """One request that passed the guard: what an endpoint needs to answer it."""

    request: Request
    form: dict[str, str]
    csrf: str

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)


Endpoint = Callable[[Call], Response]


class Console:
    """What every page reads: the config (live, from the daemon), the state, the templates."""

    def __init__(self, config: ConfigSource, state: BotState, access: Access) -> None:
        self.config_source = config
        self.state = state
        self.access = access
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.ChainableUndefined,  # a field status has not got renders empty
        )
        env.filters["timestamp"] = _timestamp
        self.templates = Jinja2Templates(env=env)

    @property
    def config(self) -> BotConfig:
        return self.config_source()

    def render(self, call: Call, name: str, **context: Any) -> Response:
        context = {"csrf": call.csrf, "account": self.config.account, **context}
        return self.templates.TemplateResponse(call.request, name, context)


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
