"""The soak's files: bench_soak.json (every series), bench_soak.md (the page), bench_soak.png (the plot)."""

from __future__ import annotations

from pathlib import Path

from bench.cpu import CLIENT_NICE
from bench.report import hardware_section, markdown_table, write
from bench.soak_plot import plot
from bench.soak_report import MAX_P99_RATIO, MAX_RSS_GROWTH, SoakReport, p99_flatness, sample_at

STEM = "bench_soak"


def window_rows(report: SoakReport) -> list[list[object]]:
    """One row per window: its chat latency, and the gateway's state sampled at its end (console and page)."""
    rows = []
    for w in report.windows():
        s = sample_at(report.samples, w.end_s)
        swaps = ", ".join(f"{e.action} v{e.version}" for e in report.swaps if w.start_s <= e.t_s < w.end_s)
        rows.append([f"{w.index}{' (warm-up)' if w.warmup else ''}", f"{w.start_s:.0f}-{w.end_s:.0f}", w.requests,
                     w.errors, w.p50_ms, w.p99_ms, w.ttft_p50_ms, w.ttft_p99_ms,
                     *((s.gateway_rss_mib, s.engine_rss_mib, s.gateway_fds, s.feedback_wal_kib, s.registry_wal_kib)
                       if s else ("-",) * 5), swaps or "-"])
    return rows


WINDOW_HEADERS = ["window", "s", "requests", "errors", "p50 ms", "p99 ms", "TTFT p50 ms", "TTFT p99 ms",
                  "gateway RSS MiB", "engine RSS MiB", "gateway fds", "feedback WAL KiB", "registry WAL KiB", "swaps"]


def _verdict(met: bool) -> str:
    return "**pass**" if met else "**FAIL**"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def _change(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:+,.0f}{unit}"


def command(report: SoakReport) -> str:
    """The command line that reproduces this run."""
    c = report.config
    return (f"flywheel bench soak --duration {c.duration_s:g} --concurrency {c.concurrency} --max-tokens "
            f"{c.max_tokens} --adapter-ranks {','.join(map(str, c.adapter_ranks))} --feedback-rate "
            f"{c.feedback_rate:g} --swap-every {c.swap_every_s:g} --window {c.window_s:g} --warmup {c.warmup_s:g}")


def _targets_section(report: SoakReport) -> str:
    met, growth, errors, drift = report.targets(), report.rss_growth(), report.errors(), report.drift()
    first, last, p99_ratio = p99_flatness(report.windows())
    flat = (f"window {first.index} p99 {first.p99_ms:,.0f} ms, window {last.index} p99 {last.p99_ms:,.0f} ms: "
            f"{p99_ratio}x" if first and last else "not enough windows after the warm-up")
    verdict = "PASS" if all(met.values()) else "FAIL"
    return (f"## Result: {verdict}\n\n"
            f"- 0 errors: {_verdict(met['zero_errors'])} ("
            + (", ".join(f"{kind}: {n}" for kind, n in errors.items()) or "none") + ")\n"
            f"- RSS growth under {MAX_RSS_GROWTH:.0%} after the warm-up: {_verdict(met['rss_growth_under_5_percent'])} "
            f"(gateway {_pct(growth['gateway'])}, engine processes {_pct(growth['engine'])})\n"
            f"- p99 flat: {_verdict(met['p99_flat'])} ({flat})\n"
            f"- Not targets, for the record, from the end of the warm-up to the end: gateway fds "
            f"{_change(drift['gateway_fds'])}, engine processes' fds {_change(drift['engine_fds'])}, feedback WAL "
            f"{_change(drift['feedback_wal_kib'], ' KiB')}, registry WAL {_change(drift['registry_wal_kib'], ' KiB')}"
            "\n\n"
            "What the targets mean here: *errors* are every failed chat request (HTTP error, error event in the "
            "stream, timeout after "
            f"{report.config.request_timeout_s:.0f} s), failed feedback submission, failed admin call, and the "
            "gateway exiting or not answering `/ready` after the run. *RSS growth* is the last sample over the "
            f"first sample at or after the warm-up ({report.config.warmup_s:.0f} s), minus one, for the gateway's "
            "process and for its engine processes (all its descendants) summed. *p99 flat* means the last "
            f"window's chat latency p99 is at most {MAX_P99_RATIO}x the first post-warm-up window's; a window "
            "holds the requests that *started* in it (a last partial window joins the one before).")


def _swaps_section(report: SoakReport) -> str:
    rows = [[f"{s.t_s:.1f}", s.action, f"v{s.version}", s.admin_ms, ms, s.error or "-"]
            for s, ms in zip(report.swaps, report.first_served_ms(), strict=True)]
    return (f"## Promote / rollback of `{report.config.swap_adapter}`\n\n"
            + markdown_table(["at s", "call", "production to", "admin call ms", "first new-version token ms",
                              "error"], rows)
            + "\n\nFirst new-version token: from the admin call to the first token of the first request started "
              "after it that reports the new version.")


def _feedback_section(report: SoakReport) -> str:
    fb, c = report.feedback, report.config
    if not fb:
        return "## Feedback\n\nNo feedback window finished."
    return ("## Feedback beside the chat\n\n"
            f"Paced at {c.feedback_rate:g}/s ({c.feedback_inflight} in flight), {sum(f.submitted for f in fb):,} "
            f"submissions in {len(fb)} windows; per window: rate {min(f.per_s for f in fb):,.1f} to "
            f"{max(f.per_s for f in fb):,.1f}/s, p99 {min(f.p99_ms for f in fb):.1f} to "
            f"{max(f.p99_ms for f in fb):.1f} ms, errors {sum(f.errors for f in fb)}.")


def markdown(report: SoakReport) -> str:
    """The whole page."""
    c, f = report.config, report.config.flags
    adapters = ", ".join(f"`{name}` rank {rank}" for name, rank in zip(c.adapter_names(), c.adapter_ranks,
                                                                       strict=True))
    counts = ", ".join(f"{t} {n}" for t, n in report.as_dict()["requests_by_target"].items())
    return "\n\n".join([
        "# Soak: mixed chat, feedback and hot-swaps against one gateway",
        f"Produced by `flywheel bench soak`; this run: `{command(report)}`.",
        _targets_section(report),
        hardware_section(report.hardware, report.load_average_at_end, "Hardware and load"),
        f"## Settings\n\n- One gateway on a fresh data directory: model `{f.model_dir.name}`, {f.engine_dtype}, "
        f"max model len {f.max_model_len}, max_loras {f.max_loras}, max num seqs {f.max_num_seqs}, KV cache "
        f"{f.kv_cache_gib} GiB, eager mode, no trainer.\n"
        f"- {c.duration_s:.0f} s of {c.concurrency} chat streams (streaming, {c.max_tokens} tokens, temperature 0), "
        f"request i to the base model or an adapter in turn: base, {adapters} (random PEFT LoRAs on q/k/v/o). "
        f"Requests: {len(report.records):,} ({counts}).\n"
        f"- Every {c.swap_every_s:g} s, production of `{c.swap_adapter}` moves through the admin API: promote to "
        "v2 and rollback to v1 in turn (each loads the version into vLLM).\n"
        f"- Feedback paced at {c.feedback_rate:g}/s on {c.completions} real completions, in a process of its own.\n"
        f"- Every {c.sample_every_s:g} s: RSS of the gateway and of its engine processes (vLLM's engine core and "
        "worker, found as its descendants with psutil), the gateway's open file descriptors, and the sizes of "
        "`feedback.db-wal` and `registry.db-wal` in its data directory.\n"
        f"- The load generators run on this machine at nice {CLIENT_NICE}, pinned off the engine worker's cores, "
        f"as `flywheel bench feedback` runs them (CPU(s) {report.client_cores or 'any'}); traffic goes to "
        "127.0.0.1 only. Every loop stops by itself, at the deadline or at its request count.",
        "## Over time\n\n![latency, RSS and fds over time](bench_soak.png)\n\n"
        + markdown_table(WINDOW_HEADERS, window_rows(report)),
        _swaps_section(report), _feedback_section(report),
        "## Caveats\n\n- RSS counts pages shared between processes (libraries, torch) in each of them; growth is "
        "what to read, not the sum. The gateway's RSS also holds bounded caches that fill as the feedback "
        "database grows (SQLite's page cache of each connection, the refs of recent completions), so at high "
        "feedback rates part of the growth is those caches filling, not a leak.\n- A WAL file's size is a "
        "high-water mark: SQLite reuses the file from the "
        "start after a checkpoint and does not shrink it, so a WAL that stays level is checkpointed; one that "
        "keeps growing is not.\n- On 2 shared cores, other work on the machine moves latency (see the load "
        "averages); flatness compares windows of the same run.",
    ])


def write_soak(report: SoakReport) -> list[Path]:
    """Write bench_soak.json, bench_soak.md and bench_soak.png under the config's out_dir."""
    out = report.config.out_dir
    files = list(write(out, STEM, report.as_dict(), markdown(report)))
    files.append(plot(report, out / f"{STEM}.png"))
    return files

