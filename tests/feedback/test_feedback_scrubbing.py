"""Scrubbing: each kind is found and counted; ordinary numbers and words are left alone."""

from __future__ import annotations

import pytest

from feedback.scrubbing import Scrubber, luhn_valid


@pytest.mark.parametrize(
    "text, expected, kind",
    [
        ("write to jane.doe+tag@mail.example.org today", "write to [EMAIL] today", "email"),
        ("call +44 20 7946 0958", "call [PHONE]", "phone"),
        ("call (555) 123-4567", "call [PHONE]", "phone"),
        ("call 415-555-0100 now", "call [PHONE] now", "phone"),
        ("pay with 4111 1111 1111 1111", "pay with [CARD]", "card"),
        ("pay with 5500-0000-0000-0004", "pay with [CARD]", "card"),
        ("OPENAI_API_KEY=sk-proj-AbCdEf1234567890XyZ", "OPENAI_API_KEY=[API_KEY]", "api_key"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [API_KEY]", "api_key"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [API_KEY]", "api_key"),
        ("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sha [API_KEY]", "api_key"),
        ("secret dGhpcyBpcyBhIHNlY3JldCB0b2tlbjEyMzQ1Njc4OTA=", "secret [API_KEY]", "api_key"),
    ],
)
def test_each_kind_is_replaced_and_counted(text, expected, kind):
    scrubber = Scrubber()
    assert scrubber.scrub(text) == expected
    assert scrubber.counts[kind] == 1
    assert sum(scrubber.counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "on 2024-01-15 at 10:30",
        "order number 1234567890",
        "10 000 000 people",
        "pi is 3.14159265358979",
        "Donaudampfschifffahrtsgesellschaftskapitaensmuetze",
        "see https://example.com/docs/getting-started-with-the-api",
        "version 1.2.3 and port 8080",
    ],
)
def test_ordinary_text_is_left_alone(text):
    scrubber = Scrubber()
    assert scrubber.scrub(text) == text
    assert sum(scrubber.counts.values()) == 0


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_scrub_messages_keeps_only_role_and_content():
    scrubber = Scrubber()
    out = scrubber.scrub_messages([{"role": "user", "content": "me@x.io", "name": "ann"}])
    assert out == [{"role": "user", "content": "[EMAIL]"}]
