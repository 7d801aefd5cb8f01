"""Screenshots of the operator console (README "Console"): a gateway on demo data, photographed in chromium.

    .venv/bin/python -m docs.console_shots                   # rewrites docs/console/*.png
    .venv/bin/python -m docs.console_shots --out /tmp/shots --page adapter

Run it from a checkout with the dev extras installed and Debian's chromium. It is a docs generator, not
part of the installed package (nor a benchmark), so it reuses the console tests' pieces: the tiny base
model and LoRA folders (tests/lora_factory.py), the fake engine (tests/fake_engine.py; the console pages
never call the engine) and the gateway under uvicorn (tests/console/conftest.py). The rest is real: the
registry, run store and feedback store of a temp data dir, filled through their own APIs, the gateway app,
and chromium driven by Playwright.

The stores stamp every write with the current time; a demo that spans ten days is backdated afterwards
(`Demo._stamp`, and the last step of `Demo.ratings`), to fixed dates, so a rerun writes the same files.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from adapters.runs import RunStore
from feedback.records import CompletionRecord
from feedback.store import FeedbackStore, new_id
from flywheel.settings import Settings
from tests.console.conftest import ADMIN_KEY, CHROMIUM, CHROMIUM_ARGS, log_in, serve
from tests.lora_factory import write_lora, write_tiny_base

logger = logging.getLogger(__name__)

OUT = Path(__file__).parent / "console"
VIEWPORT = {"width": 1280, "height": 480}  # full-page shots grow to fit the content
HOUR, DAY = 3600.0, 86400.0
NOW = 1795953600.0  # 2026-11-29 12:00 UTC: the demo's "now", fixed so that reruns draw the same pages
PAGES = {  # file name -> console path
    "adapters": "/console",
    "adapter": "/console/adapters/support-bot",
    "version": "/console/adapters/support-bot/versions/2?unit=day",
    "run": "/console/runs/2",  # the run whose candidate the gate rejected
}

PROMPTS = [  # (prompt, the answer served, the correction a user wrote when they rated it down, weight)
    ("How do I reset my password?", "Open Settings > Security and choose Reset password; we email you a link.",
     "Open Settings > Security > Reset password. The link in the email is valid for 30 minutes.", 4),
    ("Can I change the billing date?", "Yes: Billing > Plan > Change date. The next invoice is prorated.",
     "Only account owners can: Billing > Plan > Change date. The next invoice is prorated.", 3),
    ("My export to CSV is empty", "Exports only include the rows of the current filter. Clear the filter first.",
     "Exports use the current filter and are capped at 50,000 rows; for more, use the API's /exports endpoint.", 3),
    ("Where is my invoice for October?", "Invoices are under Billing > History; each one has a PDF link.",
     "Billing > History lists every invoice; October's is there once the month is closed, on the 3rd.", 3),
    ("Please send the invoice to jane.doe@example.com", "I have sent the invoice to jane.doe@example.com.",
     "I can't send email. Download the PDF from Billing > History and forward it to jane.doe@example.com.", 1),
    ("How do I add a teammate?", "Go to Team > Invite and enter their email; they get admin rights by default.",
     "Go to Team > Invite and enter their email; new members get the Viewer role until an admin changes it.", 3),
]
COMMENTS = ["wrong menu", "too vague", "that is not what I asked", "outdated"]
GATE = {  # the gate's numbers as trainer/gate.py stores them (see server/console/views.py CHECKS)
    "preference_check": "applied", "preference_pairs": 24, "preference_win_rate": 0.71,
    "candidate_preference_accuracy": 0.79, "production_preference_accuracy": 0.58,
    "answers": 40, "candidate_answer_loglik": -1.42, "production_answer_loglik": -1.51,
    "general_paragraphs": 32, "candidate_ppl": 11.4, "production_ppl": 11.2, "base_ppl": 11.0,
    "closed_book_questions": 50, "candidate_correctness": 0.62, "production_correctness": 0.6,
    "base_correctness": 0.58, "traffic_prompts": 40, "candidate_degenerate": 0.0, "production_degenerate": 0.025,
}
REJECTED = "forgetting: perplexity on general text is 14.90 against production's 11.40 (allowed up to 12.54)"


def loss_curve(seed: int, sft_steps: int, dpo_steps: int) -> list[list]:
    """An SFT then DPO loss curve shaped like trainer/progress.py's `loss_curve` (stage, step, loss)."""
    rng = random.Random(seed)
    sft = [["sft", s, round(2.6 * 0.93**s + 0.35 + rng.uniform(-0.06, 0.06), 3)] for s in range(1, sft_steps + 1)]
    dpo = [["dpo", s, round(0.69 * 0.9**s + 0.12 + rng.uniform(-0.03, 0.03), 3)] for s in range(1, dpo_steps + 1)]
    return sft + dpo


@dataclass(frozen=True)
class Trained:
    """One training run of support-bot and the version it registered (passed or rejected by the gate)."""

    run_id: int
    day: int  # days after the demo's start
    version: int
    sft_examples: int
    dpo_pairs: int
    gate: dict
    reasons: tuple[str, ...] = ()

    @property
    def metrics(self) -> dict:
        """The version's metrics as trainer/pipeline.py registers them: gate numbers and lineage."""
        count = self.sft_examples + self.dpo_pairs
        return {"gate": self.gate, "gate_passed": not self.reasons, "gate_reasons": list(self.reasons),
                "run_id": self.run_id, "feedback_count": count, "feedback_ids": demo_ids(count),
                "plan": [f"sft on {self.sft_examples} examples", f"dpo on {self.dpo_pairs} pairs"],
                "dataset_hash": f"{random.Random(count).getrandbits(48):012x}"}

    @property
    def stages(self) -> list[dict]:
        sft, dpo = self.sft_examples // 4, self.dpo_pairs // 2  # batch 4; DPO batch 2
        return [{"name": "sft", "examples": self.sft_examples, "steps": sft, "train_loss": 0.61, "seconds": 38.0 * sft},
                {"name": "dpo", "examples": self.dpo_pairs, "steps": dpo, "train_loss": 0.19, "seconds": 31.0 * dpo}]


TRAINED = (
    Trained(1, 4, 2, 168, 44, GATE),
    Trained(2, 7, 3, 120, 30, {**GATE, "candidate_ppl": 14.9, "production_ppl": 11.4}, (REJECTED,)),
    Trained(3, 8, 4, 74, 22, {**GATE, "preference_win_rate": 0.66, "production_ppl": 11.4}),
)


def demo_ids(count: int) -> list[str]:
    """Feedback ids shaped like the store's (`fb_` + hex), the same on every run."""
    rng = random.Random(count)
    return [f"fb_{rng.getrandbits(96):024x}" for _ in range(count)]


@dataclass
class Demo:
    """Fills a data dir through the stores' own APIs: four adapters, three training runs, ten days of ratings."""

    settings: Settings
    registry: Registry
    base: Path
    work: Path

    def _stamp(self, adapter: str, version: int | None, at: float, alias: str | None = None) -> None:
        """Backdate the version just registered and/or the alias move just made (the stores write `now`)."""
        with self.registry.db.write() as conn:
            if version is not None:
                conn.execute("UPDATE versions SET created_at = ? WHERE adapter = ? AND version = ?",
                             [at, adapter, version])
            if alias is not None:
                conn.execute("UPDATE alias_events SET at = ? WHERE id = (SELECT MAX(id) FROM alias_events)", [at])
                conn.execute("UPDATE aliases SET updated_at = ? WHERE adapter = ? AND alias = ?", [at, adapter, alias])

    def register(self, adapter: str, at: float, *, alias: str | None = None, seed: int = 0, **options) -> int:
        lora = write_lora(self.work / f"{adapter}-{seed}", self.base, rank=options.pop("rank", 16), seed=seed,
                          targets=("q_proj", "k_proj", "v_proj", "o_proj"))
        version = self.registry.register(adapter, lora, alias=alias, **options).version
        self._stamp(adapter, version, at, alias)
        return version

    def promote(self, adapter: str, at: float, actor: str, reason: str) -> None:
        self.registry.promote(adapter, actor=actor, reason=reason)
        self._stamp(adapter, None, at, "production")

    def rollback(self, adapter: str, at: float, actor: str, reason: str) -> None:
        self.registry.rollback(adapter, actor=actor, reason=reason)
        self._stamp(adapter, None, at, "production")

    def adapters(self) -> None:
        """support-bot: v1 uploaded, v2 trained and promoted, v3 rejected by the gate, v4 a running canary;
        sql-helper promoted then rolled back; summarizer and triage one version each."""
        start = NOW - 10 * DAY
        self.register("support-bot", start, alias="production", seed=1, actor="alice")
        for t in TRAINED:  # v2 becomes the candidate, v3 is rejected, v4 starts a canary
            alias = None if t.reasons else ("canary" if t.version == 4 else "candidate")
            self.register("support-bot", start + t.day * DAY, alias=alias, seed=t.version, source="trained",
                          parent_version=2 if t.version > 2 else 1, status="rejected" if t.reasons else "ready",
                          actor="trainer", metrics=t.metrics)
            if t.version == 2:
                self.promote("support-bot", start + t.day * DAY + 3 * HOUR, "alice",
                             "gate passed: preference win rate 0.71")
        self.register("sql-helper", start + DAY, alias="production", seed=5, rank=8, actor="bob")
        self.register("sql-helper", start + 6 * DAY, alias="candidate", seed=6, rank=8, actor="bob")
        self.promote("sql-helper", start + 6 * DAY + HOUR, "bob", "knows the new schema")
        self.rollback("sql-helper", start + 7 * DAY, "bob", "up-rate fell: joins on the old tables broke")
        self.register("summarizer", start + 2 * DAY, alias="production", seed=7, actor="carol")
        self.register("triage", start + 5 * DAY, alias="production", seed=8, rank=4, actor="carol")

    def runs(self) -> None:
        """The runs of TRAINED: queued 40 minutes before their version was registered, finished 2 before."""
        start = NOW - 10 * DAY
        for t in TRAINED:
            done = start + t.day * DAY
            clock = iter([done - 40 * 60, done - 2 * 60])
            runs = RunStore(self.settings.trainer_db, clock=lambda c=clock: next(c))  # stamps create, then finish
            run_id = runs.create("support-bot", status="running")
            runs.update(run_id, started_at=done - 39 * 60)
            steps = [stage["steps"] for stage in t.stages]
            runs.finish(run_id, "rejected" if t.reasons else "succeeded", error="gate: " + t.reasons[0] if t.reasons
                        else None, result_version=t.version, stage="done", step=steps[-1], total_steps=steps[-1],
                        loss=0.19, metrics={"loss_curve": loss_curve(run_id, *steps), "gate": t.gate,
                                            "stages": t.stages})

    def ratings(self, store: FeedbackStore) -> None:
        """Completions every ~10 minutes over ten days, about half rated, on whichever version served them."""
        rng = random.Random(0)
        promoted, canary_from = NOW - 6 * DAY + 3 * HOUR, NOW - 2 * DAY
        at, rated = NOW - 10 * DAY, []
        while at < NOW:
            version = 1 if at < promoted else (4 if at >= canary_from and rng.random() < 0.1 else 2)
            up_rate = {1: 0.58, 2: 0.76, 4: 0.8}[version]
            prompt, answer, fix, _ = rng.choices(PROMPTS, weights=[p[3] for p in PROMPTS])[0]
            record = CompletionRecord(
                id=new_id("chatcmpl-"), adapter="support-bot", adapter_version=version, model="support-bot",
                messages=[{"role": "user", "content": prompt}], params={"temperature": 0.7},
                choices=[{"index": 0, "text": answer, "finish_reason": "stop"}], prompt_tokens=18,
                completion_tokens=24, latency_ms=410.0, user=f"user-{rng.randrange(40)}", created_at=at)
            store.record_completion(record)
            if rng.random() < 0.55:
                up = rng.random() < up_rate
                correction = fix if not up and rng.random() < 0.3 else None
                comment = rng.choice(COMMENTS) if not up and rng.random() < 0.3 else None
                rated.append((record.id, "up" if up else "down", correction, comment, record.user))
            busy = 0.5 + abs(((at / HOUR) % 24) - 12) / 12  # quieter at night (UTC), busier at midday
            at += rng.uniform(4, 12) * 60 * busy
        with ThreadPoolExecutor(16) as pool:  # many at once, so the writer commits them in a few group commits
            list(pool.map(lambda r: store.add_feedback(r[0], r[1], correction=r[2], comment=r[3], user=r[4]), rated))
        # A rating is stamped when it arrives: move each to a few minutes after the answer it rates.
        store.writer.run(lambda conn: conn.execute(
            "UPDATE feedback SET created_at = 240 + (SELECT c.created_at FROM completions c"
            " WHERE c.id = feedback.completion_id)"))


def seed(settings: Settings, base: Path, work: Path) -> None:
    """The demo data: registry, runs and feedback of `settings.data_dir`."""
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base),
                        settings.max_lora_rank)
    demo = Demo(settings, registry, base, work)
    demo.adapters()
    demo.runs()
    with FeedbackStore(settings.feedback_db) as store:
        demo.ratings(store)


@contextmanager
def demo_gateway() -> Iterator[str]:
    """Seed a temp data dir with the demo and serve it with the gateway until the block ends; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="console-shots-") as tmp:
        work = Path(tmp)
        base = write_tiny_base(work / "base")
        settings = Settings(data_dir=work / "data", model_path=base, admin_key=ADMIN_KEY)
        seed(settings, base, work)
        with serve(settings) as url:
            yield url


def shoot(browser, url: str, out: Path, pages: list[str]) -> list[Path]:
    """Log in to the console at `url` and write a full-page PNG of each of `pages` (keys of PAGES) to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=url, viewport=VIEWPORT)
    try:
        page = context.new_page()
        log_in(page)
        page.wait_for_url("**/console")
        written = []
        for name in pages:
            response = page.goto(PAGES[name])
            if response is None or not response.ok:
                raise RuntimeError(f"{PAGES[name]} answered {response and response.status}")
            written.append(out / f"{name}.png")
            page.screenshot(path=str(written[-1]), full_page=True)
        return written
    finally:
        context.close()


def capture(out: Path, pages: list[str], chromium: str = CHROMIUM) -> list[Path]:
    """The demo gateway photographed in a headless `chromium`: one PNG per page in `out`."""
    from playwright.sync_api import sync_playwright  # a dev extra, like the tests that use it

    with demo_gateway() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            return shoot(browser, url, out, pages)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docs.console_shots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs (default: docs/console)")
    parser.add_argument("--page", action="append", choices=sorted(PAGES),
                        help="a page to capture (repeatable; default: all of them)")
    parser.add_argument("--chromium", default=CHROMIUM, help="the chromium binary Playwright drives")
    args = parser.parse_args(argv)
    for path in capture(args.out, args.page or list(PAGES), args.chromium):
        sys.stdout.write(f"{path} ({path.stat().st_size // 1024} KiB)\n")


if __name__ == "__main__":
    main()
