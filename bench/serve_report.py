"""The markdown page for issue 2's benchmark (docs/bench_serve.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.load import LoadSummary
from bench.report import hardware_section, markdown_table, ratio

if TYPE_CHECKING:
    from bench.serve import ServeReport

THROUGHPUT_TARGET = 0.95  # issue 2: gateway throughput at least 0.95x of vLLM's own server
ROWS = (  # (label, LoadSummary field)
    ("output tokens/s", "output_tokens_per_s"),
    ("requests/s", "requests_per_s"),
    ("TTFT p50 (ms)", "ttft_p50_ms"),
    ("TTFT p99 (ms)", "ttft_p99_ms"),
    ("ITL p50 (ms)", "itl_p50_ms"),
    ("ITL p99 (ms)", "itl_p99_ms"),
    ("request latency p50 (ms)", "latency_p50_ms"),
    ("request latency p99 (ms)", "latency_p99_ms"),
    ("tokens out", "tokens_out"),
    ("errors", "errors"),
)


def _cpu_rows(report: ServeReport) -> list[list[object]]:
    """CPU seconds per 1,000 output tokens, API process and engine, per load and server."""
    rows = []
    for load in ("base", "adapter"):
        for side in (report.vllm, report.gateway):
            summary, cpu = getattr(side, load), side.cpu_s.get(load)
            if summary and cpu and summary.tokens_out:
                per_k = 1000 / summary.tokens_out
                rows.append([load, side.server, cpu["api_process"], cpu["engine"],
                             round(cpu["api_process"] * per_k, 3), round(cpu["engine"] * per_k, 3)])
    return rows


def _load_rows(load: str, vllm: LoadSummary | None, gateway: LoadSummary | None) -> list[list[object]]:
    rows = []
    for label, key in ROWS:
        v = getattr(vllm, key) if vllm else None
        g = getattr(gateway, key) if gateway else None
        rows.append([load, label, v, g, ratio(g, v) if isinstance(v, float) and isinstance(g, float) else None])
    return rows


def _verdict(report: ServeReport) -> str:
    value = report.ratios().get("base_throughput")
    if value is None:
        return "Target (gateway throughput >= 0.95x of vLLM's server): **not measured** (a side failed)."
    met = "met" if value >= THROUGHPUT_TARGET else "NOT met"
    return f"Target (gateway throughput >= 0.95x of vLLM's server, base model): **{met}** ({value:.3f}x)."


def markdown(report: ServeReport) -> str:
    """The whole page: hardware, settings, the comparison table, swap latency, caveats."""
    c, f, hw = report.config, report.config.flags, report.hardware
    rows = _load_rows("base", report.vllm.base, report.gateway.base)
    if report.vllm.adapter or report.gateway.adapter:
        rows += _load_rows(f"rank-{c.lora_rank} adapter", report.vllm.adapter, report.gateway.adapter)
    parts = [
        "# Gateway vs vLLM's own OpenAI server",
        "Produced by `flywheel bench serve`. Same model, engine flags and load on both; the servers ran "
        "one after the other, never at once.",
        hardware_section(hw, report.load_average_at_end),
        "## Settings\n\n"
        f"- Model: `{f.model_dir.name}`, dtype {f.engine_dtype}, max model len {f.max_model_len}, LoRA enabled "
        f"(max loras {f.max_loras}, max rank {f.max_lora_rank}), max num seqs {f.max_num_seqs}, "
        f"KV cache {f.kv_cache_gib} GiB, eager mode\n"
        f"- Load: {c.concurrency} concurrent streams, {c.requests} requests on the base model and "
        f"{c.adapter_requests} on the adapter, {c.max_tokens} tokens each (temperature 0, long-answer prompts), "
        f"after {c.warmup_requests} warm-up requests\n"
        f"- Start-up to ready: vLLM {report.vllm.startup_s} s, gateway {report.gateway.startup_s} s",
        "## Results\n\n" + markdown_table(["load", "metric", "vLLM server", "gateway", "gateway / vLLM"], rows)
        + "\n\n" + _verdict(report),
    ]
    cpu = _cpu_rows(report)
    if cpu:
        parts.append(
            "## Where the CPU went\n\nCPU seconds during each measured load: the server's API process (HTTP, "
            "tokenizing, streaming) and its engine process (vLLM's engine core). On 2 cores, API-process CPU "
            "is taken from the engine.\n\n" + markdown_table(
                ["load", "server", "API process CPU s", "engine CPU s", "API CPU s / 1k tokens",
                 "engine CPU s / 1k tokens"], cpu))
    if report.swap:
        s = report.swap.stats()
        parts.append(
            "## Hot-swap latency\n\nFrom the promote to the first response that reports the new version "
            f"(each promote goes to a new version, so it includes loading its weights; idle gateway, "
            f"{report.swap.swaps_per_way} swaps per way; registry poll every {report.swap.poll_seconds} s).\n\n"
            + markdown_table(["promote via", "p50 (ms)", "p99 (ms)"], [
                ["POST /admin/adapters/{name}/promote", s["api_p50_ms"], s["api_p99_ms"]],
                ["registry move from another process (CLI, trainer)", s["registry_p50_ms"], s["registry_p99_ms"]],
            ]) + "\n\nTarget (issue 2): within 2 s; "
            + ("**met**." if max(s["api_p99_ms"], s["registry_p99_ms"]) < 2000 else "**NOT met**.")
        )
    errors = [f"- {side.server} failed: ```{side.error[-500:]}```" for side in (report.vllm, report.gateway)
              if side.error]
    if errors:
        parts.append("## Errors\n\n" + "\n".join(errors))
    parts.append(
        "## Caveats\n\n- The machine has few cores, shared by the server's API process, its engine process "
        "and the load generator; other work on the machine (see the load averages above) moves absolute "
        "numbers, so compare the ratios of one run rather than numbers across runs."
    )
    return "\n\n".join(parts)
