"""Resident memory and open file descriptors of the gateway and its engine processes, and its WAL files' sizes.

vLLM's engine core and worker run as children of the gateway (they rename themselves `VLLM::EngineCore`,
`VLLM::Worker`); psutil, which vLLM depends on, finds them as the gateway's descendants.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from bench.soak_report import Sample

MIB = 1024 * 1024
WAL_FILES = ("feedback.db-wal", "registry.db-wal")


class GatewayGone(RuntimeError):
    """The gateway's process is no longer there to sample."""


class Sampler:
    """Takes `Sample`s of the gateway `pid` whose data directory is `data_dir`."""

    def __init__(self, pid: int, data_dir: Path):
        self.process = psutil.Process(pid)
        self.data_dir = data_dir

    def sample(self, t_s: float) -> Sample:
        """One sample, stamped `t_s`; raises `GatewayGone` when the gateway has exited."""
        try:
            rss, fds = self.process.memory_info().rss, self.process.num_fds()
            children = self.process.children(recursive=True)
        except psutil.NoSuchProcess as e:
            raise GatewayGone(f"the gateway (pid {self.process.pid}) exited") from e
        per_name: dict[str, float] = {}
        child_rss = child_fds = 0
        for child in children:
            try:
                name, child_mem, n = child.name(), child.memory_info().rss, child.num_fds()
            except psutil.Error:  # a short-lived helper that is already gone
                continue
            per_name[name] = round(per_name.get(name, 0.0) + child_mem / MIB, 1)
            child_rss, child_fds = child_rss + child_mem, child_fds + n
        wal = [self._kib(name) for name in WAL_FILES]
        return Sample(t_s=round(t_s, 2), gateway_rss_mib=round(rss / MIB, 1), engine_rss_mib=round(child_rss / MIB, 1),
                      gateway_fds=fds, engine_fds=child_fds, feedback_wal_kib=wal[0], registry_wal_kib=wal[1],
                      processes=per_name)

    def _kib(self, name: str) -> float:
        try:
            return round((self.data_dir / name).stat().st_size / 1024, 1)
        except FileNotFoundError:  # no WAL yet (nothing written), or SQLite removed it on a clean close
            return 0.0
