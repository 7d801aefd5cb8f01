"""Stats per adapter version and the `flywheel feedback` CLI."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from feedback.cli import app
from feedback.stats import version_stats
from feedback.store import FeedbackStore

runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that rich does not wrap cells


def _fill(store, make_completion) -> None:
    day = 86_400
    for version, ratings in ((1, ["up", "down", "down"]), (2, ["up", "up", "up", "down"])):
        for i, rating in enumerate(ratings):
            rec = make_completion(
                f"q{i}", f"a{version}{i}", version=version, created_at=time.time() - i * day
            )
            store.record_completion(rec)
            store.add_feedback(rec.id, rating, correction="better" if rating == "down" else None)
    base = make_completion("q", "base answer", adapter=None, version=None)
    store.record_completion(base)
    store.add_pair(prompt=[{"role": "user", "content": "q"}], chosen="x", rejected="y", adapter="bot")
    store.flush()


def test_version_stats(store, make_completion):
    _fill(store, make_completion)
    rows = {(s.adapter, s.adapter_version): s for s in version_stats(store)}
    assert rows[("bot", 1)].completions == 3 and (rows[("bot", 1)].up, rows[("bot", 1)].down) == (1, 2)
    assert rows[("bot", 2)].up_rate == 0.75 and rows[("bot", 2)].corrections == 1
    assert rows[("bot", None)].pairs == 1  # text pairs have no version
    assert rows[(None, None)].completions == 1 and rows[(None, None)].up_rate is None
    assert [s.adapter for s in version_stats(store, "bot")] == ["bot"] * 3
    by_day = version_stats(store, "bot", by_day=True)
    assert len({s.day for s in by_day}) == 4
    assert sum(s.up for s in by_day) == 4
    assert by_day[0].as_dict()["up_rate"] is not None or by_day[0].ratings == 0


def test_cli_export_and_stats(tmp_path, make_completion):
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        _fill(store, make_completion)
    out, held = tmp_path / "sft.jsonl", tmp_path / "held.jsonl"
    args = ["export", "--adapter", "bot", "--kind", "sft", "--out", str(out), "--held-out-out", str(held)]
    result = runner.invoke(app, [*args, "--db", str(db), "--held-out-fraction", "0", "--correction-weight", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # 3 corrections (q1, q2, q3) + the 2 up-rated answers to q0 (ups on corrected q1, q2 are outranked)
    assert len(rows) == 5 and held.read_text() == ""
    result = runner.invoke(app, ["stats", "--db", str(db), "--by-day"])
    assert result.exit_code == 0, result.output
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert "up-rate" in result.output and today in result.output
    result = runner.invoke(app, ["stats", "--db", str(db), "--adapter", "bot"])
    assert "75%" in result.output


def test_cli_errors_are_usage_errors(tmp_path):
    missing = runner.invoke(app, ["stats", "--db", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no feedback database" in missing.output
    db = tmp_path / "f.db"
    FeedbackStore(db).close()
    bad_kind = runner.invoke(app, ["export", "--adapter", "bot", "--kind", "ppo", "--db", str(db)])
    assert bad_kind.exit_code == 2 and "sft, dpo or kto" in bad_kind.output
    bad_fraction = runner.invoke(
        app, ["export", "--adapter", "bot", "--kind", "sft", "--db", str(db), "--held-out-fraction", "2"]
    )
    assert bad_fraction.exit_code == 2 and "held_out_fraction" in bad_fraction.output
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    assert runner.invoke(app, ["stats", "--db", str(garbage)]).exit_code == 2
