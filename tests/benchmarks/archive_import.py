"""Archive import benchmark: `parrotbot import-archive` on a generated 50,000-tweet X export.

    python -m tests.benchmarks.archive_import [--tweets 50000] [--before-sizes 2000,4000]

Writes the `archive_import` section of tests/benchmarks/results.json (keeping the others).
The archive is a zip holding `data/tweets.js` laid out as X lays it out (two-space indents,
' : ' separators, the fields a real export carries: tests/test_archive.py makes the entries).

- `import`: the real command in a child process, as an operator runs it (Python start-up,
  parse, merge into an empty dataset, the Redis counter), wall time.
- `parse`: `read_archive` alone, in this process, for the new code and for the code before the
  fix (`BEFORE`, read from git into a module of its own), on the same archives. The code before
  is quadratic (20 minutes at 50,000 tweets), so it runs only at the smaller sizes of
  `--before-sizes`; its time at the full size is extrapolated from the largest of them (n²),
  and labelled so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results.json"
REDIS_URL = "redis://127.0.0.1:6379/0"
# The last commit whose bot/archive.py counted line numbers from the start for every entry.
BEFORE = "a1be00003e3a13decd651b304174447881a8d686"
TARGET_SECONDS = 10.0


def write_archive(path: Path, tweets: int) -> int:
    """A deflated X export of `tweets` tweets at `path`; returns the tweets.js size in bytes."""
    from tests.bot.test_archive import generated, tweets_js

    text = tweets_js(generated(0, tweets)).encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", text)
        archive.writestr("data/manifest.js", "window.__THAR_CONFIG = {}")
    return len(text)


def module_before(work: Path) -> ModuleType:
    """bot/archive.py as it was at `BEFORE` (it imports only the standard library)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:bot/archive.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = work / "archive_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("archive_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_parse(read_archive: Any, archive: Path, tweets: int) -> float:
    started = time.perf_counter()
    records = read_archive(archive)
    seconds = time.perf_counter() - started
    assert len(records) == tweets, len(records)
    return round(seconds, 3)


def time_import(work: Path, archive: Path, tweets: int) -> dict[str, Any]:
    """The command as an operator runs it, in a child process, into an empty dataset."""
    account = f"bench-archive-{int(time.time())}"
    config = yaml.safe_load((REPO / "config" / "offline.yaml").read_text())
    config.update(account=account, redis_url=REDIS_URL, data_dir=str(work / "volume"))
    config["platform"]["local"]["seed_timelines_dir"] = str(REPO / "config" / "sample_timelines")
    config_path = work / "bot.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "bot.cli", "import-archive", str(archive)]
    command += ["--handle", "target", "--config", str(config_path)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"parrotbot:{account}:*"):
        client.delete(key)
    if done.returncode != 0 or f"imported {tweets} new of {tweets}" not in done.stdout:
        raise RuntimeError(f"import-archive failed: {done.stdout}{done.stderr}")
    return {"wall_seconds": round(seconds, 3), "output": done.stdout.strip()}


def run(tweets: int, before_sizes: list[int], work: Path) -> dict[str, Any]:
    from bot.archive import read_archive

    before = module_before(work)
    parse: dict[str, Any] = {}
    for size in [*before_sizes, tweets]:
        archive = work / f"archive-{size}.zip"
        write_archive(archive, size)
        row = {"new_seconds": time_parse(read_archive, archive, size)}
        if size in before_sizes:
            row["before_seconds"] = time_parse(before.read_archive, archive, size)
            row["speedup"] = round(row["before_seconds"] / row["new_seconds"], 1)
        parse[str(size)] = row
    largest = max(before_sizes)
    extrapolated = parse[str(largest)]["before_seconds"] * (tweets / largest) ** 2
    full = work / f"archive-{tweets}.zip"
    result = {
        "tweets": tweets,
        "tweets_js_bytes": write_archive(full, tweets),
        "zip_bytes": full.stat().st_size,
        "import": time_import(work, full, tweets),
        "parse": parse,
        "before_commit": BEFORE,
        "before_seconds_at_full_size_extrapolated": round(extrapolated, 1),
        "before_extrapolation_is": f"n² from {largest} tweets (the code before is quadratic)",
        "target_seconds": TARGET_SECONDS,
    }
    result["within_target"] = result["import"]["wall_seconds"] < TARGET_SECONDS
    return result


def main(argv: list[str] | None = None) -> int:
    from tests.benchmarks.run_benchmarks import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tweets", type=int, default=50_000)
    parser.add_argument("--before-sizes", default="2000,4000")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.before_sizes.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        section = run(args.tweets, sizes, Path(tmp))
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1 min)"
    section["measured_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section["machine"] = f"{machine()}; {load}"
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing["archive_import"] = section
    RESULTS.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(json.dumps(section, indent=2))
    return 0 if section["within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
