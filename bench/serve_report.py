"""The numbers and the page of `flywheel bench serve` (docs/bench_serve.md): median, spread and worst round.

Every cell is over the rounds: the median, the worst round (the lowest throughput, the highest latency) and
the range. Ratios are of medians, with the per-round ratios' range beside them (the servers of one round ran
minutes apart, so a round's ratio is the fairest pairing the run has).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bench.report import hardware_section, markdown_table

if TYPE_CHECKING:
    from bench.serve import ServeReport

SERVERS = ("vllm-stock", "vllm-plugins", "gateway")
TITLES = {"vllm-stock": "stock vLLM", "vllm-plugins": "vLLM + Flywheel plugins", "gateway": "gateway"}
METRICS = (  # (label, LoadSummary field, higher is better)
    ("output tokens/s", "output_tokens_per_s", True),
    ("TTFT p50 (ms)", "ttft_p50_ms", False),
    ("TTFT p99 (ms)", "ttft_p99_ms", False),
    ("ITL p50 (ms)", "itl_p50_ms", False),
    ("ITL p99 (ms)", "itl_p99_ms", False),
)
RATIOS = (  # (key, label, (server, load) over (server, load), issue 14's target or None) on output tokens/s
    ("gateway_vs_stock_adapter", "gateway / stock vLLM, 1 adapter", ("gateway", "adapter"),
     ("vllm-stock", "adapter"), 1.5),
    ("gateway_vs_plugins_base", "gateway / vLLM with the same plugins, base", ("gateway", "base"),
     ("vllm-plugins", "base"), 0.95),
    ("gateway_vs_plugins_adapter", "gateway / vLLM with the same plugins, 1 adapter", ("gateway", "adapter"),
     ("vllm-plugins", "adapter"), 0.95),
    ("gateway_adapter_vs_base", "adapter / base on the gateway", ("gateway", "adapter"), ("gateway", "base"), 0.8),
    ("gateway_vs_stock_base", "gateway / stock vLLM, base", ("gateway", "base"), ("vllm-stock", "base"), None),
    ("plugins_vs_stock_adapter", "vLLM + plugins / stock vLLM, 1 adapter", ("vllm-plugins", "adapter"),
     ("vllm-stock", "adapter"), None),
)


@dataclass(frozen=True)
class Spread:
    """One measure over the rounds: median, range, and the worst round's value."""

    median: float
    low: float
    high: float
    worst: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float], higher_is_better: bool = True) -> Spread | None:
        """None for no values; the worst is the lowest value when higher is better, else the highest."""
        if not values:
            return None
        low, high = min(values), max(values)
        return cls(round(statistics.median(values), 3), low, high, low if higher_is_better else high, len(values))

    def cell(self) -> str:
        """`median / worst (low-high)`."""
        return f"{_num(self.median)} / {_num(self.worst)} ({_num(self.low)}-{_num(self.high)})"


def _num(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def metric_spread(report: ServeReport, server: str, load: str, key: str, higher_is_better: bool) -> Spread | None:
    """That server's `key` over its rounds of `load`."""
    return Spread.of([getattr(s, key) for s in report.summaries(server, load)], higher_is_better)


def ratio_result(report: ServeReport, over: tuple[str, str], under: tuple[str, str]) -> dict | None:
    """Throughput ratio of medians, and the range of the per-round ratios (rounds where both sides ran)."""
    num, den = (metric_spread(report, *side, "output_tokens_per_s", True) for side in (over, under))
    if not num or not den or not den.median:
        return None
    per_round = []
    for r in range(1, len(report.orders) + 1):
        a, b = (_round_value(report, r, *side) for side in (over, under))
        if a is not None and b:
            per_round.append(round(a / b, 3))
    rounds = Spread.of(per_round)
    return {"median_ratio": round(num.median / den.median, 3), "per_round": per_round,
            "worst_round": rounds.worst if rounds else None, "best_round": rounds.high if rounds else None}


def _round_value(report: ServeReport, round_: int, server: str, load: str) -> float | None:
    for t in report.turns:
        if t.server == server and t.round == round_ and getattr(t, load):
            return getattr(t, load).output_tokens_per_s
    return None


def summary_data(report: ServeReport) -> dict:
    """The aggregates for the JSON file: spreads per server, load and metric; the ratios against their targets."""
    spreads = {server: {load: {key: asdict(s) if (s := metric_spread(report, server, load, key, up)) else None
                               for _, key, up in METRICS} for load in ("base", "adapter")} for server in SERVERS}
    ratios = {}
    for key, label, over, under, target in RATIOS:
        result = ratio_result(report, over, under)
        ratios[key] = {"label": label, "target": target, **(result or {})}
    return {"spreads": spreads, "ratios": ratios, "plugins": {s: report.plugins(s) for s in SERVERS}}


def results_table(report: ServeReport, load: str) -> str:
    """One load's table: a row per metric, a column per server."""
    rows = [[label, *((s.cell() if (s := metric_spread(report, server, load, key, up)) else "-")
                      for server in SERVERS)] for label, key, up in METRICS]
    return markdown_table(["metric", *(TITLES[s] for s in SERVERS)], rows)


def ratios_table(report: ServeReport) -> str:
    """Each ratio of median throughputs, its rounds' range, and its target."""
    rows = []
    for _, label, over, under, target in RATIOS:
        result = ratio_result(report, over, under)
        if result is None:
            rows.append([label, "-", "-", f">= {target}x" if target else "-", "not measured"])
            continue
        value, worst = result["median_ratio"], result["worst_round"]
        verdict = "-" if target is None else ("met" if value >= target else "NOT met")
        if target is not None and worst is not None:
            verdict += f" (worst round {'met' if worst >= target else 'not'})"
        spread = f"{worst:.3f}-{result['best_round']:.3f}" if worst is not None else "-"
        rows.append([label, f"{value:.3f}x", spread, f">= {target}x" if target else "-", verdict])
    return markdown_table(["ratio (output tokens/s)", "of medians", "per round (worst-best)", "issue 14 target",
                           "verdict"], rows)


def rounds_table(report: ServeReport) -> str:
    """Every turn: its round, place, load average at its start, start-up time and throughputs."""
    rows = []
    for t in report.turns:
        tps = [f"{s.output_tokens_per_s:.1f}" if (s := getattr(t, load)) else "-" for load in ("base", "adapter")]
        rows.append([t.round, t.place, TITLES[t.server], f"{t.load_average[0]:.2f}", t.startup_s, *tps,
                     "error" if t.error else ""])
    return markdown_table(["round", "place", "server", "load avg (1 min) at start", "start-up s",
                           "base tokens/s", "adapter tokens/s", ""], rows)


def _plugin_line(report: ServeReport, server: str) -> str:
    names = report.plugins(server)
    shown = "not in its log" if names is None else (", ".join(f"`{n}`" for n in names) or "none")
    how = {"vllm-stock": '`VLLM_PLUGINS=""`', "vllm-plugins": "`VLLM_PLUGINS` unset",
           "gateway": "`VLLM_PLUGINS` unset, vLLM in the gateway's process"}[server]
    return f"  - {TITLES[server]} ({how}): {shown}"


def _cpu_section(report: ServeReport) -> str | None:
    rows = []
    for load in ("base", "adapter"):
        for server in SERVERS:
            turns = [t for t in report.turns if t.server == server and getattr(t, load) and t.cpu_s.get(load)]
            per_k = [(t.cpu_s[load]["api_process"] * 1000 / getattr(t, load).tokens_out,
                      t.cpu_s[load]["engine"] * 1000 / getattr(t, load).tokens_out)
                     for t in turns if getattr(t, load).tokens_out]
            if per_k:
                rows.append([load, TITLES[server], round(statistics.median(a for a, _ in per_k), 3),
                             round(statistics.median(e for _, e in per_k), 3)])
    if not rows:
        return None
    return ("## Where the CPU went\n\nMedian over the rounds of CPU seconds per 1,000 output tokens during each "
            "measured load: the server's API process (HTTP, tokenizing, streaming) and its engine processes. On "
            "2 cores, API-process CPU is taken from the engine.\n\n"
            + markdown_table(["load", "server", "API process CPU s / 1k tokens", "engine CPU s / 1k tokens"], rows))


def _settings(report: ServeReport) -> str:
    c, f = report.config, report.config.flags
    return (
        "## Settings\n\n"
        f"- Model: `{f.model_dir.name}`, dtype {f.engine_dtype} (the gateway's `FLYWHEEL_DTYPE={f.dtype}` "
        f"resolved on this machine; vLLM's servers get it as `--dtype`), max model len {f.max_model_len}, LoRA "
        f"enabled (max loras {f.max_loras}, max CPU loras {f.max_cpu_loras}, max rank {f.max_lora_rank}), max num "
        f"seqs {f.max_num_seqs}, KV cache {f.kv_cache_gib} GiB, eager mode; the same on all three servers\n"
        f"- Load per turn: {c.concurrency} concurrent streams, {c.requests} requests on the base model and "
        f"{c.adapter_requests} on one rank-{c.lora_rank} adapter (q/k/v/o, random weights), {c.max_tokens} tokens "
        f"each (temperature 0, long-answer prompts), each after {c.warmup_requests} warm-up requests of its own "
        "shape; base first in odd rounds, the adapter first in even ones. The single-pass page before issue 14 "
        "ran 64 base-model and 32 adapter requests once per server; the default is now 16 of each per turn "
        "(one wave of the 16 streams), since 4 rounds of 3 servers is 12 starts, and the rounds are what show "
        "the spread\n"
        "- The load generator runs in the benchmark's own process at normal niceness, unpinned (unlike "
        "`flywheel bench feedback`'s, at nice 5); the adapter is named in `model` on vLLM's servers "
        "(`--lora-modules`) and in the `adapter` field on the gateway (registered as its production alias)\n"
        "- The gateway pins its API and vLLM's engine-core process off the engine worker's core "
        "(server/cpu_affinity.py); vLLM's own server does not pin anything\n"
        "- vLLM's general plugins, as each server's log says vLLM loaded them (a logging config sets only "
        "`vllm.plugins` to DEBUG, the same on all three):\n"
        + "\n".join(_plugin_line(report, s) for s in SERVERS))


def _rounds_section(report: ServeReport) -> str:
    orders = "\n".join(f"{i}. " + " -> ".join(TITLES[s] for s in order) for i, order in enumerate(report.orders, 1))
    return ("## Rounds\n\nOne server at a time: each turn starts the server, warms it, measures both loads and "
            "stops it. Round r's order is the servers rotated by r // 2, reversed on odd rounds, so over 4 "
            "rounds each server's places add up the same.\n\n" + orders + "\n\n" + rounds_table(report))


def _swap_section(report: ServeReport) -> str | None:
    if not report.swap:
        return None
    s = report.swap.stats()
    return (
        "## Hot-swap latency\n\nOnce per run, on the last round's gateway after its loads: from the promote to the "
        "first response that reports the new version (each promote goes to a new version, so it includes "
        f"loading its weights; idle gateway, {report.swap.swaps_per_way} swaps per way; registry poll every "
        f"{report.swap.poll_seconds} s).\n\n"
        + markdown_table(["promote via", "p50 (ms)", "p99 (ms)"], [
            ["POST /admin/adapters/{name}/promote", s["api_p50_ms"], s["api_p99_ms"]],
            ["registry move from another process (CLI, trainer)", s["registry_p50_ms"], s["registry_p99_ms"]],
        ]) + "\n\nTarget (issue 2): within 2 s; "
        + ("**met**." if max(s["api_p99_ms"], s["registry_p99_ms"]) < 2000 else "**NOT met**."))


def markdown(report: ServeReport) -> str:
    """The whole page: hardware and conditions, the three-column tables, ratios, rounds, CPU, swaps, errors."""
    n, planned = len(report.orders), report.config.rounds
    done = f"{n} rounds" if n == planned else f"{n} of {planned} planned rounds (the run stopped early)"
    parts = [
        "# Stock vLLM, vLLM with Flywheel's plugins, and the gateway",
        "Produced by `flywheel bench serve`. Three servers, the same model, engine flags and load, in "
        f"{done}, the order rotated every round, one server at a time. Each cell: **median / worst "
        f"round (lowest-highest)** over the rounds; the worst round is the lowest throughput or the "
        "highest latency.",
        hardware_section(report.hardware, report.load_average_at_end),
        _settings(report),
        "## Results: base model\n\n" + results_table(report, "base"),
        f"## Results: one rank-{report.config.lora_rank} adapter\n\n" + results_table(report, "adapter"),
        "## Ratios\n\nOutput tokens/s, ratio of the medians; the per-round ratios pair the servers of one "
        "round.\n\n" + ratios_table(report),
        _rounds_section(report),
        _cpu_section(report),
        _swap_section(report),
    ]
    errors = [f"- round {t.round}, {TITLES[t.server]} failed: ```{t.error[-500:]}```" for t in report.turns
              if t.error]
    if errors:
        parts.append("## Errors\n\n" + "\n".join(errors))
    parts.append(
        "## Caveats\n\n- The machine has few cores, shared by the server's API process, its engine process "
        "and the load generator; other work on the machine (see the load averages above and per turn) moves "
        "absolute numbers, so compare the ratios of one run rather than numbers across runs.")
    return "\n\n".join(p for p in parts if p)
