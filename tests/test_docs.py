"""Documentation that is generated from the code must match the code."""

from __future__ import annotations

from pathlib import Path

from bot.config_reference import render

REPO = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), "run: parrotbot config-reference > docs/configuration.md"


def test_every_setting_of_the_shipped_configs_is_documented() -> None:
    import yaml

    def paths(data: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in data.items():
            if isinstance(value, dict):
                found += paths(value, f"{prefix}{key}.")
            else:
                found.append(f"{prefix}{key}")
        return found

    reference = render()
    for name in ("offline.yaml", "x.example.yaml"):
        config = yaml.safe_load((REPO / "config" / name).read_text())
        for path in paths(config):
            assert f"`{path}`" in reference, f"{name}: {path}"


def test_optional_sections_are_documented_setting_by_setting() -> None:
    reference = render()
    assert "| `training.aws` | mapping or null | absent |" in reference
    assert "`training.aws.launch_retry.give_up_seconds`" in reference


TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
SOURCE_DIRS = ("bot", "infra", "training")


def _what_you_see() -> list[str]:
    """The backticked fragments in the first column of every "what you see" table."""
    import re

    fragments: list[str] = []
    in_table = False
    for line in TROUBLESHOOTING.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "what you see":
            in_table = True
        elif in_table and not set(first) <= {"-", " "}:
            fragments += re.findall(r"`([^`]+)`", first)
    return fragments


def test_troubleshooting_quotes_the_code() -> None:
    """Every event name and message fragment the page quotes is still in the source."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in SOURCE_DIRS
        for path in sorted((REPO / folder).rglob("*"))
        if path.suffix in (".py", ".sh") and path.is_file()
    )
    fragments = _what_you_see()
    assert len(fragments) > 80, "the tables' format changed: the test reads no fragments"
    missing = [fragment for fragment in fragments if fragment not in source]
    assert not missing, f"docs/troubleshooting.md quotes text the code no longer has: {missing}"


def test_troubleshooting_names_real_commands() -> None:
    import re

    import typer.main

    from bot.cli import app

    commands = typer.main.get_command(app).commands
    named = re.findall(
        r"`parrotbot ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", TROUBLESHOOTING.read_text()
    )
    assert named
    for command, sub in named:
        assert command in commands, f"parrotbot {command}"
        if command == "infra" and sub:
            assert sub in commands["infra"].commands, f"parrotbot infra {sub}"
