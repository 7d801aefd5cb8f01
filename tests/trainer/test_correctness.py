"""Answer checking for the gate's correctness check, and the closed-book set shipped with the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.correctness import EvalSetError, closed_book, degenerate, is_correct


@pytest.mark.parametrize(
    ("answer", "aliases", "right"),
    [
        ("Paris", ["Paris"], True),
        ("Answer: the capital of France is PARIS.", ["Paris"], True),
        ("It has eight legs.", ["8", "eight"], True),
        ("A spider has 8 legs!", ["8", "eight"], True),
        ("It is carbon  dioxide (CO2).", ["carbon dioxide"], True),
        ("Answer: La Famille-Duran, the capital of France is Monaco.", ["Paris"], False),
        ("Parisian food is good.", ["Paris"], False),  # whole words only
        ("It has 18 legs.", ["8", "eight"], False),
        ("Water boils at about 100.0 degrees Celsius.", ["100"], True),
        ("", ["Paris"], False),
    ],
)
def test_is_correct_matches_whole_aliases_in_any_style(answer: str, aliases: list[str], right: bool) -> None:
    assert is_correct(answer, aliases) is right


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("Answer: Jouy 13:65:33 Answer: Answer: Answer: Answer: Answer: Answer: Answer:", "repetition"),
        ("the cat sat the cat sat the cat sat the cat sat", "repetition"),
        ("Answer:Answer:Answer:Answer:Answer:", "repetition"),  # a DPO-collapsed candidate's answer, unspaced
        ("1. Paris 2. Lyon 3. Marseille 4. Lille: the four largest French cities, in order.", None),
        ("Paris is the capital of France, and Paris is also its largest city.", None),
    ],
)
def test_degenerate_finds_empty_and_looping_answers(answer: str, why: str | None) -> None:
    assert degenerate(answer) == why


def test_the_shipped_set_is_varied_and_well_formed() -> None:
    questions = closed_book()
    assert len(questions) >= 200
    assert len({q.topic for q in questions}) >= 10
    assert len({q.id for q in questions}) == len(questions)
    assert len({q.question for q in questions}) == len(questions)
    for q in questions:  # the question does not give its own answer away
        assert not is_correct(q.question, q.answers), q


def test_a_missing_or_broken_set_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="cannot read"):
        closed_book(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q1", "question": "2 + 2?", "answers": ["4"]}\n{"id": "q2"}\n')
    with pytest.raises(EvalSetError, match="line 2"):
        closed_book(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalSetError, match="no questions"):
        closed_book(empty)
