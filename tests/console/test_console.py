"""The operator console in a real headless chromium against the real gateway (fake engine)."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import expect

from feedback.reader import FeedbackReader
from tests.browser import act
from tests.console.conftest import ADMIN_KEY, CANARY_MIN_FEEDBACK, PLAN, REJECTED_REASON, Gateway, log_in, rate
from trainer.config import PromotionPolicy
from trainer.promotion import review_canary


def points(polyline) -> list[tuple[float, float]]:
    """An SVG polyline's points."""
    return [tuple(float(n) for n in p.split(",")) for p in polyline.get_attribute("points").split()]


def test_a_page_without_the_key_asks_for_it_and_a_wrong_key_is_refused(page, gateway: Gateway):
    response = page.goto("/console/adapters/bot")
    assert response.status == 401
    expect(page.locator("#login input[name=key]")).to_be_visible()
    expect(page.locator("#versions")).to_have_count(0)
    log_in(page, "not-the-key")
    expect(page.locator("#login-error")).to_have_text("wrong admin key")
    assert httpx.get(f"{gateway.url}/console", timeout=10).status_code == 401  # no cookie, no Bearer: the form
    ok = httpx.get(f"{gateway.url}/console", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert ok.status_code == 200 and 'id="adapters"' in ok.text


def test_the_key_cookie_is_http_only_and_strict_and_logout_clears_it(page):
    log_in(page)
    expect(page.locator("#adapters")).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "flywheel_console_key"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("header .logout button")
    expect(page.locator("#login input[name=key]")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "flywheel_console_key"]
    assert page.goto("/console").status == 401


def test_adapters_versions_gate_and_feedback_plot(page):
    log_in(page)
    rows = page.locator("#adapters tbody tr")
    expect(rows).to_have_count(3)
    page.fill("input[name=q]", "bo")
    page.click(".search button")
    expect(rows).to_have_count(1)
    page.click("#adapters >> text=bot")
    expect(page.locator("#aliases")).to_contain_text("production: v1")
    expect(page.locator("#aliases")).to_contain_text("candidate: v2")
    expect(page.locator("#promote input[name=version]")).to_have_attribute("placeholder", "default: the candidate (v2)")
    versions = page.locator("#versions tbody tr")
    expect(versions).to_have_count(3)
    expect(page.locator("#versions tr[data-version='3'] .status")).to_have_text("rejected")
    expect(page.locator("#versions tr[data-version='2']")).to_contain_text("0.62 / 0.58 / 0.55")
    expect(page.locator("#versions tr[data-version='2']")).to_contain_text("run 1")
    page.click("#versions >> text=v3")
    expect(page.locator(".check.failed")).to_contain_text(REJECTED_REASON)
    expect(page.locator("[data-metric=candidate_correctness]")).to_have_text("0.62")
    page.goto("/console/adapters/bot/versions/1?unit=day")
    expect(page.locator("#plot")).to_be_visible()
    assert page.locator("#plot rect.volume").count() >= 1
    expect(page.locator("#plot circle.up-rate title").last).to_contain_text("2 up, 1 down, 1 corrections")
    feedback = page.locator("table.feedback tbody tr")
    expect(feedback).to_have_count(3)
    expect(feedback.first).to_contain_text("Write <b>to</b> [EMAIL] instead")  # scrubbed as exports are, escaped
    assert "jane.doe@example.com" not in page.content()
    expect(page.locator("table.feedback b")).to_have_count(0)


def test_promote_and_roll_back_from_the_page(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/bot")
    act(page, "promote", "candidate answers better", version="2")
    expect(page.locator("#flash")).to_have_text("bot: production moved v1 -> v2")
    expect(page.locator("#aliases")).to_contain_text("production: v2")
    assert gateway.registry.alias_version("bot", "production") == 2
    assert gateway.served_by() == "bot@2"
    event = page.locator("table.events tbody tr").first
    expect(event).to_contain_text("console")
    expect(event).to_contain_text("candidate answers better")

    act(page, "rollback", "users complain")
    expect(page.locator("#flash")).to_have_text("bot: production rolled back v2 -> v1")
    assert gateway.registry.alias_version("bot", "production") == 1
    assert gateway.served_by() == "bot@1"
    expect(page.locator("table.events tbody tr").first).to_contain_text("users complain")
    page.goto("/console/adapters/bot/versions/1?unit=day")
    expect(page.locator("table.events")).to_contain_text("candidate answers better")
    expect(page.locator("#plot .marker.rollback title")).to_contain_text(
        "v2 -> v1 by console (rollback: users complain)")
    expect(page.locator("#plot rect.corrections title")).to_have_text(re.compile(r": 1 corrections$"))
    expect(page.locator("#plot-legend")).to_contain_text("corrections")

    page.goto("/console/adapters/bot")  # promoting an older version is a promote on the plot, not a rollback
    act(page, "promote", "v2 once more", version="2")
    act(page, "promote", "v1 after all", version="1")
    expect(page.locator("#flash")).to_have_text("bot: production moved v2 -> v1")
    page.goto("/console/adapters/bot/versions/1?unit=day")
    marker = page.locator("#plot .marker").filter(has_text="v2 -> v1 by console (promote: v1 after all)")
    expect(marker).to_have_class("marker promote")


def test_actions_that_cannot_apply_say_why_and_change_nothing(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/bot")
    act(page, "promote", "typo", version="99")
    expect(page.locator("#flash.error")).to_contain_text("has no version 99")
    act(page, "move-alias", "bad alias", alias="123", version="1")
    expect(page.locator("#flash.error")).to_contain_text("cannot be a number")
    act(page, "promote", "rejected one", version="3")
    expect(page.locator("#flash.error")).to_contain_text("rejected")
    gateway.registry.set_alias("bot", "production", 2, actor="cli", reason="moved elsewhere")  # after the page loaded
    act(page, "promote", "stale page", version="1")
    expect(page.locator("#flash.error")).to_contain_text("moved to v2 since the page showed v1")
    assert gateway.registry.alias_version("bot", "production") == 2
    gateway.registry.set_alias("bot", "production", 1, actor="cli", reason="back")
    page.goto("/console/adapters/bot")  # shows "default: the candidate (v2)"
    gateway.registry.set_alias("bot", "candidate", 1, actor="cli", reason="candidate moved")
    act(page, "promote", "the candidate shown")  # no version named: the v2 the page showed, not v1
    expect(page.locator("#flash.error")).to_contain_text("candidate moved to v1 since the page showed v2")
    assert gateway.registry.alias_version("bot", "production") == 1
    gateway.registry.set_alias("bot", "candidate", 2, actor="cli", reason="back")
    assert page.goto("/console/adapters/nope").status == 404
    expect(page.locator("#error")).to_contain_text("not registered")


def test_move_an_alias_and_queue_a_training_run(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/helper")
    act(page, "move-alias", "try it on staff", alias="staff", version="1")
    expect(page.locator("#flash")).to_have_text("helper: staff moved nothing -> v1")
    assert gateway.registry.alias_version("helper", "staff") == 1
    act(page, "train", "new corrections came in")
    expect(page.locator("#flash")).to_contain_text("is queued")
    page.goto("/console/runs?adapter=helper")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs .status")).to_have_text("queued")
    page.click("#runs tbody a >> nth=0")  # the queued run's page: no loss logged yet
    expect(page.locator("#loss-empty")).to_have_text("no loss logged yet")


def test_a_dismissed_confirmation_sends_nothing(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/bot")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.fill("#promote [name=version]", "2")
    page.fill("#promote [name=reason]", "second thoughts")
    page.check("#promote [name=confirm]")
    page.click("#promote button[type=submit]")
    expect(page.locator("#flash")).to_have_count(0)
    assert gateway.registry.alias_version("bot", "production") == 1


def test_canary_shows_share_up_rates_p_value_and_the_review_s_decision(page, gateway: Gateway):
    log_in(page)
    page.goto("/console/adapters/pilot")
    canary = page.locator("#canary")
    expect(canary.locator("[data-canary=share]")).to_have_text("10%")
    expect(canary.locator("[data-canary=verdict]")).to_have_text("keep waiting")
    expect(canary.locator("[data-canary=reason]")).to_contain_text(
        f"needs {CANARY_MIN_FEEDBACK} more on production and {CANARY_MIN_FEEDBACK} more on the canary")
    expect(canary.locator("[data-canary=p-value]")).to_have_text("-")
    started = gateway.registry.history("pilot", "canary")[-1].at  # both versions are counted from then on
    expect(canary.locator("[data-canary=since]")).to_have_text(
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)))
    expect(page.locator("#versions")).to_be_visible()
    assert page.goto("/console/adapters/bot").ok and page.locator("#canary").count() == 0  # no canary, no section

    rate(gateway.url, [("up", None)] * 3, "pilot@1")  # production: 3 of 3 up
    rate(gateway.url, [("up", None)] + [("down", None)] * 3, "pilot@2")  # canary: 1 of 4 up
    page.goto("/console/adapters/pilot")
    expect(canary.locator("tr[data-role=canary] .up-rate")).to_have_text("25.0%")
    expect(canary.locator("tr[data-role=canary] .rated")).to_have_text("4")
    expect(canary.locator("tr[data-role=production] .up-rate")).to_have_text("100.0%")
    expect(canary.locator("[data-canary=verdict]")).to_have_text("roll back")
    expect(canary.locator("[data-canary=reason]")).to_contain_text("canary worse: up-rate canary 25.0% vs production")
    shown = float(canary.locator("[data-canary=p-value]").inner_text())
    assert 0 < shown < 0.05

    # what the page said is what the trainer's review does with the same store and registry
    with FeedbackReader(gateway.settings.feedback_db) as store:
        decision = review_canary(gateway.registry, store, "pilot",
                                 gateway.settings.recipe(PromotionPolicy))
    assert decision.verdict == "rollback" and round(decision.p_value, 4) == shown
    page.goto("/console/adapters/pilot")
    expect(page.locator("#canary")).to_have_count(0)
    expect(page.locator("table.events tbody tr").first).to_contain_text("canary worse")


def test_a_run_shows_status_stage_loss_curve_gate_checks_and_the_feedback_it_used(page):
    log_in(page)
    page.goto("/console/runs?adapter=bot")
    page.click("#runs a[href='/console/runs/1']")
    facts = page.locator("#facts")
    expect(facts.locator(".status")).to_have_text("succeeded")
    expect(facts).to_contain_text("done (step 2/2)")
    expect(facts).to_contain_text("v2")
    curve = page.locator("#loss-curve")
    expect(curve.locator("g.stage")).to_have_count(2)
    sft, dpo = (points(curve.locator(f"g[data-stage={stage}] polyline")) for stage in ("sft", "dpo"))
    assert len(sft) == 3 and len(dpo) == 2  # one point per logged loss
    assert [x for x, _ in sft] == sorted(x for x, _ in sft) and sft[-1][0] < dpo[0][0]  # dpo drawn after sft
    assert [y for _, y in sft] == sorted(y for _, y in sft)  # falling loss: y grows downwards in SVG
    assert dpo[-1][1] == max(y for _, y in sft + dpo)  # the lowest loss sits on the x axis
    expect(curve.locator("g[data-stage=dpo] title")).to_have_text("dpo: last loss 0.41")
    expect(page.locator(".check.passed").first).to_be_visible()
    expect(page.locator("[data-metric=candidate_ppl]")).to_have_text("11.5")
    used = page.locator("#feedback-used")
    expect(used.locator("[data-used=count]")).to_have_text("12")
    expect(used.locator("[data-used=plan]")).to_have_text("; ".join(PLAN))
    expect(used.locator("[data-used=ids]")).to_contain_text("fb-0, fb-1")
    expect(used).to_contain_text("v1")

    page.goto("/console/runs/2")
    expect(page.locator("#facts .status")).to_have_text("rejected")
    expect(page.locator(".check.failed")).to_contain_text(REJECTED_REASON)
    expect(page.locator("[data-metric=candidate_ppl]")).to_have_text("19")
    expect(page.locator("#loss-empty")).to_have_text("no loss logged")
    expect(page.locator("#feedback-used-none")).to_be_visible()
    assert page.goto("/console/runs/999").status == 404
