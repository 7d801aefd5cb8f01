"""The suite's results: their dataclasses, the markdown page, the PNG plot (PIL; matplotlib is not installed)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.hardware import Hardware
from bench.load import LoadSummary, percentile
from bench.report import markdown_table, ratio, write

if TYPE_CHECKING:
    from bench.suite import SuiteConfig

GATEWAY_TARGET, PEFT_TARGET = 0.95, 5.0  # issue 5: >= 0.95x vLLM's server, >= 5x the naive PEFT server


@dataclass
class MixedResult:
    """One mixed load: how many distinct adapters it spread over (0 = base model) and what it gave."""

    server: str
    adapters: int
    max_loras: int | None
    summary: LoadSummary


@dataclass
class HotSwapResult:
    """Promote/rollback cycles under load: per swap, the admin call and the first new-version token (ms)."""

    cycles: int
    streams: int
    admin_ms: list[float] = field(default_factory=list)
    first_token_ms: list[float] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    stale_after_ack: int = 0  # requests started after the admin call returned, still on the old version
    first_error: str | None = None

    def stats(self) -> dict[str, float]:
        """p50/p99 of both timings."""
        return {f"{name}_{q}_ms": round(percentile(getattr(self, f"{name}_ms"), int(q[1:])), 1)
                for name in ("admin", "first_token") for q in ("p50", "p99")}


@dataclass
class SuiteReport:
    """Everything the suite measured."""

    hardware: Hardware
    config: SuiteConfig
    compare: dict[str, list[LoadSummary]] = field(default_factory=dict)  # "vllm" / "gateway" -> one per turn
    idle_cpu_s: list[float] = field(default_factory=list)  # the idle server's CPU during the other's turn
    mixed: list[MixedResult] = field(default_factory=list)
    hotswap: HotSwapResult | None = None
    load_average: list[tuple[str, tuple[float, float, float]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def compare_ratios(self) -> list[float]:
        """Gateway / vLLM output tokens/s per turn (turn i of each side ran back to back)."""
        pairs = zip(self.compare.get("vllm", []), self.compare.get("gateway", []), strict=False)
        return [r for v, g in pairs if (r := ratio(g.output_tokens_per_s, v.output_tokens_per_s)) is not None]

    def compare_ratio(self) -> float | None:
        """Median of the per-turn ratios: drift on a shared machine cancels out across the A,B,A,B order."""
        ratios = self.compare_ratios()
        return round(statistics.median(ratios), 3) if ratios else None

    def base_tokens_per_s(self, max_loras: int | None = None) -> float:
        """The base-model tokens/s of the gateway with `max_loras` slots (default: the main one's)."""
        max_loras = max_loras or self.config.flags.max_loras
        return next((m.summary.output_tokens_per_s for m in self.mixed
                     if m.server == "gateway" and not m.adapters and m.max_loras == max_loras), 0.0)

    def ratio_to_base(self, m: MixedResult) -> float | None:
        """A mixed load's tokens/s over the base load on the same gateway (the PEFT one: the main gateway's)."""
        return ratio(m.summary.output_tokens_per_s, self.base_tokens_per_s(m.max_loras))

    def peft_ratio(self, server: str = "peft") -> tuple[float | None, MixedResult | None, MixedResult | None]:
        """Gateway / PEFT server throughput at the same adapter count (`server`: "peft", the naive one, or
        "peft-batched"), the gateway configured for that many adapters (`max_loras` >= the count, as an operator
        serving them would set it) when the suite ran one, else the main gateway; `peft_ratios` has every
        configuration."""
        peft = self._peft(server)
        if peft is None:
            return None, None, None
        gateways = self._gateways_at(peft.adapters)
        sized = [m for m in gateways if (m.max_loras or 0) >= peft.adapters]
        gw = max(sized, key=lambda m: m.summary.output_tokens_per_s) if sized else next(iter(gateways), None)
        value = ratio(gw.summary.output_tokens_per_s, peft.summary.output_tokens_per_s) if gw else None
        return value, gw, peft

    def peft_ratios(self) -> list[tuple[int | None, float | None]]:
        """(max_loras, gateway / naive PEFT throughput) for every gateway run at the PEFT server's adapter count."""
        peft = self._peft()
        if peft is None:
            return []
        return [(m.max_loras, ratio(m.summary.output_tokens_per_s, peft.summary.output_tokens_per_s))
                for m in self._gateways_at(peft.adapters)]

    def _peft(self, server: str = "peft") -> MixedResult | None:
        return next((m for m in self.mixed if m.server == server), None)

    def _gateways_at(self, adapters: int) -> list[MixedResult]:
        return [m for m in self.mixed if m.server == "gateway" and m.adapters == adapters]

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "work_dir")}
        return {
            "benchmark": "flywheel bench suite (issue 5)", "hardware": self.hardware.as_dict(), "config": config,
            "load_average": self.load_average,
            "gateway_vs_vllm": {"turns": {k: [asdict(s) for s in v] for k, v in self.compare.items()},
                                "ratios": self.compare_ratios(), "median_ratio": self.compare_ratio(),
                                "idle_server_cpu_s": self.idle_cpu_s},
            "mixed": [{**asdict(m), "ratio_to_base": self.ratio_to_base(m)}
                      for m in self.mixed],
            "gateway_over_peft": self.peft_ratio()[0],
            "gateway_over_peft_batched": self.peft_ratio("peft-batched")[0],
            "hotswap": {**asdict(self.hotswap), **self.hotswap.stats()} if self.hotswap else None,
            "errors": self.errors,
        }


def _median(summaries: list[LoadSummary], key: str) -> float | int:
    """Median over turns; errors are summed instead (one failed request anywhere matters)."""
    if key == "errors":
        return sum(s.errors for s in summaries)
    return round(statistics.median(getattr(s, key) for s in summaries), 1) if summaries else 0.0


def _compare_section(report: SuiteReport) -> str:
    v, g = report.compare.get("vllm", []), report.compare.get("gateway", [])
    turns = [[i + 1, a.output_tokens_per_s, b.output_tokens_per_s, r] for i, (a, b, r) in
             enumerate(zip(v, g, report.compare_ratios(), strict=False))]
    keys = [("output tokens/s", "output_tokens_per_s"), ("TTFT p50 (ms)", "ttft_p50_ms"),
            ("TTFT p99 (ms)", "ttft_p99_ms"), ("ITL p50 (ms)", "itl_p50_ms"), ("ITL p99 (ms)", "itl_p99_ms"),
            ("errors", "errors")]
    rows = [[label, _median(v, key), _median(g, key), ratio(_median(g, key), _median(v, key))] for label, key in keys]
    value = report.compare_ratio()
    verdict = "not measured" if value is None else ("met" if value >= GATEWAY_TARGET else "NOT met")
    return ("## 1. Gateway vs vLLM's own server (base model)\n\n"
            "Both servers were up side by side and took turns on the same load (vLLM, gateway, vLLM, gateway); "
            f"CPU seconds the idle one used during the other's turn: {report.idle_cpu_s}.\n\n"
            + markdown_table(["turn", "vLLM tokens/s", "gateway tokens/s", "gateway / vLLM"], turns)
            + "\n\nMedians over the turns:\n\n"
            + markdown_table(["metric", "vLLM server", "gateway", "gateway / vLLM"], rows)
            + f"\n\nTarget (gateway >= {GATEWAY_TARGET}x of vLLM's throughput, median ratio): **{verdict}** "
            f"({value}x).")


def _mixed_section(report: SuiteReport) -> str:
    rows = [[m.server, m.max_loras or "-", m.adapters or "base", m.summary.requests - m.summary.errors,
             m.summary.output_tokens_per_s, report.ratio_to_base(m), m.summary.ttft_p50_ms,
             m.summary.itl_p50_ms, m.summary.itl_p99_ms, m.summary.errors] for m in report.mixed]
    value, gw, peft = report.peft_ratio()
    verdict = "not measured" if value is None else ("met" if value >= PEFT_TARGET else "NOT met")
    c = report.config
    each = ", ".join(f"{r}x with max_loras {n}" for n, r in report.peft_ratios())
    peft_line = (f"the naive server ({peft.summary.requests - peft.summary.errors} requests completed in its "
                 f"{c.peft_seconds:.0f} s window, {peft.summary.output_tokens_per_s} tokens/s) against the gateway "
                 f"with max_loras {gw.max_loras} ({gw.summary.output_tokens_per_s} tokens/s) at {peft.adapters} "
                 f"adapters; every gateway configuration at that count: {each}") if gw and peft else "-"
    b_value, b_gw, b_peft = report.peft_ratio("peft-batched")
    batched_line = (f"{b_peft.summary.requests - b_peft.summary.errors} requests completed in its "
                    f"{c.peft_seconds:.0f} s window, {b_peft.summary.output_tokens_per_s} tokens/s; the gateway with "
                    f"max_loras {b_gw.max_loras} is {b_value}x it") if b_gw and b_peft else "not measured"
    return ("## 2. Many adapters through the gateway\n\n"
            f"Request i goes to adapter i mod n (rank {c.lora_rank}, q/k/v/o), {c.concurrency} at once, "
            f"{c.mixed_requests} requests of {c.max_tokens} tokens per load; ratio = tokens/s over the base-model "
            f"load on the same gateway (for the PEFT server: the max_loras {c.flags.max_loras} gateway's).\n\n"
            + markdown_table(["server", "max_loras", "adapters", "requests done", "tokens/s", "ratio to base",
                              "TTFT p50 ms", "ITL p50 ms", "ITL p99 ms", "errors"], rows)
            + "\n\n![throughput vs adapter count](bench_suite_adapters.png)\n\n"
            "## 3. Against the naive transformers + PEFT server\n\n"
            "`bench/peft_server.py`: one model, every adapter added with `load_adapter`, `set_adapter` and "
            f"`generate` under a lock per request ({c.peft_dtype}; the answer comes back whole, so its TTFT is its "
            f"latency). Compared: {peft_line}.\n\nTarget (gateway >= {PEFT_TARGET}x): **{verdict}** ({value}x).\n\n"
            f"The batched variant (`--batched`: requests that wait share one `generate`, each row on its own adapter "
            f"through PEFT's `adapter_names`, up to 16 rows; what a capable user would write): {batched_line}.")


def _hotswap_section(report: SuiteReport) -> str:
    h = report.hotswap
    if h is None:
        return "## 4. Hot-swap under load\n\nSkipped."
    s = h.stats()
    one = next((m for m in report.mixed if m.server == "gateway" and m.adapters == 1), None)
    return ("## 4. Hot-swap under load\n\n"
            f"{h.cycles} cycles of `POST /admin/adapters/swapbench/promote` (to v2) and `/rollback` (to v1) while "
            f"{h.streams} streams of {report.config.swap_max_tokens} tokens kept flowing to that adapter. Swap "
            "latency: from sending the admin call to the first token of the first request started after it that "
            "reports the new version.\n\n"
            + markdown_table(["", "p50 (ms)", "p99 (ms)"], [
                ["admin call (load + alias move)", s["admin_p50_ms"], s["admin_p99_ms"]],
                ["swap latency (to the first new-version token)", s["first_token_p50_ms"], s["first_token_p99_ms"]]])
            + f"\n\nRequests during the cycles: {h.requests}; failed: **{h.failed}** (target 0); started after the "
            f"admin call returned but still served by the old version: **{h.stale_after_ack}** (requests stamped "
            "less than 250 ms before the next admin call are not counted: the client sends that call first, so "
            "they reach the server after it). The swap itself is the "
            "admin call (it loads the version, then moves the alias); the rest of the swap latency is the time to "
            "first token of a new request under 16 LoRA streams" + (
                f" (TTFT p50 of the 1-adapter load in part 2: {one.summary.ttft_p50_ms} ms)" if one else "") + "."
            + (" The stale count should be 0: the admin call refreshes the resolver before it answers."
               if h.stale_after_ack else "")
            + (f" First error: `{h.first_error}`" if h.first_error else ""))


def _lora_cost_section(report: SuiteReport) -> str:
    costs = [f"{m.adapters} adapters, max_loras {m.max_loras}: "
             f"{report.base_tokens_per_s(m.max_loras) / m.summary.output_tokens_per_s:.1f}x"
             for m in report.mixed if m.server == "gateway" and m.adapters and m.summary.output_tokens_per_s]
    return ("## Why LoRA costs this much on this CPU, and what would close the gap\n\n"
            f"Slowdown against the base model (base tokens/s / adapter tokens/s): {'; '.join(costs) or '-'}. "
            "Where it is above 2x, the cause is vLLM's CPU LoRA path, not the gateway (issue 2's run measured "
            "vLLM's own server at the same cost), from reading `vllm/lora/punica_wrapper/punica_cpu.py` and "
            "`vllm/lora/ops/torch_ops/lora_ops.py` and the profile in docs/architecture.md, \"LoRA on the CPU\" "
            "(LoRA ops about two thirds of a 4-adapter step):\n\n"
            "- **Kernel path.** Every LoRA linear (q/k/v as three slices, o) runs `bgmv_shrink` then "
            "`bgmv_expand`: `lora_weights[token_indices]` copies a whole rank x hidden matrix *per token*, then "
            "`einsum('bi,boi->bo')` does one matrix-vector product per token. Tokens of the same adapter share "
            "nothing, so it is memory-bound copying, not GEMM. Prefill (`sgmv_*`) first `repeat_interleave`s the "
            "adapter index over every prompt token, so a 40-token prompt copies its adapter 40 times per slice "
            "per layer. The decode path has no `no_lora` shortcut.\n"
            "- **dtype.** The model and the stacked LoRA weights are bf16, but the shrink buffer is fp32 "
            "(`torch.zeros(..., dtype=torch.float32)`, 'consistent with the triton op'): each call casts the "
            "gathered weights and the input to fp32 and casts back on expand, two more full copies per call.\n"
            "- **Batch shape.** 30 layers x (3 + 1) slices x (shrink + expand) = 240 op groups of ~5 small "
            "tensor ops each per step, whatever the batch size; in eager mode on 2 cores their per-call overhead "
            "is a large share of a 135M model's step. With more distinct adapters than `max_loras`, the scheduler "
            "only batches requests whose adapters fit in the slots, so 16 adapters over 4 slots shrinks the "
            "batch (lower ITL, much higher TTFT in the table: requests wait for a slot) and swaps adapters in and "
            "out of slots (a copy from the CPU cache) as requests finish.\n\n"
            "What would close it, in order of payoff: (1) a grouped kernel, one GEMM per active adapter over its "
            "tokens (`x[rows_of_adapter] @ A_i @ B_i`, the real punica SGMV semantics) instead of a weight copy "
            "per token; multiplying against all slots' stacked A and B at once measured 1.3x on a "
            "4-adapter batch; (2) keep LoRA math in the model dtype (bf16 AMX/AVX-512 GEMM) or pre-cast the "
            "stacked weights once at load, so no per-call casts; (3) compute the index expansion once per step, "
            "not per op (it is the same for every layer); fuse q/k/v shrink into one GEMM against the "
            "concatenated A; (4) `max_loras` >= the number of adapters active at once (slots cost only "
            "rank x hidden x layers of memory at rank 8); (5) for a single hot adapter, serve it merged into the "
            "base weights (zero LoRA cost); (6) run the engine in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, "
            "1.6x offline, docs/architecture.md, \"LoRA on the CPU\") to give the ops the second core.")


def markdown(report: SuiteReport) -> str:
    """The whole page."""
    f, hw = report.config.flags, report.hardware
    loads = "\n".join(f"- {when}: " + ", ".join(f"{x:.2f}" for x in la) for when, la in report.load_average)
    parts = [
        "# Performance suite\n\nProduced by `flywheel bench suite`. **The machine is shared** with other "
        "engineers' tests and training runs (see the load averages: on 2 cores, anything above 2 means the "
        "servers under test got only part of the CPU), so absolute numbers are low and move between runs; the "
        "ratios within one run are what to read.",
        "## Hardware and load\n\n" + hw.markdown() + "\n\nLoad average (1, 5, 15 min) during the run:\n\n" + loads,
        f"## Settings\n\n- Model `{f.model_dir.name}`, {f.engine_dtype}, max model len {f.max_model_len}, LoRA enabled "
        f"(max_loras {f.max_loras}, max_lora_rank {max(f.max_lora_rank, report.config.lora_rank)}), max num seqs "
        f"{f.max_num_seqs}, KV cache {f.kv_cache_gib} GiB, eager mode; same flags for vLLM's server.\n"
        f"- {report.config.concurrency} concurrent streaming requests, {report.config.max_tokens} tokens each, "
        "temperature 0, long-answer prompts; each load is preceded by a few unmeasured warm-up requests.",
        _compare_section(report), _mixed_section(report), _lora_cost_section(report), _hotswap_section(report),
    ]
    if report.errors:
        parts.append("## Errors\n\n" + "\n".join(f"- ```{e[-600:]}```" for e in report.errors))
    return "\n\n".join(parts)


def plot(report: SuiteReport, path: Path) -> Path:
    """A bar chart of output tokens/s per mixed load, drawn with PIL."""
    from PIL import Image, ImageDraw

    bars = [(f"{m.server}\n{'base' if not m.adapters else f'{m.adapters} ad.'}"
             + (f"\nmax_loras {m.max_loras}" if m.max_loras else ""),
             m.summary.output_tokens_per_s, m.server, m.max_loras) for m in report.mixed]
    colors = {("gateway", report.config.flags.max_loras): "#3b6fb6", ("peft", None): "#c0504d",
              ("peft-batched", None): "#e69138"}
    width, height, left, bottom, top = 120 + 110 * max(len(bars), 1), 460, 70, 70, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 15), "Output tokens/s by number of distinct adapters (16 concurrent, same tokens)", fill="black")
    peak = max((b[1] for b in bars), default=1) or 1
    draw.line((left, height - bottom, width - 20, height - bottom), fill="black")
    draw.line((left, top, left, height - bottom), fill="black")
    for tick in range(5):  # y axis: five gridlines with their values
        y = height - bottom - (height - bottom - top) * tick / 4
        draw.line((left - 4, y, width - 20, y), fill="#dddddd")
        draw.text((8, y - 6), f"{peak * tick / 4:.0f}", fill="black")
    for i, (label, value, server, max_loras) in enumerate(bars):
        x = left + 20 + 110 * i
        y = height - bottom - (height - bottom - top) * value / peak
        draw.rectangle((x, y, x + 70, height - bottom), fill=colors.get((server, max_loras), "#6aa84f"))
        draw.text((x, y - 14), f"{value:.1f}", fill="black")
        draw.multiline_text((x, height - bottom + 6), label, fill="black")
    image.save(path)
    return path


def write_suite(report: SuiteReport) -> list[Path]:
    """Write bench_suite.json, bench_suite.md and bench_suite_adapters.png under the config's out_dir."""
    out = report.config.out_dir
    files = list(write(out, "bench_suite", report.as_dict(), markdown(report)))
    if report.mixed:
        files.append(plot(report, out / "bench_suite_adapters.png"))
    return files
