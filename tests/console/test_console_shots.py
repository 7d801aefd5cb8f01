"""docs/console_shots.py: its demo data tells the story the README's screenshots show, and a shot writes a PNG.

The shot uses the session's browser (conftest.py): Playwright's sync API runs once per process.
"""

from __future__ import annotations

import struct
from pathlib import Path

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from adapters.runs import RunStore
from docs.console_shots import ADMIN_KEY, DAY, NOW, VIEWPORT, demo_gateway, seed, shoot
from feedback.timeline import FeedbackTimeline
from flywheel.settings import Settings
from tests.lora_factory import write_tiny_base


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and a failure if the file is no PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_demo_data(tmp_path: Path) -> None:
    base = write_tiny_base(tmp_path / "base")
    settings = Settings(data_dir=tmp_path / "data", model_path=base, admin_key=ADMIN_KEY)
    seed(settings, base, tmp_path)
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base))
    assert registry.adapters() == ["sql-helper", "summarizer", "support-bot", "triage"]
    assert registry.aliases("support-bot") == {("support-bot", "production"): 2, ("support-bot", "candidate"): 2,
                                               ("support-bot", "canary"): 4}
    assert registry.get_version("support-bot", 3).status == "rejected"
    assert [e.to_version for e in registry.history("sql-helper", "production")] == [1, 2, 1]  # promote, rollback
    runs = RunStore(settings.trainer_db)
    assert [(r.status, r.result_version) for r in sorted(runs.list("support-bot"), key=lambda r: r.id)] == [
        ("succeeded", 2), ("rejected", 3), ("succeeded", 4)]
    rejected = runs.get(2)
    assert {stage for stage, _, _ in rejected.metrics["loss_curve"]} == {"sft", "dpo"}
    assert len(rejected.metrics["loss_curve"]) == sum(stage["steps"] for stage in rejected.metrics["stages"])
    assert rejected.error.startswith("gate: forgetting:")
    timeline = FeedbackTimeline(settings.feedback_db)
    days = timeline.buckets("support-bot", 2, "day")
    assert len(days) == 7 and days[0].start < NOW - 5 * DAY  # six days and a half of v2, backdated
    assert all(d.ratings > 0 for d in days) and sum(d.corrections for d in days) > 0
    assert 0.6 < sum(d.up for d in days) / sum(d.ratings for d in days) < 0.9
    _, canary_ratings = timeline.recent("support-bot", 4)
    assert 0 < canary_ratings < 50  # the canary is still waiting for ratings (canary_min_feedback 50)


def test_capture_writes_a_full_page_png(browser, tmp_path: Path) -> None:
    with demo_gateway() as url:
        [path] = shoot(browser, url, tmp_path, ["adapter"])
    width, height = png_size(path)
    # Full page: taller than the viewport, because canary, versions, actions and alias moves are all there.
    assert path == tmp_path / "adapter.png" and width == VIEWPORT["width"] and height > VIEWPORT["height"] + 400
