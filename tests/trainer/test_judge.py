"""The gate's optional judge: its settings, secrets kept out of lineage, and an endpoint that cannot answer."""

from __future__ import annotations

import socket

import pytest
from trainer_samples import user

from trainer import judge
from trainer.config import GateConfig, config_dict
from trainer.gate import _check_judge

REPLIES = ([user("Name a colour.")], ["Blue."], ["Potato."])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_judge_url_needs_a_model_and_the_win_rate_is_a_share() -> None:
    with pytest.raises(ValueError, match="judge_model"):
        GateConfig(judge_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="min_judge_win_rate"):
        GateConfig(judge_url="http://127.0.0.1:9/v1", judge_model="m", min_judge_win_rate=1.5)
    assert GateConfig().judge_url is None  # off by default


def test_the_api_key_is_never_stored_with_a_version() -> None:
    config = GateConfig(judge_url="http://127.0.0.1:9/v1", judge_model="m", judge_api_key="sk-secret")
    stored = config_dict(config)["GateConfig"]
    assert stored["judge_api_key"] == "(set)" and "sk-secret" not in repr(config)
    assert config_dict(GateConfig())["GateConfig"]["judge_api_key"] is None


def test_an_unreachable_judge_rejects_the_candidate_with_a_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(judge.JudgeUnavailable, match="Connection"):
        judge.judge(url, "m", None, ["Name a colour."], ["Blue."], ["Potato."], timeout_s=5)
    metrics, reasons = {}, []
    _check_judge(GateConfig(judge_url=url, judge_model="m"), REPLIES, metrics, reasons)
    assert len(reasons) == 1 and reasons[0].startswith(f"judge: cannot score the candidate at {url}")
    assert "judge_win_rate" not in metrics


def test_no_traffic_prompts_skip_the_judge_and_say_so() -> None:
    metrics, reasons = {}, []
    _check_judge(GateConfig(judge_url="http://127.0.0.1:9/v1", judge_model="m"), ([], [], []), metrics, reasons)
    assert reasons == [] and metrics["judge_skipped"] == "no held-out traffic prompts"
