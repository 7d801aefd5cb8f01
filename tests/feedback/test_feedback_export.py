"""Export rules: one test per rule, each on a small hand-made log."""

from __future__ import annotations

import json
import time

import pytest

from feedback.export import ExportOptions, build_training_set, count_usable_since, write_jsonl

NO_SPLIT = ExportOptions(held_out_fraction=0.0)


def _build(store, kind, **options):
    return build_training_set(store, "bot", kind, ExportOptions(**{"held_out_fraction": 0.0, **options}))


def _answers(dataset, column="completion"):
    return sorted(row[column][0]["content"] for row in dataset)


def test_sft_takes_up_rated_answers_and_corrections(store, rate):
    up = rate("capital of France?", "Paris.", "up")
    rate("capital of Spain?", "Lisbon.", "down")
    fixed = rate("capital of Italy?", "Milan.", "down", correction="Rome.")
    ts = _build(store, "sft", correction_weight=1)
    assert ts.train.column_names == ["prompt", "completion"]
    assert _answers(ts.train) == ["Paris.", "Rome."]
    row = next(r for r in ts.train if r["completion"][0]["content"] == "Paris.")
    assert row == {
        "prompt": [{"role": "user", "content": "capital of France?"}],
        "completion": [{"role": "assistant", "content": "Paris."}],
    }
    assert ts.feedback_ids == sorted([up, fixed])
    assert ts.report["raw"] == {"ratings": 3, "pairs": 0}


def test_sft_counts_corrections_more_than_thumbs(store, rate):
    rate("capital of France?", "Paris.", "up")
    rate("capital of Italy?", "Milan.", "down", correction="Rome.")
    rate("capital of Peru?", "Quito.", "down", correction="rome.")  # same text once normalised: one row
    ts = _build(store, "sft", correction_weight=3)
    assert _answers(ts.train) == ["Paris.", "Rome.", "Rome.", "Rome.", "rome.", "rome.", "rome."]
    assert ts.report["weighted_copies"] == 4


def test_a_correction_outranks_thumbs_on_its_prompt(store, rate):
    """A prompt the user corrected teaches the correction: its up-rated answers (often misclicks) are not
    SFT targets, and its thumbs make no inferred up-vs-down pairs; other prompts are unaffected."""
    rate("Name a colour", "Cheese.", "up", user="a")  # a misclick
    rate("name a colour ", "Blue is one.", "down", correction="Answer: blue.", user="b")
    rate("Name a fruit", "Apple.", "up")
    rate("Name a fruit", "No.", "down")
    sft = _build(store, "sft", correction_weight=1)
    assert _answers(sft.train) == ["Answer: blue.", "Apple."]
    dpo = _build(store, "dpo")
    pairs = sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dpo.train)
    assert pairs == [("Answer: blue.", "Blue is one."), ("Apple.", "No.")]


def test_dpo_explicit_pairs(store):
    store.add_pair(
        prompt=[{"role": "user", "content": "hi"}], chosen="Hello!", rejected="go away", adapter="bot"
    )
    ts = build_training_set(store, "bot", "dpo", NO_SPLIT)
    assert ts.train.column_names == ["prompt", "chosen", "rejected"]
    assert ts.train[0] == {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }


def test_dpo_correction_beats_the_answer_it_corrects(store, rate):
    rate("2+2?", "5", "down", correction="4")
    rows = list(build_training_set(store, "bot", "dpo", NO_SPLIT).train)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("4", "5")]


def test_dpo_pairs_up_and_down_answers_to_the_same_prompt(store, rate):
    rate("Tell me a joke", "Why did the chicken cross the road?", "up")
    rate("  tell me a JOKE ", "No.", "down")  # same prompt once normalised
    rate("Another prompt", "Meh.", "down")  # nothing up-rated to pair with
    rows = list(build_training_set(store, "bot", "dpo", NO_SPLIT).train)
    assert len(rows) == 1
    assert rows[0]["chosen"][0]["content"].startswith("Why did")
    assert rows[0]["rejected"][0]["content"] == "No."


def test_kto_takes_unpaired_thumbs_with_labels(store, rate):
    rate("q1", "good answer", "up")
    rate("q2", "bad answer", "down")
    ts = build_training_set(store, "bot", "kto", NO_SPLIT)
    assert ts.train.column_names == ["prompt", "completion", "label"]
    labels = {r["completion"][0]["content"]: r["label"] for r in ts.train}
    assert labels == {"good answer": True, "bad answer": False}


def test_conflicts_majority_keeps_the_majority(store, rate):
    for rating in ("up", "up", "down"):
        rate("q", "contested", rating)
    ts = _build(store, "kto")
    assert [(r["completion"][0]["content"], r["label"]) for r in ts.train] == [("contested", True)]
    assert ts.report["conflicts_dropped"] == 1
    assert ts.report["duplicates_dropped"] == 1  # the two agreeing ups become one row


def test_conflicts_tie_or_drop_policy_drops(store, rate):
    rate("q", "tied", "up")
    rate("q", "tied", "down")
    for rating in ("up", "up", "down"):
        rate("q2", "contested", rating)
    assert len(_build(store, "kto").train) == 1  # the tie is dropped, the 2:1 kept
    ts = _build(store, "kto", conflict_policy="drop")
    assert len(ts.train) == 0
    assert ts.report["conflicts_dropped"] == 5


def test_exact_and_normalised_duplicates_are_dropped(store, rate):
    rate("Hello there", "General Kenobi.", "up")
    rate("Hello there", "General Kenobi.", "up")
    rate("hello   THERE", "general kenobi.", "up")
    ts = _build(store, "sft")
    assert len(ts.train) == 1
    assert (ts.report["duplicates_exact"], ts.report["duplicates_normalised"]) == (1, 1)
    assert len(ts.feedback_ids) == 3  # the kept row carries the lineage of its duplicates


def test_personal_data_is_scrubbed_and_counted(store, rate):
    rate("My mail is ann@example.com, call +1 415 555 0100", "Card 4111 1111 1111 1111 noted.", "up")
    rate("key sk-abcdefghijklmnopqrstuvwx please", "Done.", "up")
    ts = _build(store, "sft")
    text = json.dumps(list(ts.train))
    assert "ann@example.com" not in text and "4111" not in text and "sk-abc" not in text and "555" not in text
    assert "[EMAIL]" in text and "[PHONE]" in text and "[CARD]" in text and "[API_KEY]" in text
    assert ts.report["scrubbed"] == {"email": 1, "phone": 1, "card": 1, "api_key": 1}


def test_length_bounds_in_characters(store, rate):
    rate("q1", "ok", "up")
    rate("q2", "a fine answer", "up")
    rate("q3", "x" * 500, "up")
    ts = _build(store, "sft", min_chars=5, max_chars=100)
    assert _answers(ts.train) == ["a fine answer"]
    assert (ts.report["too_short_dropped"], ts.report["too_long_dropped"]) == (1, 1)


class WordTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(range(len(text.split())))


def test_length_bounds_in_tokens(store, rate):
    rate("q1", "three short words", "up")
    rate("q2", "one two three four five six seven", "up")
    ts = _build(store, "sft", tokenizer=WordTokenizer(), max_tokens=5, max_chars=None)
    assert _answers(ts.train) == ["three short words"]
    assert ts.report["too_long_dropped"] == 1


def test_per_user_cap(store, rate):
    for i in range(10):
        rate(f"spam {i}", f"answer {i}", "up", user="loud")
    rate("quiet question", "quiet answer", "up", user="quiet")
    for i in range(3):
        rate(f"anon {i}", f"anon answer {i}", "up")
    ts = _build(store, "sft", per_user_cap=2)
    assert len(ts.train) == 2 + 1 + 3
    assert ts.report["capped"] == 8
    assert _build(store, "sft", per_user_cap=2).dataset_hash == ts.dataset_hash  # seeded: repeatable


def test_held_out_split_is_deterministic_by_prompt(store, rate):
    for i in range(40):
        rate(f"question {i}", f"answer {i}a", "up")
        rate(f"QUESTION   {i}", f"answer {i}b", "up")  # same prompt once normalised
    ts = build_training_set(store, "bot", "sft", ExportOptions(held_out_fraction=0.3))
    train_prompts = {r["prompt"][0]["content"].casefold().split()[1] for r in ts.train}
    held_prompts = {r["prompt"][0]["content"].casefold().split()[1] for r in ts.held_out}
    assert train_prompts and held_prompts and not train_prompts & held_prompts
    assert ts.report["held_out"] == len(ts.held_out) == 2 * len(held_prompts)
    again = build_training_set(store, "bot", "sft", ExportOptions(held_out_fraction=0.3, seed=7))
    assert list(again.held_out) == list(ts.held_out)


def test_replay_rows_are_mixed_into_train(store, rate):
    rate("new q", "new a", "up")
    old = {
        "prompt": [{"role": "user", "content": "old q"}],
        "completion": [{"role": "assistant", "content": "old a"}],
    }
    ts = _build(store, "sft", replay=[old, dict(old)])
    assert _answers(ts.train) == ["new a", "old a"]
    assert ts.report["replay"] == 1 and ts.report["replay_duplicates"] == 1
    with pytest.raises(ValueError, match="replay row 0"):
        _build(store, "dpo", replay=[old])


def test_adapter_and_since_filters(store, rate):
    rate("q", "old answer", "up")
    cutoff = time.time()
    time.sleep(0.01)
    rate("q", "new answer", "up")
    rate("q", "other adapter", "up", adapter="other")
    rate("q", "version two", "up", version=2)
    all_versions = build_training_set(store, "bot", "sft", NO_SPLIT)
    assert _answers(all_versions.train) == ["new answer", "old answer", "version two"]
    recent = build_training_set(store, "bot", "sft", NO_SPLIT, since=cutoff)
    assert _answers(recent.train) == ["new answer", "version two"]
    assert count_usable_since(store, "bot", cutoff) == 2
    assert count_usable_since(store, "bot", None) == 3


def test_dataset_hash_is_stable_and_tracks_content(store, rate):
    rate("q1", "a1", "up")
    first = _build(store, "sft")
    assert _build(store, "sft").dataset_hash == first.dataset_hash
    rate("q2", "a2", "up")
    assert _build(store, "sft").dataset_hash != first.dataset_hash


def test_write_jsonl_round_trip(store, rate, tmp_path):
    for i in range(20):
        rate(f"q{i}", f"a{i}", "up")
    ts = build_training_set(store, "bot", "sft", ExportOptions(held_out_fraction=0.3))
    train_file, held_file = tmp_path / "out" / "train.jsonl", tmp_path / "held.jsonl"
    assert write_jsonl(ts, train_file) == len(ts.train)
    assert write_jsonl(ts, held_file, split="held_out") == len(ts.held_out)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    assert rows == list(ts.train)
    assert all(set(r) == {"prompt", "completion"} for r in rows)


def test_empty_store_gives_empty_sets_with_columns(store):
    ts = build_training_set(store, "bot", "kto")
    assert len(ts.train) == 0 and ts.train.column_names == ["prompt", "completion", "label"]


@pytest.mark.parametrize(
    "bad", [{"held_out_fraction": 1.0}, {"per_user_cap": 0}, {"conflict_policy": "vote"}, {"max_tokens": 10}]
)
def test_invalid_options_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ExportOptions(**bad)


def test_unknown_kind(store):
    with pytest.raises(ValueError, match="kind"):
        build_training_set(store, "bot", "ppo")


def test_an_explicit_pair_keeps_its_prompts_up_rated_answers_in_sft(store, rate):
    rate("Name a colour", "Blue.", "up")
    rate("Name a colour", "Cheese.", "down")
    store.add_pair(prompt=[{"role": "user", "content": "Name a colour"}], chosen="Red.", rejected="Cheese.",
                   adapter="bot")
    assert _answers(_build(store, "sft").train) == ["Blue."]
    dpo = _build(store, "dpo")
    assert sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dpo.train) == [
        ("Red.", "Cheese.")  # the explicit pair; no inferred Blue-over-Cheese pair beside it
    ]


def _served(store, make_completion, *, endpoint="chat.completions", prompt=None, tool_calls=None, text="Paris."):
    """A logged completion as the gateway writes it (params.endpoint, tool calls in the choice), rated up."""
    rec = make_completion(prompt or "capital of France?", text)
    choice = {**rec.choices[0], **({"tool_calls": tool_calls} if tool_calls else {})}
    rec = type(rec)(**{**vars(rec), "params": {"endpoint": endpoint}, "choices": [choice]})
    store.record_completion(rec)
    return store.add_feedback(rec.id, "up").record.id


def test_raw_prompt_and_tool_call_turns_are_left_out_and_counted(store, make_completion):
    kept = _served(store, make_completion, prompt="capital of Italy?", text="Rome.")
    _served(store, make_completion, endpoint="completions", prompt="The capital of France is", text=" Paris.")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    _served(store, make_completion, prompt="Weather in Paris?", text="", tool_calls=[call])
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "", "tool_calls": [call]},
               {"role": "tool", "content": "Sunny", "tool_call_id": "call_1"}]
    _served(store, make_completion, prompt=history, text="It is sunny.")
    sunny, unsure = make_completion(history, "Sunny, 21 C."), make_completion(history, "No idea.")
    for rec in (sunny, unsure):
        store.record_completion(rec)
    store.add_pair(chosen_completion_id=sunny.id, rejected_completion_id=unsure.id)  # a pair on a tool turn
    for kind in ("sft", "kto", "dpo"):
        ts = _build(store, kind)
        assert ts.report["raw_prompt_dropped"] == 1 and ts.report["tool_turns_dropped"] == 3
        assert ts.report["raw"] == {"ratings": 4, "pairs": 1}
    sft = _build(store, "sft")
    assert [r["completion"][0]["content"] for r in sft.train] == ["Rome."] and sft.feedback_ids == [kept]
    assert len(_build(store, "dpo").train) == 0
