"""The console's browser session: the admin key in a cookie, a CSRF token, and one-shot flash messages.

The rule for who may use the console is /admin's (`server.auth`): the admin key once one is configured,
refused outright when user keys are set without one, open with no key at all (loopback only). A browser
cannot send a Bearer header, so after login the key rides in an HttpOnly, SameSite=Strict cookie scoped
to /console. Every form POST also carries a CSRF token that must equal the `flywheel_console_csrf`
cookie (double submit): another site can make the browser post, but cannot read the cookie to copy it.

The login form also takes the operator's name (optional), kept in a cookie beside the key and recorded as the
actor of every move made from the console (`console:<name>`): the audit log says who. It is what the operator
typed, not an identity the gateway checks, like the admin API's `x-flywheel-actor` header.
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
OPERATOR_COOKIE = "flywheel_console_operator"
PATH = "/console"
ACTOR = "console"  # the audit log's actor for the console's moves; `console:<name>` once the operator gave one
MAX_OPERATOR = 40  # characters: console:<name> stays within the 64 the admin API keeps of x-flywheel-actor
SESSION_S = 12 * 3600


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


def operator_problem(name: str) -> str | None:
    """Why `name` cannot be an operator's name (None: it can): at most MAX_OPERATOR printable characters."""
    if len(name) > MAX_OPERATOR:
        return f"your name can have at most {MAX_OPERATOR} characters"
    if not name.isprintable():
        return "your name can only have printable characters"
    return None


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def log_in(request: Request, response: Response, key: str, operator: str = "") -> None:
    """Keep the key (and the operator's name, if given) for 12 hours; Secure as well over HTTPS."""
    secure = request.url.scheme == "https"
    _cookie(response, KEY_COOKIE, key, max_age=SESSION_S, secure=secure)
    if operator:
        _cookie(response, OPERATOR_COOKIE, _encode(operator), max_age=SESSION_S, secure=secure)
    else:
        response.delete_cookie(OPERATOR_COOKIE, path=PATH)


def operator(request: Request) -> str:
    """The name the operator logged in with, or "" (none given, or a cookie that is not one we set)."""
    value = request.cookies.get(OPERATOR_COOKIE)
    if not value:
        return ""
    try:
        name = base64.urlsafe_b64decode(value.encode()).decode()
    except ValueError:
        return ""
    return "" if operator_problem(name) else name.strip()


def actor(request: Request) -> str:
    """Who the audit log names for a move made from this browser: `console:<name>`, or `console`."""
    name = operator(request)
    return f"{ACTOR}:{name}" if name else ACTOR


def log_out(response: Response) -> None:
    response.delete_cookie(KEY_COOKIE, path=PATH, httponly=True, samesite="strict")
    response.delete_cookie(OPERATOR_COOKIE, path=PATH, httponly=True, samesite="strict")


def flash(response: Response, kind: str, text: str) -> None:
    """Show `text` ("ok" or "error") on the next page the browser loads."""
    value = _encode(json.dumps({"kind": kind, "text": text[:2000]}))
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
