"""Preference pairs: from two completion ids or from texts; bad pairs store nothing."""

from __future__ import annotations

import pytest

from feedback.errors import CompletionNotFound, FeedbackNotFound, InvalidFeedback
from feedback.records import PairRecord

PROMPT = [{"role": "user", "content": "Write a haiku"}]


def _pair_count(store) -> int:
    return sum(row["pairs"] for row in store.pair_counts())


def test_pair_from_two_choices_of_one_completion(store, make_completion):
    rec = make_completion(PROMPT, ["first poem", "second poem"])
    store.record_completion(rec)
    pair = store.add_pair(
        chosen_completion_id=rec.id,
        rejected_completion_id=rec.id,
        chosen_choice_index=1,
        rejected_choice_index=0,
    ).record
    assert isinstance(pair, PairRecord) and pair.id.startswith("pair_")
    assert (pair.chosen, pair.rejected, pair.prompt) == ("second poem", "first poem", PROMPT)
    assert (pair.adapter, pair.adapter_version) == ("bot", 1)
    assert store.get_feedback(pair.id) == pair


def test_pair_from_an_answer_and_its_regeneration(store, make_completion):
    a, b = make_completion(PROMPT, "old"), make_completion(PROMPT, "new", version=2)
    store.record_completion(a)
    store.record_completion(b)
    pair = store.add_pair(chosen_completion_id=b.id, rejected_completion_id=a.id).record
    assert (pair.chosen, pair.rejected, pair.adapter, pair.adapter_version) == ("new", "old", "bot", None)


def test_pair_from_texts_and_idempotency(store):
    first = store.add_pair(prompt=PROMPT, chosen="good", rejected="bad", adapter="bot", feedback_id="p-1")
    again = store.add_pair(prompt=PROMPT, chosen="other", rejected="thing", adapter="bot", feedback_id="p-1")
    assert first.created and not again.created  # the store says which call stored it
    assert again.record == first.record
    assert store.get_feedback("p-1") == first.record
    assert _pair_count(store) == 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"prompt": PROMPT, "chosen": "same", "rejected": " same "}, "same text"),
        ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt"),
        ({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "a", "rejected": "b"}, "role"),
        ({"prompt": PROMPT, "chosen": "a\x00", "rejected": "b"}, "NUL"),
        ({"prompt": PROMPT, "chosen": "a", "rejected": None}, "rejected is required"),
        ({"prompt": PROMPT, "chosen": "a", "rejected": "b", "adapter": "../etc"}, "adapter"),
        ({"chosen_completion_id": "x"}, "both"),
        ({"chosen_completion_id": "x", "rejected_completion_id": "y", "prompt": PROMPT}, "not both"),
    ],
)
def test_bad_text_pairs_store_nothing(store, kwargs, fragment):
    with pytest.raises(InvalidFeedback, match=fragment):
        store.add_pair(**kwargs)
    assert _pair_count(store) == 0


def test_completions_with_different_prompts_cannot_pair(store, make_completion):
    a, b = make_completion("one prompt", "x"), make_completion("another prompt", "y")
    store.record_completion(a)
    store.record_completion(b)
    with pytest.raises(InvalidFeedback, match="different prompts"):
        store.add_pair(chosen_completion_id=a.id, rejected_completion_id=b.id)
    assert _pair_count(store) == 0


def test_same_choice_twice_or_missing_choice_cannot_pair(store, make_completion):
    rec = make_completion(PROMPT, ["only"])
    store.record_completion(rec)
    with pytest.raises(InvalidFeedback, match="same text"):
        store.add_pair(chosen_completion_id=rec.id, rejected_completion_id=rec.id)
    with pytest.raises(InvalidFeedback, match="out of range"):
        store.add_pair(chosen_completion_id=rec.id, rejected_completion_id=rec.id, rejected_choice_index=1)
    assert _pair_count(store) == 0


def test_unknown_completion_in_pair(store, make_completion):
    rec = make_completion(PROMPT, "x")
    store.record_completion(rec)
    with pytest.raises(CompletionNotFound):
        store.add_pair(chosen_completion_id=rec.id, rejected_completion_id="chatcmpl-missing")


def test_unknown_feedback_id(store):
    with pytest.raises(FeedbackNotFound):
        store.get_feedback("pair_nope")
