"""The rate limiter's input estimate (keel.ratelimit.estimate), by its documented rule: one token per 3 ASCII
characters, a partial token counted whole (the estimate is deliberately high), one per other character, over
every string of the request, field names included; an image, or a document given by bytes, URL or file id,
counts `MEDIA_TOKENS` (4,800)."""

from __future__ import annotations

from typing import Any

import pytest

from keel.ratelimit import MEDIA_TOKENS, estimate_input_tokens


def tokens_of(value: Any) -> int:
    """The estimate of one system prompt (any value the SDK would take there)."""
    return estimate_input_tokens([], system=value)


def test_nothing_is_no_tokens() -> None:
    assert estimate_input_tokens([]) == 0
    assert estimate_input_tokens([], system=None, tools=None) == 0
    assert tokens_of("") == 0


@pytest.mark.parametrize(("text", "tokens"), [("a", 1), ("abc", 1), ("abcd", 2), ("abcdef", 2), ("abcdefg", 3)])
def test_three_ascii_characters_make_a_token_and_a_partial_token_counts_whole(text: str, tokens: int) -> None:
    assert tokens_of(text) == tokens


@pytest.mark.parametrize(("text", "tokens"), [("日本語", 3), ("é", 1), ("abc日本", 3), ("ab😀", 2)])
def test_every_other_character_is_a_token_of_its_own(text: str, tokens: int) -> None:
    assert tokens_of(text) == tokens


def test_field_names_count_like_text_and_each_string_rounds_up() -> None:
    message = {"role": "user", "content": "abc"}  # role 2, user 2, content 3, abc 1
    assert estimate_input_tokens([message]) == 8
    assert estimate_input_tokens([message, message]) == 16
    assert estimate_input_tokens((message,)) == 8  # a tuple of messages like a list


def test_the_system_prompt_and_tools_add_to_the_messages() -> None:
    tool = {"name": "abcdef"}  # name 2, abcdef 2
    assert estimate_input_tokens([{"role": "user"}], system="abcdef", tools=[tool, tool]) == 4 + 2 + 8
    assert estimate_input_tokens([], tools=(tool,)) == 4


def test_numbers_and_other_values_count_by_their_text() -> None:
    assert tokens_of({"n": 1234567890}) == 1 + 4
    assert tokens_of({"flag": True}) == 2 + 2  # "True"
    assert tokens_of({"x": None}) == 1  # a None value is nothing, its field name still counts
    assert tokens_of([["abc", ("abc",)]]) == 2


@pytest.mark.parametrize("block_type", ["image", "document"])
@pytest.mark.parametrize("source_type", ["base64", "url", "file"])
def test_an_image_or_document_by_bytes_url_or_file_counts_the_media_tokens(block_type: str, source_type: str) -> None:
    assert MEDIA_TOKENS == 4_800
    block = {"type": block_type, "source": {"type": source_type, "data": "x" * 30_000}}
    assert estimate_input_tokens([], system=[block]) == 4_800


def test_a_text_document_counts_its_text() -> None:
    source = {"type": "text", "data": "abcdef"}  # type 2, text 2, data 2, abcdef 2
    block = {"type": "document", "source": source}  # type 2, document 3, source 2
    assert tokens_of([block]) == 7 + 8


def test_only_an_image_or_document_with_an_opaque_source_is_media() -> None:
    opaque = {"type": "base64", "data": "abc"}  # type 2, base64 2, data 2, abc 1
    assert tokens_of([{"type": "text", "source": opaque}]) == (2 + 2 + 2) + 7  # type, text, source + the source
    assert tokens_of([{"type": "image", "source": "base64"}]) == 2 + 2 + 2 + 2  # a source that is not a mapping
    assert tokens_of([{"type": "image"}]) == 2 + 2
