"""Many requests, a few at a time, within a budget: the one loop behind `AsyncClient.map`, `Client.map` and
`keel run`.

`completions` takes the requests in order. Before it sends one, the budget (if any) reserves its worst case; a
request the budget refuses waits for the calls in flight to settle (their real cost is nearly always below the
worst case), and when none is left in flight and it still does not fit, the loop ends with `BudgetExceeded`. At
most `concurrency` calls are in flight; any pacing (a rate limiter) happens inside each call. Each result comes
out as its call ends; `in_order` puts them back in input order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._budget import Budget, Hold
from .._call import Reply
from .._exceptions import CallFailed
from .._retrying import RetryPolicy

if TYPE_CHECKING:
    from .._client import AsyncClient, Client

T = TypeVar("T")
Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """What became of one request: a reply or a failed call.

    Attributes:
        index: the request's position among the requests (0-based).
        request: the request as it was given (for `map`, its params).
        reply: the `Reply` when the call succeeded, else None.
        error: the `CallFailed` when the call failed (every retry the policy allows spent, or an error that must not
            be retried), else None.
    """

    index: int
    request: T
    reply: Reply | None = None
    error: CallFailed | None = None


async def completions(
    requests: Iterable[T],
    send: Callable[[T], Awaitable[Reply]],
    params: Callable[[T], Params | str],
    *,
    concurrency: int,
    budget: Budget | None,
) -> AsyncGenerator[Result[T]]:
    """`send` each request, at most `concurrency` at a time, each only when `budget` (if any) holds its worst case
    (`params` gives the Messages params, or their JSON, to estimate it from); each result as its call ends.

    A call that fails with `CallFailed` is a result; any other exception stops the loop (the calls in flight are
    cancelled) and propagates. `BudgetExceeded` is raised once the calls in flight have ended, when the next
    request could pass the budget.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency: at least 1 request at a time, got {concurrency}")
    source = enumerate(requests)
    running: set[asyncio.Task[Result[T]]] = set()
    waiting: tuple[int, T] | None = None  # the next request, taken from the source but not sent yet
    try:
        while True:
            while len(running) < concurrency:
                waiting = waiting or next(source, None)
                if waiting is None:
                    break
                hold = None if budget is None else budget.reserve_for(params(waiting[1]))
                if budget is not None and hold is None:
                    break  # it waits for the calls in flight to settle
                running.add(asyncio.create_task(_one(send, *waiting, budget, hold)))
                waiting = None
            if not running:
                if waiting is not None and budget is not None:
                    raise budget.exceeded(budget.worst_case_for(params(waiting[1])))
                return
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for result in sorted((task.result() for task in done), key=_index):
                yield result
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)


def _index(result: Result[Any]) -> int:
    return result.index


async def _one(
    send: Callable[[T], Awaitable[Reply]], index: int, request: T, budget: Budget | None, hold: Hold | None
) -> Result[T]:
    """One call, its hold settled at the real cost: the usage of a reply (or of what a failed stream produced),
    and the whole worst case when the outcome is unknown (cancelled or broken off)."""
    try:
        reply = await send(request)
    except CallFailed as failed:
        if budget is not None and hold is not None:
            budget.settle(hold, failed.record.usage)
        return Result(index, request, error=failed)
    except BaseException:
        if budget is not None and hold is not None:
            budget.settle_usd(hold, hold.usd)
        raise
    if budget is not None and hold is not None:
        budget.settle(hold, reply.message.usage)
    return Result(index, request, reply=reply)


async def in_order(results: AsyncGenerator[Result[T]]) -> AsyncGenerator[Result[T]]:
    """The results again, in input order: each is held until those before it have come.

    Requests are sent in input order, so when the loop stops (its budget) every request sent has come back and
    none is left held.
    """
    held: dict[int, Result[T]] = {}
    next_index = 0
    async with aclosing(results) as source:
        async for result in source:
            held[result.index] = result
            while next_index in held:
                yield held.pop(next_index)
                next_index += 1


def _budget(budget: Budget | float | Decimal | None, client: AsyncClient | Client) -> Budget | None:
    if budget is None or isinstance(budget, Budget):
        return budget
    return Budget(budget, client.settings.prices)


def map_async(
    client: AsyncClient,
    requests: Iterable[Params],
    *,
    concurrency: int,
    policy: str | RetryPolicy,
    budget: Budget | float | None,
) -> AsyncIterator[Result[Params]]:
    """`AsyncClient.map`: each request as `client.messages.create(policy=policy, **params)`; results in input order."""

    def send(params: Params) -> Awaitable[Reply]:
        return client.messages.create(policy=policy, **params)

    return in_order(completions(requests, send, _same, concurrency=concurrency, budget=_budget(budget, client)))


def map_sync(
    client: Client,
    requests: Iterable[Params],
    *,
    concurrency: int,
    policy: str | RetryPolicy,
    budget: Budget | float | None,
) -> Iterator[Result[Params]]:
    """`Client.map`: the same loop on a private event loop, each call on one of `concurrency` threads."""

    def send(params: Params) -> Awaitable[Reply]:
        return asyncio.to_thread(partial(client.messages.create, policy=policy, **params))

    results = in_order(completions(requests, send, _same, concurrency=concurrency, budget=_budget(budget, client)))
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(concurrency, thread_name_prefix="keel-map"))

    async def following() -> Result[Params]:
        return await anext(results)

    try:
        while True:
            try:
                yield loop.run_until_complete(following())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(results.aclose())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _same(params: Params) -> Params:
    return params
