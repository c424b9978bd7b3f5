"""`keel cards`: the lesson's flashcards, made from the tables keel's own code decides with.

Every answer is read from where keel reads it: the error map (`ERROR_TABLE`: keel's retry verdict, the SDK's, the
action), the stop table (`STOP_TABLE`: whether to send again, what to do) and the delivery modes (`choose_mode` and
`call_mode` answer each situation). A row changed there is a card changed here; only the situations of the mode
cards are written in this module, their answers are not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from . import _error_map, _modes, _stop
from ._error_text import matches, yes_no


@dataclass(frozen=True)
class Card:
    """One flashcard: a question with its choices, the right one, and why.

    Attributes:
        topic: "error map", "stop reasons" or "delivery modes".
        question: what is asked.
        choices: the choices offered, the right one among them.
        answer: the right choice.
        why: the table's own note on it.
    """

    topic: str
    question: str
    choices: tuple[str, ...]
    answer: str
    why: str


_YES_NO = ("yes", "no")
_WRONG_CHOICES = 3  # other choices a card offers besides the right one, when its table has that many


def _with_others(right: str, pool: Sequence[str]) -> tuple[str, ...]:
    """The right choice and up to `_WRONG_CHOICES` other distinct values of its table column, in the table's order."""
    others = [value for value in dict.fromkeys(pool) if value != right]
    step = max(1, len(others) // _WRONG_CHOICES)
    return (right, *others[::step][:_WRONG_CHOICES])


def error_cards() -> Iterator[Card]:
    """Per row of the error map: does keel retry it, what to do, and, where keel and the SDK differ, the SDK's."""
    table = _error_map.ERROR_TABLE
    actions = [row.action.value for row in table]
    for row in table:
        name = f"{row.name} ({matches(row)})"
        yield Card("error map", f"Does keel retry {name}?", _YES_NO, yes_no(row.retryable), row.note)
        action = row.action.value
        yield Card("error map", f"What is the action for {name}?", _with_others(action, actions), action, row.note)
        if row.sdk_retries != row.retryable:
            why = f"keel {'retries' if row.retryable else 'does not retry'} it: {row.note}"
            yield Card("error map", f"Does the SDK, on its own, retry {name}?", _YES_NO, yes_no(row.sdk_retries), why)


def stop_cards() -> Iterator[Card]:
    """Per row of the stop table: send the same request again, and what to do instead."""
    table = _stop.STOP_TABLE
    retries = [row.retry for row in table]
    todos = [row.todo for row in table]
    for row in table:
        not_a_stop_reason = row.outcome in (_stop.Interrupted, _stop.UnknownStop)  # keel's outcomes, not the API's
        about = f"outcome {row.kind}" if not_a_stop_reason else f"stop_reason {row.kind}"
        yield Card(
            "stop reasons",
            f"{about} ({row.meaning}) Send the same request again?",
            _with_others(row.retry, retries),
            row.retry,
            row.todo,
        )
        yield Card("stop reasons", f"{about}: what do you do?", _with_others(row.todo, todos), row.todo, row.meaning)


_SITUATIONS: tuple[tuple[str, Callable[[], _modes.ModeChoice]], ...] = (
    ("A chat UI: a person watches the answer appear.", lambda: _modes.choose_mode(watching=True)),
    (
        "10,000 nightly summaries nobody waits for.",
        lambda: _modes.choose_mode(waiting=False, requests=10_000),
    ),
    ("A request handler waits for a short classification.", lambda: _modes.choose_mode(max_tokens=200)),
    (
        "A report someone waits for, max_tokens 64,000.",
        lambda: _modes.choose_mode(max_tokens=64_000),
    ),
    ("A generation expected to take 15 minutes.", lambda: _modes.choose_mode(expected_seconds=900)),
    ("One short call from a cron job.", lambda: _modes.choose_mode(waiting=False)),
)


def _auto(max_tokens: int) -> Card:
    mode = _modes.call_mode("auto", {"max_tokens": max_tokens})
    limit = _modes.NONSTREAMING_MAX_TOKENS
    why = f"mode='auto' streams underneath above {limit:,} max_tokens (the SDK's 10-minute guard)"
    question = f"messages.create(mode='auto', max_tokens={max_tokens:,}): how is it sent?"
    return Card("delivery modes", question, ("standard", "stream"), mode, why)


def mode_cards() -> Iterator[Card]:
    """Situations, each answered by `choose_mode`; and `mode="auto"` on each side of the SDK's guard."""
    modes = ("standard", "stream", "batch")
    for situation, choose in _SITUATIONS:
        choice = choose()
        yield Card("delivery modes", f"{situation} Which delivery mode?", modes, choice.mode, choice.reason)
    yield _auto(_modes.NONSTREAMING_MAX_TOKENS + 1)
    yield _auto(1024)


def deck() -> list[Card]:
    """Every card, in table order."""
    return [*error_cards(), *stop_cards(), *mode_cards()]


def listing(cards: Sequence[Card]) -> Iterator[str]:
    """The cards as text: question, answer and why, a blank line between cards."""
    for number, card in enumerate(cards, 1):
        yield f"{number}. [{card.topic}] {card.question}"
        yield f"   answer: {card.answer}"
        yield f"   why: {card.why}"
        yield ""


@dataclass
class Score:
    """A quiz's tally.

    Attributes:
        right: cards answered right.
        asked: cards answered (a quiz ended early by the end of its input asks fewer than it drew).
        drawn: cards drawn for the quiz.
    """

    right: int
    asked: int
    drawn: int

    def line(self) -> str:
        early = f" (input ended after {self.asked} of {self.drawn})" if self.asked < self.drawn else ""
        return f"score: {self.right}/{self.asked}{early}"


def quiz(cards: Sequence[Card], count: int, seed: int | None, answers: TextIO, say: Callable[[str], None]) -> Score:
    """Ask `count` cards drawn at random (`seed`: the same draw and choice order every time), reading one answer
    per line from `answers` (a choice's number or its text); an answer that is neither is asked again. Ends early,
    and scores what was answered, at the end of the input."""
    rng = random.Random(seed)
    drawn = rng.sample(list(cards), min(count, len(cards)))
    score = Score(0, 0, len(drawn))
    for number, card in enumerate(drawn, 1):
        choices = rng.sample(card.choices, len(card.choices))
        say(f"card {number}/{len(drawn)} [{card.topic}] {card.question}")
        for index, choice in enumerate(choices, 1):
            say(f"  {index}. {choice}")
        picked = _answer(choices, answers, say)
        if picked is None:
            break
        score.asked += 1
        if picked == card.answer:
            score.right += 1
            say(f"right: {card.why}")
        else:
            say(f"wrong: the answer is {card.answer!r}. {card.why}")
    return score


def _answer(choices: Sequence[str], answers: TextIO, say: Callable[[str], None]) -> str | None:
    """The choice a line of input names; None at the end of the input."""
    while True:
        say(f"answer (1-{len(choices)}):")
        line = answers.readline()
        if not line:
            return None
        text = line.strip()
        if text.isdigit() and 1 <= int(text) <= len(choices):
            return choices[int(text) - 1]
        named = [choice for choice in choices if choice.lower() == text.lower()]
        if named:
            return named[0]
        say(f"{text!r} is not one of the choices: give its number, 1 to {len(choices)}")
