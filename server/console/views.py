"""What each console page shows, read from the registry, the runs table and the feedback store (no HTTP here)."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.catalog import Catalog, Page
from adapters.errors import AdapterNotFound
from adapters.names import CANARY, CANDIDATE, PRODUCTION, Alias, check_name
from adapters.runs import REQUESTS_KEY, Run, RunStatus
from adapters.version import AdapterVersion
from feedback.timeline import FeedbackTimeline
from flywheel.canary import CanaryDecision, Tally, Verdict, policy_of, review
from server.console.loss_curve import loss_plot
from server.console.plot import Plot, plot
from server.state import GatewayState

PAGE_SIZE = 25
SHOWN_IDS = 20
CURVE_KEY = "loss_curve"  # where trainer/progress.py keeps a run's logged losses
# The gate's numbers grouped by the check that produced them (trainer/gate.py); a reason names its check first.
CHECKS = {
    "preference": ("preference_check", "preference_skipped", "preference_pairs", "preference_win_rate",
                   "candidate_preference_accuracy", "production_preference_accuracy", "candidate_mean_margin",
                   "production_mean_margin"),
    "answers": ("answers_skipped", "answers", "candidate_answer_loglik", "production_answer_loglik"),
    "forgetting": ("general_paragraphs", "candidate_ppl", "production_ppl", "base_ppl"),
    "correctness": ("closed_book_questions", "candidate_correctness", "production_correctness", "base_correctness",
                    "traffic_prompts", "candidate_degenerate", "production_degenerate"),
}
VERDICT_TEXT: dict[Verdict, str] = {"wait": "keep waiting", "promote": "promote", "rollback": "roll back"}
IN_PROGRESS = (RunStatus.QUEUED, RunStatus.RUNNING)  # a run whose loss curve may still grow


@dataclass(frozen=True)
class CanaryView:
    """A running canary: its traffic share, both versions' tallies, and what the trainer's review would do now."""

    share: float
    canary: int
    production: int | None
    canary_tally: Tally
    production_tally: Tally
    since: float | None  # both tallies count the ratings made since then: when the canary started
    min_feedback: int
    alpha: float
    decision: CanaryDecision

    @property
    def sides(self) -> list[tuple[Alias, int | None, Tally]]:
        """The table's rows: each alias, the version it points at, and that version's tally."""
        return [(CANARY, self.canary, self.canary_tally), (PRODUCTION, self.production, self.production_tally)]

    @property
    def verdict_text(self) -> str:
        """The decision in the page's words."""
        return VERDICT_TEXT[self.decision.verdict]


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate: its numbers, and the reasons it failed (none: passed)."""

    name: str
    numbers: dict
    reasons: list[str]


def gate_checks(gate: dict, reasons: list[str]) -> list[GateCheck]:
    """The gate's metrics and failure reasons, check by check; numbers of no known check go under `other`."""
    known = {key for keys in CHECKS.values() for key in keys} | {"correctness_samples"}
    checks = []
    for name, keys in CHECKS.items():
        numbers = {k: gate[k] for k in keys if k in gate}
        mine = [r for r in reasons if r.startswith(f"{name}:")]
        if numbers or mine:
            checks.append(GateCheck(name, numbers, mine))
    other = {k: v for k, v in gate.items() if k not in known}
    leftover = [r for r in reasons if not any(r.startswith(f"{n}:") for n in CHECKS)]
    if other or leftover:
        checks.append(GateCheck("other", other, leftover))
    return checks


def offset_of(page: int) -> int:
    return (max(1, page) - 1) * PAGE_SIZE


class ConsoleViews:
    """Reads for the console's pages; every list is one page of at most PAGE_SIZE rows."""

    def __init__(self, state: GatewayState):
        settings = state.settings
        self.state = state
        self.catalog = Catalog(settings.registry_db, settings.trainer_db, settings.adapters_dir)
        self.timeline = FeedbackTimeline(settings.feedback_db)

    def adapters(self, search: str, page: int) -> Page:
        return self.catalog.adapters(search.strip(), offset_of(page), PAGE_SIZE)

    def adapter(self, name: str, page: int) -> dict:
        """An adapter's aliases, one page of its versions, its latest alias moves and runs."""
        versions = self.catalog.versions(check_name(name), offset_of(page), PAGE_SIZE)
        if not versions.total:
            raise AdapterNotFound(f"adapter {name!r} is not registered")
        aliases = {alias: v for (_, alias), v in self.state.registry.aliases(name).items()}
        by_version: dict[int, list[str]] = {}
        for alias, v in sorted(aliases.items()):
            by_version.setdefault(v, []).append(alias)
        return {"name": name, "aliases": aliases, "by_version": by_version, "versions": versions,
                "history": self.catalog.history(name, 0, 10), "runs": self.state.runs.list(name, 5),
                "canary": self.canary(name, aliases), "candidate": aliases.get(CANDIDATE),
                "rollback_alias": PRODUCTION}

    def canary(self, name: str, aliases: dict[str, int]) -> CanaryView | None:
        """The canary's numbers and the decision `trainer.promotion.review_canary` would take on them now."""
        if CANARY not in aliases:
            return None
        policy = policy_of(self.state.settings)
        canary, production = aliases[CANARY], aliases.get(PRODUCTION)
        r = review(self.state.feedback, self.state.registry.history(name, CANARY), name, production, canary, policy)
        return CanaryView(self.state.settings.canary_share, canary, production, r.canary, r.production, r.since,
                          policy.canary_min_feedback, policy.canary_alpha, r.decision)

    def history(self, name: str, page: int) -> Page:
        return self.catalog.history(check_name(name), offset_of(page), PAGE_SIZE)

    def version(self, name: str, version: int, unit: str, page: int) -> dict:
        """One version: lineage, gate checks, the feedback plot with its alias moves, recent feedback."""
        v: AdapterVersion = self.state.registry.get_version(name, version)
        events = self.catalog.history(name, 0, 200, version=version)
        recent, total = self.timeline.recent(name, version, offset_of(page), PAGE_SIZE)
        return {
            "v": v,
            "aliases": sorted(a for (_, a), n in self.state.registry.aliases(name).items() if n == version),
            "checks": gate_checks(gate_numbers(v.metrics), list(v.metrics.get("gate_reasons") or [])),
            "samples": gate_numbers(v.metrics).get("correctness_samples") or {},
            "plot": self.plot(name, version, unit, events.items),
            "events": events,
            "feedback": Page(recent, total, offset_of(page), PAGE_SIZE),
        }

    def plot(self, name: str, version: int, unit: str, events: list) -> Plot:
        return plot(self.timeline.buckets(name, version, unit), events, version, unit)

    def runs(self, adapter: str, page: int) -> Page:
        return self.catalog.runs(adapter.strip(), offset_of(page), PAGE_SIZE)

    def run(self, run_id: int) -> dict:
        """One run: its loss curve, gate checks (reasons from the version it registered, else its error), and
        the feedback it trained on (the lineage stored on that version)."""
        run: Run = self.state.runs.get(run_id)
        reasons = [run.error] if run.error else []
        registered = None
        if run.result_version is not None:
            try:
                registered = self.state.registry.get_version(run.adapter, run.result_version)
                reasons = list(registered.metrics.get("gate_reasons") or reasons)
            except AdapterNotFound:
                pass
        return {"run": run, "in_progress": run.status in IN_PROGRESS,
                "checks": gate_checks(gate_numbers(run.metrics), reasons),
                "stages": run.metrics.get("stages") or [], "loss": loss_plot(run.metrics.get(CURVE_KEY)),
                "used": feedback_used(registered), "requests": requests_of(run)}

    def feedback(self, adapter: str, version: int | None, page: int) -> Page:
        recent, total = self.timeline.recent(check_name(adapter), version, offset_of(page), PAGE_SIZE)
        return Page(recent, total, offset_of(page), PAGE_SIZE)


def feedback_used(version: AdapterVersion | None) -> dict | None:
    """What a trained version records of its training data: how much feedback, the plan, the dataset hash,
    and the first SHOWN_IDS feedback ids (the version keeps up to 2,000; the page shows a handful)."""
    if version is None or "feedback_count" not in version.metrics:
        return None
    m = version.metrics
    ids = [str(i) for i in (m.get("feedback_ids") or [])]
    return {"count": m.get("feedback_count"), "plan": [str(p) for p in m.get("plan") or []],
            "dataset_hash": m.get("dataset_hash"), "ids": ids[:SHOWN_IDS],
            "more_ids": max(0, int(m.get("feedback_count") or 0) - SHOWN_IDS),
            "parent_version": version.parent_version}


def requests_of(run: Run) -> list[dict]:
    """Who asked for the run and why (the console's queue form records it), oldest first."""
    asked = run.metrics.get(REQUESTS_KEY)
    return [r for r in asked if isinstance(r, dict)] if isinstance(asked, list) else []


def gate_numbers(metrics: dict) -> dict:
    """The gate's numbers, stored under `gate` in a version's and a run's metrics."""
    gate = metrics.get("gate")
    return gate if isinstance(gate, dict) else {}
