"""The history pages through the posted stream a page at a time, and searches in bounds."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from bot.console import history
from bot.state import BotState
from tests.support.browser import seed_history


def test_pages_walk_the_whole_stream_newest_first_without_overlap(state: BotState) -> None:
    seed_history(state, 120)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = history.read_page(state, cursor=cursor, size=50)
        pages += 1
        assert page.scanned == len(page.items) <= 50  # a page reads only itself
        seen += [item.tweet_id for item in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [str(10_000_000 + i) for i in reversed(range(120))]


def test_an_item_carries_kind_time_text_ids_and_version(state: BotState) -> None:
    seed_history(state, 3, version="v-42")
    reply, post = history.read_page(state, size=2).items
    assert (reply.kind, reply.tweet_id, reply.mention_id) == ("reply", "10000002", "20000002")
    assert (post.kind, post.mention_id, post.model_version) == ("post", None, "v-42")
    assert post.text == "post number 1 about thrift"
    assert reply.at >= post.at


def test_ten_thousand_items_are_read_one_page_at_a_time(state: BotState) -> None:
    seed_history(state, 10_000)
    assert history.total(state) >= 10_000
    first = history.read_page(state)
    assert len(first.items) == history.PAGE_SIZE and first.scanned == history.PAGE_SIZE
    deep = history.read_page(state, cursor=first.next_cursor)
    assert deep.items[0].tweet_id == str(10_000_000 + 9_999 - history.PAGE_SIZE)


def test_a_search_stops_at_its_scan_limit_and_goes_on_from_its_cursor(state: BotState) -> None:
    seed_history(state, 10_000)
    oldest = "post number 0 about thrift"
    page = history.read_page(state, query="NUMBER 0 ABOUT")  # any case
    assert page.items == [] and page.scan_capped
    assert page.scanned == history.SEARCH_SCAN_LIMIT
    rest = history.read_page(state, cursor=page.next_cursor, query="number 0 about")
    assert [item.text for item in rest.items] == [oldest]
    assert rest.next_cursor is None and not rest.scan_capped


def test_a_search_fills_a_page_then_hands_back_a_cursor(state: BotState) -> None:
    seed_history(state, 300)
    page = history.read_page(state, query="reply", size=10)
    assert len(page.items) == 10 and all(item.kind == "reply" for item in page.items)
    assert page.scanned < 40  # it stopped reading once the page was full
    more = history.read_page(state, query="reply", size=10, cursor=page.next_cursor)
    assert {i.tweet_id for i in page.items}.isdisjoint(i.tweet_id for i in more.items)


def test_a_search_folds_case_in_redis_for_ascii_and_in_python_for_the_rest(
    state: BotState,
) -> None:
    from bot.state import PostedTweet

    seed_history(state, 30)
    state.record_posted(PostedTweet("1", "Un Café en Été", kind="post", model_version="v"))
    seed_history(state, 30)
    for query in ("CAFÉ EN ÉTÉ", "café", "un caf", "EN"):  # the first two scan in Python
        page = history.read_page(state, query=query)
        assert [item.text for item in page.items] == ["Un Café en Été"], query
        assert page.scanned == 61 and page.next_cursor is None
    assert history.read_page(state, query="thrift", size=5).scanned == 5


def test_the_history_page_links_older_pages_and_searches(
    logged_in: TestClient, state: BotState
) -> None:
    seed_history(state, 120)
    first = logged_in.get("/history").text
    assert first.count('<tr class="item') == 50
    older = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert older
    second = logged_in.get(older.group(1).replace("&amp;", "&")).text
    assert "post number 69 about" in second and "post number 70 " not in second
    found = logged_in.get("/history", params={"q": "number 7 about"}).text
    assert found.count('<tr class="item') == 1 and "post number 7 about thrift" in found
    assert "1 matches in 120 items read" in found
    none = logged_in.get("/history", params={"q": "<script>nothing</script>"}).text
    assert "nothing matches" in none and "<script>nothing" not in none  # escaped
    bad_cursor = logged_in.get("/history", params={"cursor": "x); DROP"})
    assert bad_cursor.status_code == 200 and bad_cursor.text.count('<tr class="item') == 50


def test_on_x_the_history_links_each_post_and_mention_to_x(
    x_logged_in: TestClient, state: BotState
) -> None:
    seed_history(state, 3)
    page = x_logged_in.get("/history").text
    assert '<a href="https://x.com/i/web/status/10000002" rel="noreferrer">' in page
    assert '<a href="https://x.com/i/web/status/20000002" rel="noreferrer">' in page  # its mention
