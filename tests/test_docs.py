"""Documentation that is generated from the code must match the code."""

from __future__ import annotations

from pathlib import Path

from bot.config_reference import render

REPO = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), "run: parrotbot config-reference > docs/configuration.md"


def test_every_setting_of_the_offline_config_is_documented() -> None:
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
    offline = yaml.safe_load((REPO / "config" / "offline.yaml").read_text())
    for path in paths(offline):
        assert f"`{path}`" in reference, path
