"""A process that posts through the real X platform as fast as it can (budgets test).

`python -m tests.support.x_post_worker CONFIG COUNT GO_FILE`: builds the platform, prints `ready`,
waits for GO_FILE to exist (so several workers start together), tries COUNT posts and prints
`{"posted": n, "refused": m}`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bot.config import load_config
from bot.logging import configure_logging
from bot.platform.base import BudgetExhausted
from bot.platform.x import XPlatform
from bot.state import BotState, connect


def main(config_path: str, count: int, go_file: str) -> int:
    configure_logging("WARNING")  # logs to stderr; stdout carries only the protocol
    config = load_config(config_path)
    platform = XPlatform(config, BotState(connect(config), config.account))
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.002)
    posted = refused = 0
    for n in range(count):
        try:
            platform.post(f"worker {os.getpid()} post {n}")
            posted += 1
        except BudgetExhausted:
            refused += 1
    print(json.dumps({"posted": posted, "refused": refused}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
