"""Links between the docs and into the code must lead somewhere: a moved module breaks this."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target): relative targets only; web links and in-page anchors are not files here.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    targets = [m.group(1).split("#", 1)[0] for m in LINK.finditer(page.read_text())]
    return [t for t in targets if t and not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_the_architecture_page_links_every_bot_module() -> None:
    page = REPO / "docs" / "architecture.md"
    linked = {(page.parent / t).resolve() for t in relative_links(page)}
    skip = ("__init__.py", "__main__.py")
    modules = [p for p in sorted((REPO / "bot").glob("*.py")) if p.name not in skip]
    unlinked = [p.name for p in modules if p.resolve() not in linked]
    assert not unlinked, f"docs/architecture.md does not say where these fit: {unlinked}"
