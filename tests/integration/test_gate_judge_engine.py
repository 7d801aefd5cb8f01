"""The gate's pairwise judge against a real OpenAI-compatible endpoint: the gateway serving the base model."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Gateway
from trainer import judge
from trainer.config import GateConfig
from trainer.gate import _check_judge

pytestmark = pytest.mark.integration

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "user", "content": "Name a primary colour."}]]
CANDIDATE = ["The capital of France is Paris.", "Red is a primary colour."]
PRODUCTION = ["banana banana banana", "I refuse to answer."]


def test_every_verdict_parses_through_the_schema_and_both_orders_are_asked(gateway: Gateway):
    url = f"{gateway.url}/v1"
    verdict = judge.judge(url, "base", None, [p[0]["content"] for p in PROMPTS], CANDIDATE, PRODUCTION)
    assert verdict.wins + verdict.losses + verdict.unparsed == 2 * len(PROMPTS)
    assert verdict.wins + verdict.losses >= len(PROMPTS)  # the schema leaves the judge "A" or "B" to say
    assert 0.0 <= verdict.win_rate <= 1.0
    assert [s["candidate"] for s in verdict.samples] == CANDIDATE

    metrics, reasons = {}, []
    _check_judge(GateConfig(judge_url=url, judge_model="base", min_judge_win_rate=0.0),
                 (PROMPTS, CANDIDATE, PRODUCTION), metrics, reasons)
    assert reasons == [] and metrics["judge_model"] == "base"
    assert metrics["judge_wins"] + metrics["judge_losses"] + metrics["judge_unparsed"] == 2 * len(PROMPTS)


def test_a_model_the_endpoint_does_not_serve_rejects_the_candidate(gateway: Gateway):
    metrics, reasons = {}, []
    _check_judge(GateConfig(judge_url=f"{gateway.url}/v1", judge_model="no-such-adapter"),
                 (PROMPTS, CANDIDATE, PRODUCTION), metrics, reasons)
    assert len(reasons) == 1 and "judge: cannot score the candidate" in reasons[0] and "404" in reasons[0]
