"""An X API v2 emulator on loopback HTTP, for tweepy in tests (see `server.py`)."""

from tests.support.x_emulator.server import (
    CREATE,
    ME,
    MENTIONS,
    TIMELINE,
    USER_BY_NAME,
    Fault,
    Request,
    XEmulator,
)
from tests.support.x_emulator.world import Account, Post

__all__ = [
    "CREATE",
    "ME",
    "MENTIONS",
    "TIMELINE",
    "USER_BY_NAME",
    "Account",
    "Fault",
    "Post",
    "Request",
    "XEmulator",
]
