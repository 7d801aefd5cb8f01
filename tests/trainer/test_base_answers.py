"""The base model's gate answers on disk: read back only when everything they depend on is the same."""

from __future__ import annotations

from pathlib import Path

from trainer.base_answers import BaseAnswerCache

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}], [{"role": "user", "content": "Hi"}]]
GENERATION = {"dtype": "torch.float32", "answer_tokens": 16, "batch_size": 8, "max_length": 96}


def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_answers_are_generated_once_and_read_back(tmp_path: Path) -> None:
    calls = []

    def generate() -> list[str]:
        calls.append(1)
        return ["Paris.", "Hello!"]

    cache = BaseAnswerCache(tmp_path / "cache", model_dir(tmp_path), GENERATION)
    assert cache.answers(PROMPTS, generate) == (["Paris.", "Hello!"], False)
    assert cache.answers(PROMPTS, generate) == (["Paris.", "Hello!"], True)
    assert len(calls) == 1
    assert BaseAnswerCache(None, model_dir(tmp_path), GENERATION).answers(PROMPTS, generate)[1] is False


def test_a_change_to_what_answers_depend_on_misses(tmp_path: Path) -> None:
    model = model_dir(tmp_path)
    BaseAnswerCache(tmp_path / "cache", model, GENERATION).answers(PROMPTS, lambda: ["a", "b"])
    longer = BaseAnswerCache(tmp_path / "cache", model, {**GENERATION, "answer_tokens": 32})
    assert longer.answers(PROMPTS, lambda: ["c", "d"]) == (["c", "d"], False)
    assert BaseAnswerCache(tmp_path / "cache", model, GENERATION).answers(PROMPTS[:1], lambda: ["e"])[1] is False
    (model / "model.safetensors").write_bytes(b"other weights")  # the model was replaced in place
    assert BaseAnswerCache(tmp_path / "cache", model, GENERATION).answers(PROMPTS, lambda: ["f", "g"])[1] is False


def test_a_spoilt_entry_is_regenerated_and_rewritten(tmp_path: Path) -> None:
    cache = BaseAnswerCache(tmp_path / "cache", model_dir(tmp_path), GENERATION)
    cache.answers(PROMPTS, lambda: ["a", "b"])
    (entry,) = (tmp_path / "cache" / "gate_base_answers").glob("*.json")
    for spoilt in ("{not json", '["one answer for two prompts"]', '{"a": 1}'):
        entry.write_text(spoilt)
        assert cache.answers(PROMPTS, lambda: ["a", "b"]) == (["a", "b"], False)
        assert cache.answers(PROMPTS, lambda: ["x", "y"]) == (["a", "b"], True)


def test_an_unwritable_cache_costs_time_not_the_answers(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    cache = BaseAnswerCache(blocker, model_dir(tmp_path), GENERATION)
    assert cache.answers(PROMPTS, lambda: ["a", "b"]) == (["a", "b"], False)
