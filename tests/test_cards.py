"""`keel cards`, through the CLI: cards drawn from keel's own tables, and a quiz scored from piped answers."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner, Result

from keel import _error_map, _stop
from keel._modes import NONSTREAMING_MAX_TOKENS, choose_mode
from keel.cli import app

runner = CliRunner()
_CARD = re.compile(
    r"^\d+\. \[(?P<topic>[^\]]+)\] (?P<question>.*)\n   answer: (?P<answer>.*)\n   why: (?P<why>.*)$", re.M
)
_ASKED = re.compile(r"^card \d+/\d+ \[[^\]]+\] (?P<question>.*)\n(?P<choices>(?:  \d+\. .*\n)+)", re.M)


def listed() -> dict[str, tuple[str, str]]:
    """`keel cards --list`: each question's answer and why."""
    result = runner.invoke(app, ["cards", "--list"])
    assert result.exit_code == 0, result.output
    return {match["question"]: (match["answer"], match["why"]) for match in _CARD.finditer(result.output)}


def test_every_error_map_row_is_a_card_with_keels_retry_verdict_and_its_action() -> None:
    cards = listed()
    for row in _error_map.ERROR_TABLE:
        retry = [
            answer for question, (answer, _) in cards.items() if question.startswith(f"Does keel retry {row.name}")
        ]
        assert retry == ["yes" if row.retryable else "no"], row.name
        action = [
            answer
            for question, (answer, _) in cards.items()
            if question.startswith(f"What is the action for {row.name}")
        ]
        assert action == [row.action.value], row.name
    sdk = {q for q in cards if q.startswith("Does the SDK, on its own, retry")}
    assert len(sdk) == sum(row.sdk_retries != row.retryable for row in _error_map.ERROR_TABLE) > 0


def test_every_stop_table_row_is_a_card_with_what_to_do() -> None:
    cards = listed()
    answers = {answer for answer, _ in cards.values()}
    for row in _stop.STOP_TABLE:
        assert row.todo in answers and any(row.kind in question for question in cards), row.kind
        (retry,) = [
            a for q, (a, _) in cards.items() if f" {row.kind} " in q and q.endswith("Send the same request again?")
        ]
        assert retry == row.retry


def test_mode_cards_are_answered_by_choose_mode() -> None:
    cards = listed()
    expected = {
        "A chat UI: a person watches the answer appear.": "stream",
        "10,000 nightly summaries nobody waits for.": "batch",
        "A request handler waits for a short classification.": "standard",
        "A report someone waits for, max_tokens 64,000.": "stream",
        "A generation expected to take 15 minutes.": "stream",
        "One short call from a cron job.": "standard",
    }
    assert {
        q.removesuffix(" Which delivery mode?"): a for q, (a, _) in cards.items() if "delivery mode" in q
    } == expected
    assert cards["A chat UI: a person watches the answer appear. Which delivery mode?"][1] == (
        choose_mode(watching=True).reason  # the reason is choose_mode's own, not a copy of it
    )
    auto = {q: a for q, (a, _) in cards.items() if q.startswith("messages.create(mode='auto'")}
    assert auto == {
        f"messages.create(mode='auto', max_tokens={NONSTREAMING_MAX_TOKENS + 1:,}): how is it sent?": "stream",
        "messages.create(mode='auto', max_tokens=1,024): how is it sent?": "standard",
    }


def test_a_changed_table_row_changes_its_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    overloaded = dataclasses.replace(_error_map.OVERLOADED, retryable=False, note="Changed for the test.")
    table = tuple(overloaded if row is _error_map.OVERLOADED else row for row in _error_map.ERROR_TABLE)
    monkeypatch.setattr(_error_map, "ERROR_TABLE", table)
    refusal = dataclasses.replace(_stop.STOP_TABLE[5], todo="Changed todo for the test.")
    assert refusal.kind == "refusal"
    monkeypatch.setattr(_stop, "STOP_TABLE", tuple(refusal if r.kind == "refusal" else r for r in _stop.STOP_TABLE))
    cards = listed()
    assert cards["Does keel retry overloaded (529 overloaded_error)?"] == ("no", "Changed for the test.")
    assert cards["Does the SDK, on its own, retry overloaded (529 overloaded_error)?"][0] == "yes"  # now they differ
    assert cards["stop_reason refusal: what do you do?"][0] == "Changed todo for the test."


def quiz(answers: str, *extra: str) -> Result:
    result = runner.invoke(app, ["cards", "--seed", "11", *extra], input=answers)
    assert result.exit_code == 0, result.output
    return result


def choice_numbers(output: str, cards: dict[str, tuple[str, str]], right: bool) -> list[str]:
    """For each card the quiz asked, the number of its right choice (or of a wrong one)."""
    numbers = []
    for asked in _ASKED.finditer(output):
        answer = cards[asked["question"]][0]
        choices = [line.split(". ", 1)[1] for line in asked["choices"].splitlines()]
        numbers.append(str(next(n for n, c in enumerate(choices, 1) if (c == answer) == right)))
    return numbers


def test_the_quiz_scores_the_piped_answers_right_and_wrong() -> None:
    cards = listed()
    first = quiz("\n" * 0, "--count", "5")  # no input: the cards it would ask, in the seed's order
    assert "score: 0/0 (input ended after 0 of 5)" in first.output
    right = choice_numbers(quiz("1\n" * 5, "--count", "5").output, cards, right=True)
    wrong = choice_numbers(quiz("1\n" * 5, "--count", "5").output, cards, right=False)
    assert len(right) == len(wrong) == 5
    mixed = quiz("\n".join([*right[:3], *wrong[3:]]) + "\n", "--count", "5")
    assert mixed.output.count("right: ") == 3 and mixed.output.count("wrong: the answer is") == 2
    assert mixed.output.rstrip().endswith("score: 3/5")
    assert quiz("\n".join(right) + "\n", "--count", "5").output.rstrip().endswith("score: 5/5")


def test_a_choice_can_be_named_and_a_bad_answer_is_asked_again() -> None:
    cards = listed()
    output = quiz("", "--count", "1").output
    (asked,) = _ASKED.finditer(output)
    answer = cards[asked["question"]][0]
    again = quiz(f"42\n{answer.upper()}\n", "--count", "1").output
    assert "'42' is not one of the choices" in again
    assert again.rstrip().endswith("score: 1/1")


def test_the_same_seed_draws_the_same_cards_and_another_seed_others() -> None:
    first = quiz("", "--count", "6").output
    assert quiz("", "--count", "6").output == first
    other = runner.invoke(app, ["cards", "--seed", "12", "--count", "6"], input="").output
    assert other != first
