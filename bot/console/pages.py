"""What each page shows and what each button does.

Each action calls the function the CLI's command calls (`bot.review.Review`,
`bot.hotload.rollback`, `bot.retrain.request_training`, `bot.rules.remove_opt_out`), so the
console and the CLI cannot drift apart and the console adds no path of its own to Redis.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import redis
import structlog
from starlette.responses import Response

from bot.console import charts, history, versions
from bot.logging import redact

if TYPE_CHECKING:
    from bot.console.render import Call, Console
    from bot.ledger.held import HeldItem
    from bot.review import Review

log = structlog.get_logger(__name__)

IN_FLIGHT = ("queued", "launching", "running")
# The review page shows this many held items (oldest first) and recent decisions.
REVIEW_PAGE_SIZE = 100
RECENT_DECISIONS = 20


class Pages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._reviewer: Review | None = None

    # --- overview ---------------------------------------------------------------------
    def overview(self, call: Call) -> Response:
        return self.console.render(call, "overview.html", page="overview", **self._status())

    def overview_fragment(self, call: Call) -> Response:
        """The part of the overview htmx polls for and swaps in place."""
        return self.console.render(call, "_overview.html", **self._status())

    def _status(self) -> dict[str, Any]:
        from bot.status import collect

        config = self.console.config
        try:
            status = collect(config, self.console.state)
        except redis.RedisError as exc:
            return {"status": None, "error": f"Redis does not answer: {redact(str(exc))}"}
        daemon = status.get("daemon", {})
        holder = daemon.get("lease_holder")
        uptime = daemon.get("uptime_s")
        jobs = status.get("training", [])
        return {
            "status": status,
            "error": None,
            "leader_since": status["at"] - uptime if uptime is not None else None,
            "standbys": sorted(set(status.get("workers", {})) - {holder}),
            "jobs_in_flight": [job for job in jobs if job.get("state") in IN_FLIGHT],
            "acceptance": _acceptance(status.get("filters", {})),
            "config_json": redact(json.dumps(config.model_dump(mode="json"), indent=2)),
        }

    # --- review -----------------------------------------------------------------------
    def review(self, call: Call, notice: str | None = None, problem: str | None = None) -> Response:
        review = self._review()
        return self.console.render(
            call,
            "review.html",
            page="review",
            items=review.held(0, REVIEW_PAGE_SIZE),
            held_count=review.ledger.held_count(),
            recent=review.ledger.recent_decisions(RECENT_DECISIONS),
            mode="hold" if self._holds_replies() else "auto",
            cost_of=self._cost,
            notice=notice,
            problem=problem,
        )

    def decide(self, call: Call) -> Response:
        """Approve (with the text as edited in the form) or reject one held item.

        From htmx (`HX-Request`) the answer is the item alone, swapped in place; from a plain
        form post, the whole page with a notice.
        """
        from bot.review import ReviewRefused

        item_id, action = call.form.get("id", ""), call.form.get("action", "")
        try:
            item, message = _apply_decision(self._review(), item_id, action, call.form)
        except ReviewRefused as exc:
            log.info("console.review_refused", item=item_id, action=action, error=str(exc))
            if not _from_htmx(call):
                return self.review(call, problem=f"{item_id}: {exc}")
            current = self._review().ledger.get(item_id)
            if current is None:
                return self.console.render(
                    call, "_review_gone.html", item_id=item_id, problem=str(exc)
                )
            return self._item(call, current, problem=str(exc), draft=call.form.get("text"))
        log.info("console.review_decided", item=item_id, action=action, edited=item.edited)
        if not _from_htmx(call):
            return self.review(call, notice=f"{item_id} {message}")
        return self._item(call, item, notice=message)

    def _item(self, call: Call, item: HeldItem, **context: Any) -> Response:
        return self.console.render(
            call, "_review_item.html", item=item, cost_of=self._cost, **context
        )

    def _holds_replies(self) -> bool:
        config = self.console.config
        return config.review.holds_replies(config.platform.kind)

    def _cost(self, text: str, kind: str = "reply") -> str:
        """What sending `text` (a reply or a post) is estimated to cost, from the price card
        (one holding a URL is billed as a post with a URL)."""
        from bot.filters import find_urls

        config = self.console.config
        if config.platform.kind != "x":
            return f"nothing: platform {config.platform.kind} is not X"
        prices = config.platform.x.prices
        if find_urls(text):
            return f"${prices.post_with_url:.3f} (platform.x.prices.post_with_url: it holds a URL)"
        price = prices.post if kind == "post" else prices.reply
        return f"${price:.3f} (platform.x.prices.{kind})"

    def _review(self) -> Review:
        """One Review per config: its edit filter (the novelty index) is built once."""
        from bot.review import Review

        config = self.console.config
        if self._reviewer is None or self._reviewer.config is not config:
            self._reviewer = Review(config, self.console.state)
        return self._reviewer

    # --- history ----------------------------------------------------------------------
    def history(self, call: Call) -> Response:
        query = call.query("q")[:200]
        cursor = history.valid_cursor(call.query("cursor"))
        page = history.read_page(self.console.state, cursor=cursor, query=query)
        return self.console.render(
            call,
            "history.html",
            page="history",
            history=page,
            query=query,
            first=cursor is None,
            total=history.total(self.console.state),
            on_x=self.console.config.platform.kind == "x",  # ids link to the posts on X
        )

    # --- models -----------------------------------------------------------------------
    def models(self, call: Call, notice: str | None = None, problem: str | None = None) -> Response:
        model_dir = self.console.config.model_dir
        rows = versions.version_rows(model_dir, self.console.state)
        names = [row.name for row in rows]
        default = next((r.name for r in rows if r.serving), None) or next(
            (r.name for r in rows if r.latest), names[0] if names else None
        )
        chosen = call.query("version") if call.query("version") in names else default
        compare = call.query("compare") if call.query("compare") in names else None
        shown = [name for name in (chosen, compare) if name]
        curves = {name: versions.loss_series(model_dir / name) for name in shown}
        bounds = charts.bounds_of(series for series, _ in curves.values())
        panels = [
            {
                "version": name,
                "manifest": next(r.manifest for r in rows if r.name == name),
                "svg": charts.loss_svg(curves[name][0], bounds, title=f"loss of {name}")
                if bounds and any(curves[name][0].values())
                else None,
                "problem": curves[name][1],
            }
            for name in shown
        ]
        return self.console.render(
            call,
            "models.html",
            page="models",
            model_dir=model_dir,
            rows=rows,
            chosen=chosen,
            compare=compare,
            panels=panels,
            notice=notice,
            problem=problem,
        )

    def rollback(self, call: Call) -> Response:
        """Two steps: without `confirm=yes` it asks; with it, it rolls back."""
        from bot.hotload import RollbackError
        from bot.hotload import rollback as roll_back

        model_dir = self.console.config.model_dir
        if call.form.get("confirm") != "yes":
            rows = versions.version_rows(model_dir, self.console.state)
            return self.console.render(
                call,
                "rollback.html",
                page="models",
                latest=next((r.name for r in rows if r.latest), None),
                target=versions.rollback_target(rows),
            )
        try:
            old, new = roll_back(model_dir, self.console.state)
        except RollbackError as exc:
            return self.models(call, problem=str(exc))
        log.info("console.rolled_back", from_version=old, to_version=new)
        return self.models(call, notice=f"LATEST now names {new} (was {old}, recorded as bad)")

    def retrain(self, call: Call) -> Response:
        from bot.retrain import request_training
        from infra.retrain_queue import RetrainQueue

        config = self.console.config
        state = self.console.state
        queue = RetrainQueue(state.redis, config.account)
        requested = request_training(config, state, queue, "console", "console retrain request")
        if requested is None:
            return self.models(call, problem="nothing to train on yet: no dataset for the targets")
        verb = "merged into waiting job" if requested.coalesced else "queued job"
        return self.models(call, notice=f"{verb} {requested.job.id}")

    # --- opt-outs ---------------------------------------------------------------------
    def opt_outs(self, call: Call, notice: str | None = None) -> Response:
        from bot.rules import opted_out_authors

        authors = sorted(
            opted_out_authors(self.console.state).items(), key=lambda item: item[1].get("at", 0)
        )
        return self.console.render(
            call, "opt_outs.html", page="opt-outs", authors=authors, notice=notice, now=time.time()
        )

    def remove_opt_out(self, call: Call) -> Response:
        from bot.rules import remove_opt_out

        handle = call.form.get("handle", "").removeprefix("@")
        if not handle:
            return self.opt_outs(call, notice="no handle given")
        removed = remove_opt_out(self.console.state, handle)
        if not removed:
            return self.opt_outs(call, notice=f"@{handle} has not opted out")
        log.info("console.opt_out_removed", handle=handle, authors=removed)
        return self.opt_outs(call, notice=f"@{handle} opted back in: the bot may answer them again")


def _apply_decision(
    review: Review, item_id: str, action: str, form: dict[str, str]
) -> tuple[HeldItem, str]:
    """The decided item and what to tell the operator; ReviewRefused when nothing changed."""
    from bot.review import ReviewRefused

    if action == "approve":
        item = review.approve(item_id, text=form.get("text"), by="console")
        edited = " with your edit" if item.edited else ""
        when = "in the next post slot" if item.kind == "post" else "at its next mentions poll"
        return item, f"approved{edited}: the daemon sends it {when}"
    if action == "reject":
        item = review.reject(item_id, reason=form.get("reason", "").strip(), by="console")
        gone = "never posted" if item.kind == "post" else "the mention stays unanswered"
        return item, f"rejected: {gone}"
    raise ReviewRefused(f"unknown action {action!r}: approve or reject")


def _from_htmx(call: Call) -> bool:
    return call.request.headers.get("hx-request") == "true"


def _acceptance(counts: dict[str, int]) -> str:
    checked = counts.get("checked", 0)
    if not checked:
        return "nothing generated yet"
    accepted = counts.get("accepted", 0)
    return f"{accepted}/{checked} accepted ({accepted / checked:.0%})"
