"""API keys: user keys for chat and feedback, an admin key for /admin.

The rule, route by route (tested in tests/gateway/test_keys.py):
- `/v1/*` (chat, models, feedback): a user key or the admin key once FLYWHEEL_API_KEYS is set; open otherwise.
- `/admin/*`: the admin key once FLYWHEEL_ADMIN_KEY is set. With user keys but no admin key, /admin refuses
  every request (403): it is never open while chat asks for a key. With no key at all: open (loopback only,
  `Settings.check_bind`).
- `/health`, `/ready`, `/metrics`: never a key, so probes and Prometheus scrapers work; keep them on a
  private network.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import Forbidden, Unauthorized


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(token: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key."""
    return token is not None and any(hmac.compare_digest(token.encode(), k.encode()) for k in keys)


async def require_user(request: Request) -> None:
    """Chat and feedback: any user key (or the admin key) when keys are configured."""
    settings = request.app.state.flywheel.settings
    if not settings.api_keys:
        return
    token = bearer_token(request)
    admin = [settings.admin_key] if settings.admin_key else []
    if not key_matches(token, settings.api_keys + admin):
        raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <key>`")


async def require_admin(request: Request) -> None:
    """Admin endpoints: the admin key when one is configured."""
    settings = request.app.state.flywheel.settings
    if settings.admin_disabled:
        raise Forbidden("/admin is disabled: FLYWHEEL_API_KEYS is set but FLYWHEEL_ADMIN_KEY is not; "
                        "set FLYWHEEL_ADMIN_KEY and send it as `Authorization: Bearer <admin key>`")
    if settings.admin_key and not key_matches(bearer_token(request), [settings.admin_key]):
        raise Unauthorized("admin endpoints need the admin key: send `Authorization: Bearer <admin key>`")
