"""Who may use the console: a token on disk, a signed session cookie, a CSRF token per session.

The token in `data_dir/console.token` is the one credential. Sessions and CSRF tokens are
HMACs keyed by it, so nothing about a session is stored: every daemon of the account that
shares the volume accepts the same cookie, a restart keeps sessions, and replacing the token
file (then restarting) ends every session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TOKEN_FILE_NAME = "console.token"
COOKIE_NAME = "parrotbot_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE_NAME


def load_or_create_token(data_dir: Path) -> str:
    """The console's token: reused if the file exists, else created with mode 0600.

    Created under a temporary name and hard-linked into place, so two daemons starting at
    once agree on one token and neither ever reads a half-written file.
    """
    path = token_path(data_dir)
    existing = _read_token(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
            log.info("console.token_created", path=str(path))
        except FileExistsError:
            pass  # another process won the race: its token is the one
    finally:
        temporary.unlink(missing_ok=True)
    token = _read_token(path)
    if token is None:
        raise OSError(f"{path}: the console token file is empty")
    return token


def _read_token(path: Path) -> str | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if mode & 0o077:
        # A token others on the host can read is a login for them: take their access away.
        os.chmod(path, 0o600)
        log.warning("console.token_permissions_tightened", path=str(path), was=oct(mode))
    return text or None


def _sign(token: str, purpose: str, value: str) -> str:
    message = f"{purpose}:{value}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


class Access:
    """Checks the login token, issues and checks session cookies and their CSRF tokens."""

    def __init__(self, token: str) -> None:
        self._token = token

    def login_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self._token.encode())

    def new_session(self) -> str:
        """A cookie value: a random id and its signature (nothing is stored server-side)."""
        session_id = secrets.token_hex(16)
        return f"{session_id}.{_sign(self._token, 'session', session_id)}"

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        session_id, signature = cookie.split(".", 1)
        expected = _sign(self._token, "session", session_id)
        return hmac.compare_digest(signature.encode(), expected.encode())

    def csrf_token(self, cookie: str) -> str:
        """Derived from the session, so a page of another site can neither read nor guess it."""
        return _sign(self._token, "csrf", cookie)

    def csrf_ok(self, cookie: str, offered: str | None) -> bool:
        if not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.csrf_token(cookie).encode())
