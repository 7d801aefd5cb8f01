"""The gate's optional pairwise judge: a model behind any OpenAI-compatible endpoint picks the better answer.

The gate's own checks are likelihoods and string matches; a judge reads the answers. For each held-out
traffic prompt it sees the candidate's and production's greedy answers twice, once in each order (judges
favour a position; asking both ways cancels that), and names the better one through a JSON schema, so any
endpoint that honours `response_format` (OpenAI, vLLM, Flywheel's gateway) gives a verdict that parses.
The candidate's win rate is the share of verdicts that picked it. Off unless `GateConfig.judge_url` is set;
an endpoint that cannot be reached, or that answers no verdict at all, rejects the candidate (a gate
that cannot score never passes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import openai

INSTRUCTIONS = (
    "You compare two answers to the same request. Pick the answer that is more helpful, correct and "
    "clear for the user. Reply with JSON only: {\"better\": \"A\"} or {\"better\": \"B\"}."
)
VERDICT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"better": {"type": "string", "enum": ["A", "B"]}},
            "required": ["better"],
            "additionalProperties": False,
        },
    },
}


class JudgeUnavailable(Exception):
    """The judge endpoint could not be asked (unreachable, refused, or no usable verdict)."""


@dataclass(frozen=True)
class Judgement:
    """The verdicts on one candidate: wins and losses over both orders, and the replies that did not parse."""

    wins: int
    losses: int
    unparsed: int
    samples: list[dict]

    @property
    def win_rate(self) -> float:
        decided = self.wins + self.losses
        return self.wins / decided if decided else 0.0


def _ask(client: openai.OpenAI, model: str, prompt: str, first: str, second: str) -> str | None:
    """The judge's pick, "A" or "B", for one ordering; None when its reply does not parse."""
    request = f"Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": request}],
        temperature=0,
        max_tokens=16,
        response_format=VERDICT,
    )
    try:
        better = json.loads(reply.choices[0].message.content or "")["better"]
    except (ValueError, KeyError, TypeError):
        return None
    return better if better in ("A", "B") else None


def judge(url: str, model: str, api_key: str | None, prompts: Sequence[str], candidate: Sequence[str],
          production: Sequence[str], timeout_s: float = 120.0) -> Judgement:
    """Ask the judge at `url` about every (prompt, candidate answer, production answer), in both orders."""
    client = openai.OpenAI(base_url=url, api_key=api_key or "none", timeout=timeout_s, max_retries=2)
    wins = losses = unparsed = 0
    samples = []
    try:
        for prompt, ours, theirs in zip(prompts, candidate, production, strict=True):
            picks = [_ask(client, model, prompt, ours, theirs), _ask(client, model, prompt, theirs, ours)]
            verdicts = [{"A": "candidate", "B": "production"}.get(picks[0]),
                        {"A": "production", "B": "candidate"}.get(picks[1])]
            wins += verdicts.count("candidate")
            losses += verdicts.count("production")
            unparsed += verdicts.count(None)
            if len(samples) < 3:
                samples.append({"prompt": prompt, "candidate": ours, "production": theirs, "verdicts": verdicts})
    except openai.OpenAIError as e:
        raise JudgeUnavailable(f"{type(e).__name__}: {e}") from e
    finally:
        client.close()
    if prompts and not wins + losses:
        raise JudgeUnavailable(f"none of {2 * len(prompts)} replies named an answer (is `{model}` served there?)")
    return Judgement(wins, losses, unparsed, samples)
