"""What the console records in the audit log and the runs table: who acted (the operator's name from the login
form), and why a training run was queued."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from adapters.runs import REQUESTS_KEY, RunStore
from tests.browser import act
from tests.console.conftest import ADMIN_KEY, Gateway, log_in


def test_moves_are_recorded_as_the_operator_who_logged_in(page, gateway: Gateway):
    log_in(page, name="Ana <i>Lima</i>")  # printable, and shown escaped
    expect(page.locator("#operator")).to_have_text("Ana <i>Lima</i>")
    page.goto("/console/adapters/helper")
    act(page, "move-alias", "try it on staff", alias="staff", version="1")
    expect(page.locator("#flash")).to_have_text("helper: staff moved nothing -> v1")
    (event,) = [e for e in gateway.registry.history("helper", "staff")]
    assert event.actor == "console:Ana <i>Lima</i>"
    who = page.locator("table.events tbody tr").first.locator("td").nth(4)
    expect(who).to_have_text("console:Ana <i>Lima</i>")
    expect(page.locator("table.events i, header i")).to_have_count(0)

    page.click("header .logout button")  # logging in again without a name: the moves are the console's
    log_in(page)
    expect(page.locator("#operator")).to_have_count(0)
    page.goto("/console/adapters/helper")
    act(page, "move-alias", "back off staff", alias="staff", version="1")
    assert gateway.registry.history("helper", "staff")[-1].actor == "console"


def test_a_name_that_is_too_long_or_not_printable_is_refused_at_login(gateway: Gateway):
    for name, problem in (("x" * 41, "at most 40 characters"), ("ana\x07", "printable characters")):
        response = httpx.post(f"{gateway.url}/console/login", data={"key": ADMIN_KEY, "name": name}, timeout=10)
        assert response.status_code == 400 and problem in response.text
        assert "flywheel_console_key" not in response.cookies


def test_a_queued_run_keeps_who_asked_and_why_and_its_page_shows_it(page, gateway: Gateway):
    log_in(page, name="ana")
    page.goto("/console/adapters/bot")
    act(page, "train", "new <b>corrections</b> came in")
    expect(page.locator("#flash")).to_contain_text("is queued")
    act(page, "train", "and more")  # the same waiting run, asked for again
    page.goto("/console/runs?adapter=bot")
    page.locator("#runs tbody a").first.click()
    requests = page.locator("#facts .request")
    expect(requests).to_have_count(2)
    expect(requests.first).to_contain_text("by console:ana: new <b>corrections</b> came in")  # escaped
    expect(requests.last).to_contain_text("and more")
    expect(page.locator("#facts b")).to_have_count(0)
    (run,) = [r for r in RunStore(gateway.settings.trainer_db).list("bot") if r.status == "queued"]
    assert [r["reason"] for r in run.metrics["requests"]] == ["new <b>corrections</b> came in", "and more"]


def test_the_runs_store_keeps_each_request_s_reason_on_the_waiting_run(store_location):
    store = RunStore(store_location("trainer.db"))
    first = store.queue("bot", "console:ana", "new corrections")
    assert store.queue("bot", "admin-api") == first  # no reason given: nothing recorded
    assert store.queue("bot", "console:bo", "more") == first
    asked = store.get(first).metrics[REQUESTS_KEY]
    assert [(r["by"], r["reason"]) for r in asked] == [("console:ana", "new corrections"), ("console:bo", "more")]
    run_id = store.acquire("bot")  # the watcher starts it: the requests stay with the run
    assert run_id == first and store.get(run_id).metrics[REQUESTS_KEY] == asked
    assert store.queue("bot", "console:ana", "next one") != first
