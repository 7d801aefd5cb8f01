"""Several processes (gateway replicas, CLI, trainer) share one feedback database."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from feedback.store import FeedbackStore

REPO = Path(__file__).resolve().parents[2]

# Each process rates the same 50 completions with the same 300 feedback ids (plus 100 of its own).
WORKER = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from feedback.store import FeedbackStore

    db, tag = sys.argv[1], sys.argv[2]
    with FeedbackStore(db) as store:
        def submit(i):
            key = f"shared-{i}" if i < 300 else f"{tag}-{i}"
            return store.add_feedback(f"c{i % 50}", "up", feedback_id=key).record.id
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(400)))
    print(" ".join(ids[:300]))
    """
)


def test_processes_share_idempotency_and_lose_nothing(tmp_path, make_completion):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        for i in range(50):
            store.record_completion(make_completion(f"q{i}", "a", id=f"c{i}"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), tag], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for tag in ("a", "b", "c")
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] == outputs[2]  # every process got the first record for a shared id
    with FeedbackStore(db) as store:
        assert store.count_signals("bot") == 300 + 3 * 100
