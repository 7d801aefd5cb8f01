"""The operator console end to end against the real engine: promote and roll back from the page in chromium, and
see the version vLLM serves change through the official openai client (issue 15). The console's other behaviour
is tested against the fake engine in tests/console/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests import browser
from tests.integration.conftest import ADMIN_KEY, Gateway

pytestmark = pytest.mark.integration
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def page(gateway: Gateway) -> Iterator:
    with browser.chromium() as chromium, browser.fresh_page(chromium, gateway.url) as page:
        yield page


def wait_served(gateway: Gateway, adapter: str, version: str) -> None:
    """Ask `adapter` until `version` answers: the console moved the alias, the gateway's engine follows."""
    client, moved = gateway.client(), time.time()
    while True:
        served = client.chat.completions.create(model=adapter, messages=HELLO, max_tokens=1, temperature=0).adapter
        if served == version:
            return
        assert time.time() - moved < 15, f"{adapter} still serves {served}, not {version}"
        time.sleep(0.1)


def test_promote_and_roll_back_from_the_console_change_what_the_engine_serves(
    page, gateway: Gateway, peft_adapters: list[Path]
):
    for folder in peft_adapters:
        result = gateway.cli("adapters", "register", "console", str(folder))
        assert result.returncode == 0, result.stdout + result.stderr
    assert gateway.cli("adapters", "promote", "console", "--version", "1").returncode == 0
    wait_served(gateway, "console", "console@1")

    assert page.goto("/console/adapters/console").status == 401  # the key is configured: the page asks for it
    browser.log_in(page, ADMIN_KEY)
    page.goto("/console/adapters/console")
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    expect(page.locator("#aliases")).to_contain_text("production: v1")

    browser.act(page, "promote", "v2 answers better", version="2")
    expect(page.locator("#flash")).to_have_text("console: production moved v1 -> v2")
    wait_served(gateway, "console", "console@2")

    browser.act(page, "rollback", "users complain")
    expect(page.locator("#flash")).to_have_text("console: production rolled back v2 -> v1")
    wait_served(gateway, "console", "console@1")
    expect(page.locator("table.events tbody tr").first).to_contain_text("users complain")
