"""The console's browser session: the admin key in a cookie, a CSRF token, and one-shot flash messages.

The rule for who may use the console is /admin's (`server.auth`): the admin key once one is configured,
refused outright when user keys are set without one, open with no key at all (loopback only). A browser
cannot send a Bearer header, so after login the key rides in an HttpOnly, SameSite=Strict cookie scoped
to /console. Every form POST also carries a CSRF token that must equal the `flywheel_console_csrf`
cookie (double submit): another site can make the browser post, but cannot read the cookie to copy it.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets

from fastapi import Request
from fastapi.responses import Response

from flywheel.settings import Settings
from server.auth import bearer_token, key_matches

KEY_COOKIE = "flywheel_console_key"
CSRF_COOKIE = "flywheel_console_csrf"
FLASH_COOKIE = "flywheel_console_flash"
PATH = "/console"


class NeedsLogin(Exception):
    """The request has no valid admin key: the console answers with its login form."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class ConsoleDisabled(Exception):
    """User keys are set without an admin key: /admin and the console refuse everything."""


class BadCsrf(Exception):
    """A form POST whose CSRF token does not match the cookie's."""


def check_key(settings: Settings, key: str | None) -> None:
    """Raise unless `key` opens the console under /admin's rule (no key needed when none is configured)."""
    if settings.admin_disabled:
        raise ConsoleDisabled("the console is disabled: FLYWHEEL_API_KEYS is set but FLYWHEEL_ADMIN_KEY is not")
    if settings.admin_key and not key_matches(key, [settings.admin_key]):
        raise NeedsLogin("wrong admin key" if key else "")


def require_console(request: Request) -> None:
    """Dependency of every console page and action except login: the key from the cookie, or a Bearer header."""
    check_key(request.app.state.flywheel.settings, request.cookies.get(KEY_COOKIE) or bearer_token(request))


def csrf_token(request: Request) -> str:
    """The token forms carry: the cookie's, or a new one that `finish` sets as the cookie."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, token: str) -> None:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not token or not hmac.compare_digest(cookie.encode(), token.encode()):
        raise BadCsrf("the form's security token did not match; reload the page and try again")


def _cookie(response: Response, name: str, value: str, max_age: int | None = None, secure: bool = False) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PATH, httponly=True, samesite="strict", secure=secure)


def finish(request: Request, response: Response) -> Response:
    """Set the CSRF cookie a page handed out, and drop a flash message once shown."""
    if getattr(request.state, "new_csrf", None):
        _cookie(response, CSRF_COOKIE, request.state.new_csrf)
    if getattr(request.state, "flash_shown", False):
        response.delete_cookie(FLASH_COOKIE, path=PATH)
    return response


def log_in(request: Request, response: Response, key: str) -> None:
    """Keep the key for 12 hours; Secure as well when the console is served over HTTPS."""
    _cookie(response, KEY_COOKIE, key, max_age=12 * 3600, secure=request.url.scheme == "https")


def log_out(response: Response) -> None:
    response.delete_cookie(KEY_COOKIE, path=PATH, httponly=True, samesite="strict")


def flash(response: Response, kind: str, text: str) -> None:
    """Show `text` ("ok" or "error") on the next page the browser loads."""
    value = base64.urlsafe_b64encode(json.dumps({"kind": kind, "text": text[:2000]}).encode()).decode()
    _cookie(response, FLASH_COOKIE, value, max_age=60)


def take_flash(request: Request) -> dict | None:
    """The pending flash message, if any; it is cleared by `finish`."""
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return None
    request.state.flash_shown = True
    try:
        message = json.loads(base64.urlsafe_b64decode(value.encode()))
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get("kind") in ("ok", "error") else None
