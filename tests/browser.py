"""Debian's headless chromium driven by Playwright, for the console tests (tests/console, fake engine) and the
console's end-to-end test against the real engine (tests/integration/test_console_engine.py).

Playwright's own browser download cannot be fetched here, so it is pointed at the system binary. Without it
these tests fail, naming the package to install: a console nobody tested in a browser is not tested.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """The system chromium, or a test failure that says how to install it (never a skip)."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if not found:
        pytest.fail("the console tests need Debian's chromium: `sudo apt-get install -y chromium` "
                    "(.ci/run installs it); Playwright's own browser download cannot be used here", pytrace=False)
    return found


@contextmanager
def chromium() -> Iterator:
    """A launched chromium until the block ends. Use it for one test module, not the session: between its calls
    Playwright's sync API marks its event loop as running on this thread, and every later test that calls
    `asyncio.run` would fail."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the console tests need Playwright's Python package: `pip install -e '.[dev]'`", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def fresh_page(browser, url: str) -> Iterator:
    """A page in a fresh browser context (no cookies) whose relative URLs go to `url`."""
    context = browser.new_context(base_url=url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def log_in(page, key: str) -> None:
    """Send `key` through the console's login form."""
    page.goto("/console/login")
    page.fill("input[name=key]", key)
    page.click("#login button[type=submit]")


def act(page, form: str, reason: str, **fields: str) -> None:
    """Fill an action form on the current page, give the reason, tick the confirmation and send it."""
    for name, value in fields.items():
        selector = f"#{form} [name={name}]"
        if page.locator(selector).evaluate("e => e.tagName") == "SELECT":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)
    page.fill(f"#{form} [name=reason]", reason)
    page.check(f"#{form} [name=confirm]")
    page.once("dialog", lambda dialog: dialog.accept())  # the script's confirmation
    page.click(f"#{form} button[type=submit]")
