"""Log-likelihood of completions and texts under one of the gate's models, in padded batches."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainer.gate import GateModels

# (context token ids, target token ids): only the targets are scored.
Sequence_ = tuple[list[int], list[int]]


class Scorer:
    """Sums token log-probabilities of target spans, with the named adapter active."""

    def __init__(self, models: GateModels, batch_size: int, max_length: int):
        self.models = models
        self.tokenizer = models.tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    def encode_chat(self, prompt: list[dict], completion: list[dict]) -> Sequence_:
        """Token ids of the templated prompt and of what the completion adds to it."""
        prompt_text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_text = self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        prompt_ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full_ids = self.tokenizer(full_text, add_special_tokens=False)["input_ids"]
        return self._fit(prompt_ids, full_ids[len(prompt_ids) :])

    def _fit(self, context: list[int], target: list[int]) -> Sequence_:
        # Keep the end of the context and the start of the target, as the model sees them when serving.
        target = target[: self.max_length - 1]
        keep = max(1, self.max_length - len(target))
        return context[-keep:], target

    def _score_batch(self, model: torch.nn.Module, batch: Sequence[Sequence_]) -> list[tuple[float, int]]:
        pad = self.tokenizer.pad_token_id
        rows = [c + t for c, t in batch]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, (context, _) in enumerate(batch):
            ids[i, : len(rows[i])] = torch.tensor(rows[i])
            mask[i, : len(rows[i])] = 1
            target[i, len(context) : len(rows[i])] = True
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        scored = target[:, 1:]
        sums = (logps * scored).sum(dim=1)
        return [(float(s), int(n)) for s, n in zip(sums, scored.sum(dim=1), strict=True)]

    def score(self, name: str, sequences: Sequence[Sequence_]) -> list[tuple[float, int]]:
        """(sum of target log-probs, target token count) per sequence, with adapter `name` active."""
        out: list[tuple[float, int]] = []
        with self.models.use(name) as model:
            for start in range(0, len(sequences), self.batch_size):
                out.extend(self._score_batch(model, sequences[start : start + self.batch_size]))
        return out

    def chat_logps(self, name: str, rows: Sequence[tuple[list[dict], list[dict]]]) -> list[tuple[float, int]]:
        """Log-likelihood of each (prompt messages, completion messages) completion."""
        return self.score(name, [self.encode_chat(p, c) for p, c in rows])

    def perplexity(self, name: str, texts: Sequence[str]) -> float:
        """Token-level perplexity over all texts (the first token of each is context only)."""
        sequences = []
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.max_length]
            sequences.append((ids[:1], ids[1:]))
        scores = self.score(name, sequences)
        total, count = sum(s for s, _ in scores), sum(n for _, n in scores)
        return math.exp(min(-total / count, 700.0)) if count and math.isfinite(total) else math.inf


class OneModel:
    """The `GateModels` face of a single model (a run's model in training), so a `Scorer` can score it."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield self.model
        finally:
            self.model.train(was_training)


def preference_margins(scorer: Scorer, name: str, pairs: Sequence[dict]) -> list[float]:
    """Per pair, model `name`'s log-likelihood of the chosen answer minus that of the rejected one."""
    chosen = scorer.chat_logps(name, [(p["prompt"], p["chosen"]) for p in pairs])
    rejected = scorer.chat_logps(name, [(p["prompt"], p["rejected"]) for p in pairs])
    return [c[0] - r[0] for c, r in zip(chosen, rejected, strict=True)]


def preference_accuracy(scorer: Scorer, name: str, pairs: Sequence[dict]) -> float:
    """Share of pairs where model `name` gives the chosen answer a higher log-likelihood than the rejected one."""
    return sum(m > 0 for m in preference_margins(scorer, name, pairs)) / len(pairs)
