"""Sort py-spy's sampled stacks (`py-spy record --format raw`) into where a decode step's time goes.

Each raw line is `frame;frame;...;frame count`, outermost frame first, a frame being `function (file:line)`;
with `--subprocesses` the first frame names the process (`process 123:"python -m ..."`). A sample is charged to
the first category that matches, reading from the innermost frame outwards, so a base matmul inside a LoRA layer
counts as a base matmul while the LoRA shrink/expand around it counts as LoRA.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# (category, substrings of `function (file` any of which marks it), checked in this order on each frame
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lora shrink/expand", ("lora_ops.py", "/punica_wrapper/", "/lora/ops/", "lora_shrink", "lora_expand")),
    ("lora other", ("/vllm/lora/",)),
    ("attention", ("/attention/", "attn")),
    ("sampling", ("/v1/sample/", "logits_processor", "compute_logits")),
    ("base matmuls", ("layers/linear.py", "vocab_parallel_embedding.py")),
    ("model other", ("/model_executor/",)),
    ("runner inputs", ("/v1/worker/",)),
    ("scheduler/IPC", ("/v1/core/", "/v1/engine/", "zmq", "msgspec", "serial_utils", "engine_wait")),
)
OTHER = "other"
CATEGORIES = tuple(name for name, _ in RULES) + (OTHER,)
PROCESS = re.compile(r'^process (\d+):"(.*)"$')


def category(frames: list[str]) -> str:
    """The category of one stack (outermost frame first)."""
    for frame in reversed(frames):
        frame = frame.replace(" (", " (/")  # py-spy writes paths relative to sys.path: `vllm/lora/...`
        for name, marks in RULES:
            if any(mark in frame for mark in marks):
                return name
    return OTHER


@dataclass
class ProcessSamples:
    """Busy samples of one process (py-spy leaves idle threads out), by category."""

    command: str
    total: int = 0
    by_category: Counter = field(default_factory=Counter)

    def share(self) -> dict[str, float]:
        """Each category's part of the busy samples, 0-1."""
        return {name: self.by_category[name] / self.total if self.total else 0.0 for name in CATEGORIES}


def parse(raw: str) -> dict[int, ProcessSamples]:
    """pid -> its samples, from py-spy's raw output (pid 0 when it was recorded without --subprocesses)."""
    processes: dict[int, ProcessSamples] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        pid, command = 0, ""
        if match := PROCESS.match(frames[0]):
            pid, command, frames = int(match[1]), match[2], frames[1:]
        samples = processes.setdefault(pid, ProcessSamples(command))
        samples.total += int(count)
        samples.by_category[category(frames)] += int(count)
    return processes
