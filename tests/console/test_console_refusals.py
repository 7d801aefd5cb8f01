"""Console input that must not get through: actions without the admin key, and user text shown as markup.
Also the recent-feedback page's version filter."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from adapters.runs import RunStore
from tests.browser import act
from tests.console.conftest import Gateway, log_in

SCRIPT = "<script>document.title='owned'</script>"


def test_an_action_without_the_admin_key_is_refused_and_changes_nothing(gateway: Gateway):
    moves = len(gateway.registry.history("bot"))
    runs = len(RunStore(gateway.settings.trainer_db).list("bot"))
    form = {"version": "2", "reason": "no key", "confirm": "yes", "csrf": "t", "seen": "production=1"}
    for credentials in ({}, {"cookies": {"flywheel_console_key": "not-the-key", "flywheel_console_csrf": "t"}},
                        {"headers": {"authorization": "Bearer not-the-key"}}):
        with httpx.Client(base_url=gateway.url, timeout=10, **credentials) as client:
            for action, data in (("promote", form), ("rollback", form), ("alias", {**form, "alias": "staff"}),
                                 ("train", form)):
                response = client.post(f"/console/adapters/bot/{action}", data=data)
                assert response.status_code == 401, (action, credentials)
                assert 'id="login"' in response.text
    assert gateway.registry.alias_version("bot", "production") == 1
    assert gateway.registry.alias_version("bot", "staff") is None
    assert len(gateway.registry.history("bot")) == moves
    assert len(RunStore(gateway.settings.trainer_db).list("bot")) == runs


def _rate(gateway: Gateway, adapter: str, prompt: str, comment: str) -> None:
    body = {"messages": [{"role": "user", "content": prompt}], "adapter": adapter}
    completion = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10).json()
    feedback = {"completion_id": completion["id"], "rating": "down", "comment": comment}
    assert httpx.post(f"{gateway.url}/v1/feedback", json=feedback, timeout=10).status_code < 300


def test_feedback_is_filtered_by_version_and_its_prompt_and_comment_are_escaped(page, gateway: Gateway):
    _rate(gateway, "bot@2", f"what is {SCRIPT}?", "<i>too</i> short")
    log_in(page)
    page.goto("/console/feedback?adapter=bot&version=2")
    rows = page.locator("table.feedback tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(f"what is {SCRIPT}?")  # the text itself, not markup
    expect(rows.first).to_contain_text("<i>too</i> short")
    expect(page.locator("table.feedback script, table.feedback i")).to_have_count(0)
    assert page.title() != "owned"
    page.goto("/console/feedback?adapter=bot&version=1")
    expect(rows).to_have_count(3)  # the module's ratings of production (v1), none of v2's
    expect(page.locator("table.feedback tbody td:nth-child(2)")).to_have_text(["v1"] * 3)
    page.goto("/console/feedback?adapter=bot")
    expect(rows).to_have_count(4)
    assert page.goto("/console/feedback?adapter=bot&version=two").status == 400
    expect(page.locator("#error")).to_contain_text("version must be a version number")


def test_an_alias_move_s_reason_is_shown_as_text(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/helper")
    act(page, "move-alias", f"trial {SCRIPT} <i>staff</i>", alias="staff", version="1")
    expect(page.locator("#flash")).to_have_text("helper: staff moved nothing -> v1")
    why = page.locator("table.events tbody tr").first.locator("td").nth(5)
    expect(why).to_have_text(f"trial {SCRIPT} <i>staff</i>")
    expect(page.locator("table.events script, table.events i")).to_have_count(0)
    page.goto("/console/adapters/helper/history")
    expect(page.locator("table.events tbody tr").first).to_contain_text("<i>staff</i>")
    assert page.title() != "owned"
