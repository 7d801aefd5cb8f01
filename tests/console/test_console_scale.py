"""The console with 100 adapters and 1,000 versions (issue 15): every list is paged, and search reaches past page 1.

The versions go through the real `Registry.register` (validation, atomic copy, alias moves), all from one
rank-1 LoRA folder, so seeding stays a few seconds. "big" has 901 versions, each moved to production (901
alias moves); a000..a098 have one each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from adapters.runs import RunStore
from server.console.views import PAGE_SIZE
from tests.console.conftest import Gateway, console_settings, log_in, rate, serve
from tests.lora_factory import write_lora, write_tiny_base

SMALL = [f"a{i:03d}" for i in range(99)]
BIG_VERSIONS = 901  # with SMALL's 99: 100 adapters, 1,000 versions
RUNS = PAGE_SIZE + 5
RATINGS = PAGE_SIZE + 5


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of its own (this module's `page` fixture uses it), seeded at scale."""
    tmp = tmp_path_factory.mktemp("console-scale")
    base = write_tiny_base(tmp / "base")
    settings = console_settings(tmp, base)
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base), 8)
    lora = write_lora(tmp / "lora", base, rank=1, targets=("q_proj",))
    for name in SMALL:
        registry.register(name, lora, alias="production")
    for _ in range(BIG_VERSIONS):
        registry.register("big", lora, alias="production")
    runs = RunStore(settings.trainer_db)
    for _ in range(RUNS):
        runs.create("a011")
    with serve(settings) as url:
        rate(url, [("up", None)] * RATINGS, "a011")
        yield Gateway(url, registry, settings)


def rows(page, table: str):
    return page.locator(f"{table} tbody tr")


def test_adapters_are_paged_and_search_finds_one_on_a_later_page(page):
    log_in(page)
    expect(rows(page, "#adapters")).to_have_count(PAGE_SIZE)
    expect(page.locator(".pager")).to_contain_text(f"1-{PAGE_SIZE} of 100")
    expect(page.locator(".pager a[rel=prev]")).to_have_count(0)
    page.click(".pager a[rel=next]")
    expect(rows(page, "#adapters").first).to_contain_text("a025")
    expect(page.locator(".pager")).to_contain_text(f"26-{2 * PAGE_SIZE} of 100")
    page.click(".pager a[rel=prev]")
    expect(rows(page, "#adapters").first).to_contain_text("a000")
    page.goto("/console?page=4")
    expect(rows(page, "#adapters").last).to_contain_text("big")
    expect(page.locator(".pager a[rel=next]")).to_have_count(0)

    page.goto("/console")
    page.fill("input[name=q]", "a077")  # on page 4 of the whole list
    page.click(".search button")
    expect(rows(page, "#adapters")).to_have_count(1)
    expect(rows(page, "#adapters").first).to_contain_text("a077")
    page.fill("input[name=q]", "a0")  # 99 matches: paged, and the next page keeps the search
    page.click(".search button")
    expect(page.locator(".pager")).to_contain_text("of 99")
    page.click(".pager a[rel=next]")
    assert "q=a0" in page.url
    expect(rows(page, "#adapters").first).to_contain_text("a025")
    expect(rows(page, "#adapters")).to_have_count(PAGE_SIZE)


def test_versions_and_alias_moves_of_an_adapter_with_901_versions_are_paged(page):
    log_in(page)
    page.goto("/console/adapters/big")
    expect(rows(page, "#versions")).to_have_count(PAGE_SIZE)
    expect(rows(page, "#versions").first).to_have_attribute("data-version", str(BIG_VERSIONS))
    expect(page.locator(".pager")).to_contain_text(f"of {BIG_VERSIONS}")
    expect(rows(page, "table.events")).to_have_count(10)  # the latest moves; the rest on the history page
    page.click(".pager a[rel=next]")
    expect(rows(page, "#versions").first).to_have_attribute("data-version", str(BIG_VERSIONS - PAGE_SIZE))
    last = (BIG_VERSIONS + PAGE_SIZE - 1) // PAGE_SIZE
    page.goto(f"/console/adapters/big?page={last}")
    expect(rows(page, "#versions")).to_have_count(BIG_VERSIONS - (last - 1) * PAGE_SIZE)
    expect(rows(page, "#versions").last).to_have_attribute("data-version", "1")
    expect(page.locator(".pager a[rel=next]")).to_have_count(0)

    page.goto("/console/adapters/big")
    page.click(f"text=all {BIG_VERSIONS} moves")
    expect(rows(page, "table.events")).to_have_count(PAGE_SIZE)
    page.click(".pager a[rel=next]")
    expect(rows(page, "table.events")).to_have_count(PAGE_SIZE)
    expect(page.locator(".pager")).to_contain_text(f"26-{2 * PAGE_SIZE} of {BIG_VERSIONS}")


def test_runs_and_feedback_are_paged(page):
    log_in(page)
    page.goto("/console/runs")
    expect(rows(page, "#runs")).to_have_count(PAGE_SIZE)
    page.click(".pager a[rel=next]")
    expect(rows(page, "#runs")).to_have_count(RUNS - PAGE_SIZE)
    for url in ("/console/feedback?adapter=a011", "/console/adapters/a011/versions/1"):
        page.goto(url)
        expect(rows(page, "table.feedback")).to_have_count(PAGE_SIZE)
        page.click(".pager a[rel=next]")
        expect(rows(page, "table.feedback")).to_have_count(RATINGS - PAGE_SIZE)
        page.click(".pager a[rel=prev]")
        expect(rows(page, "table.feedback")).to_have_count(PAGE_SIZE)
