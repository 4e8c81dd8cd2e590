"""The chaos run's one table (rich, for the terminal), results.json and docs/chaos.md's table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.table import Table

BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, measured, check) for every line of the table, in order; "" separates sections."""
    faults = results["faults"]
    table: list[tuple[str, str, str]] = []
    for kind, info in faults.items():
        verified = info.get("verified")
        check = "n/a" if verified is None else ("ok" if verified else "FAILED")
        table.append((f"fault: {kind}", f"{info['count']} ({info['detail']})", check))
    table.append(("", "", ""))
    counts = results["counts"]
    zero = results["must_be_zero"]
    table += [
        ("mentions received", str(counts["mentions"]), f"{counts['eligible']} eligible"),
        ("replies sent", str(counts["replies"]), f"{counts['bot_posts']} posts+replies on X"),
        ("accounted, not answered", _reasons(counts["accounted"]), "documented reasons"),
    ]
    for name, value in zero.items():
        table.append((name.replace("_", " "), str(value), "ok" if value == 0 else "FAILED"))
    table.append(("", "", ""))
    timing = results["timing"]
    table += [
        (
            "max recovery (fault -> healthy /healthz)",
            f"{timing['max_recovery_s']} s",
            f"worst: {timing['worst_recovery']}",
        ),
        ("median recovery after a leader kill", f"{timing['median_leader_recovery_s']} s", ""),
        (
            "max leader kill -> next reply",
            f"{timing['max_kill_to_reply_s']} s",
            "includes kills before the next reply and 429 storms",
        ),
        ("wall time", f"{timing['wall_s']} s", f"fault phase {timing['fault_phase_s']} s"),
    ]
    return table


def _reasons(accounted: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in accounted.items()) or "0"


def render(results: dict[str, Any]) -> Table:
    verdict = "PASSED" if results["passed"] else "FAILED"
    table = Table(title=f"parrotbot chaos suite: {verdict}", show_lines=False)
    for column in ("what", "measured", "check"):
        table.add_column(column)
    for what, measured, check in rows(results):
        if not what:
            table.add_section()
            continue
        style = "bold red" if check == "FAILED" else None
        table.add_row(what, measured, check, style=style)
    return table


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        f"Last run: {results['finished_at']}, {results['timing']['wall_s']} s of wall time on "
        f"{results['machine']}, seed {results['seed']}: **"
        f"{'passed' if results['passed'] else 'FAILED'}** (`{command}`, full numbers in "
        "[tests/chaos/results.json](../tests/chaos/results.json)).",
        "",
        "| what | measured | check |",
        "| --- | --- | --- |",
    ]
    for what, measured, check in rows(results):
        if what:
            lines.append(f"| {what} | {measured} | {check} |")
    return "\n".join(lines)


def write(results: dict[str, Any], results_path: Path, readme: Path, command: str) -> None:
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    text = readme.read_text()
    block = f"{BEGIN}\n{markdown(results, command)}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {BEGIN} ... {END} markers")
    readme.write_text(pattern.sub(lambda _m: block, text))
