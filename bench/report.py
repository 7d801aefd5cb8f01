"""Writing results: one JSON file with every number, one markdown file a person reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bench.hardware import Hardware


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator rounded to 3 places; None when there is nothing to divide by."""
    return round(numerator / denominator, 3) if denominator else None


def fmt(value: object) -> str:
    """A table cell: floats with sensible precision, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def hardware_section(hardware: Hardware, load_average_at_end: Sequence[float], title: str = "Hardware") -> str:
    """A page's hardware section: the machine, and the load average at the start and the end of the run."""
    return (f"## {title}\n\n" + hardware.markdown() + "\n- Load average when the run ended: "
            + ", ".join(f"{x:.2f}" for x in load_average_at_end))


def write(out_dir: Path, stem: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` under `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
