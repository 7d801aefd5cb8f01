"""The loop benchmark's simulated users: five kinds of preference, and noise on ratings and corrections."""

from __future__ import annotations

import pytest

from bench.loop_users import KINDS, PREFERENCES, SimulatedUser

ANSWERS = ["The capital of France is Paris, a city on the Seine with many museums and the Eiffel Tower.",
           "Answer: 2 + 2 is 4.", "paris.", "The sun is a star.\n\n-- Flywheel"]


def test_every_preference_has_a_kind_and_its_fix_satisfies_it() -> None:
    assert set(KINDS) == set(PREFERENCES) and len(set(KINDS.values())) >= 5
    for preference in PREFERENCES.values():
        for answer in ANSWERS:
            fixed = preference.fix(answer)
            assert preference.check(fixed), (preference.name, answer, fixed)
            assert preference.fix(fixed) == fixed  # idempotent on satisfying answers


def test_no_the_keeps_the_content_words() -> None:
    no_the = PREFERENCES["no_the"]
    assert not no_the.check("The cat and the dog.") and no_the.check("Theatre and other things.")
    assert no_the.fix("The capital of France is the city of Paris.") == "Capital of France is city of Paris."


def test_a_noiseless_user_rates_by_the_preference_and_corrects_with_the_fix() -> None:
    user = SimulatedUser("u", PREFERENCES["answer_prefix"], noise=0.0, corrections=1.0)
    good, bad = user.rate("Answer: Paris."), user.rate("Paris.")
    assert (good.rating, good.correction, good.noisy) == ("up", None, False)
    assert (bad.rating, bad.correction, bad.noisy) == ("down", "Answer: Paris.", False)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_flips_ratings_and_spoils_corrections(seed: int) -> None:
    preference = PREFERENCES["answer_prefix"]
    user = SimulatedUser("u", preference, noise=0.2, corrections=1.0, seed=seed)
    answers = [f"The answer to question {i} is {i * 7}, as anyone can check." for i in range(2000)]
    ratings = [user.rate(a) for a in answers]
    flipped = sum(r.rating == "up" for r in ratings) / len(ratings)  # every answer is unsatisfying
    assert 0.15 < flipped < 0.25
    corrected = [(a, r) for a, r in zip(answers, ratings, strict=True) if r.correction is not None]
    spoiled = [(a, r) for a, r in corrected if r.correction != preference.fix(a)]
    assert 0.15 < len(spoiled) / len(corrected) < 0.25
    assert all(r.noisy for _, r in spoiled)
    wrong = [r for a, r in spoiled if preference.check(r.correction)]  # the fix of another question's answer
    sloppy = [r for a, r in spoiled if not preference.check(r.correction)]  # half the answer, unfixed
    assert wrong and sloppy
